#!/bin/bash
# The savers-by-PRM comparison of docs/prm_quality.md ("The savers judged by the PRM they train").
set -euo pipefail
cd /work/corpus/savers
EXH=/work/corpus/exh BUILT=/work/corpus/gsm8k-easy
date
python prep.py
KE=$(python -c "import json;print(json.load(open('plan.json'))['k_e'])")
BUD=$(python -c "import json;print(json.load(open('plan.json'))['budget'])")
KA=$(python -c "import json;print(json.load(open('plan.json'))['k_a'])")
# replays of the savers on a copy of the exhaustive work log (nothing should decode)
for s in es esfe; do
  mkdir -p $s && cp $EXH/{problems.jsonl,samples.jsonl,split-confidence.jsonl,tau.json} $s/
  rm -f $s/labels-confidence.jsonl*
  python -c "import sqlite3,sys;s=sqlite3.connect('$EXH/labels-confidence.jsonl.worklog.sqlite');d=sqlite3.connect('$s/labels-confidence.jsonl.worklog.sqlite');s.backup(d)"
  flags="--early-stop"; [ $s = esfe ] && flags="--early-stop --first-error-search"
  adaptivestep label subset/samples.jsonl subset/split-confidence.jsonl --problems $EXH/problems.jsonl \
    --out $s/labels-confidence.jsonl --rollouts 4 --max-tokens 384 --seed 0 --label-type hard $flags --quiet
  python -c "import sqlite3;print('$s work log rows', sqlite3.connect('$s/labels-confidence.jsonl.worklog.sqlite').execute('select count(*) from rollouts').fetchone()[0], 'exhaustive', sqlite3.connect('file:$EXH/labels-confidence.jsonl.worklog.sqlite?mode=ro',uri=True).execute('select count(*) from rollouts').fetchone()[0])"
done
Q="bench prm-quality --backbones smollm2-135m logprobs --sizes 16 32 64 --cache $BUILT/features --eval rest"
# primary: equal budget
adaptivestep $Q --corpus $BUILT --label-budget $BUD --rest-after $KA --out built-budget.json > built-budget.log 2>&1
adaptivestep $Q --corpus $EXH --questions $KE --rest-after $KA --out exh-budget.json > exh-budget.log 2>&1
adaptivestep bench prm-quality --pair built-budget.json exh-budget.json > pair-budget.log 2>&1
# secondary: equal responses (the first K_e questions), scoring the questions after them
adaptivestep $Q --corpus $EXH --questions $KE --out exh.json > exh.log 2>&1
adaptivestep $Q --corpus esfe --questions $KE --out esfe.json > esfe.log 2>&1
adaptivestep $Q --corpus $BUILT --questions $KE --out built.json > built.log 2>&1
adaptivestep $Q --corpus $EXH --questions $KE --labels soft --out soft.json > soft.log 2>&1
for x in esfe built soft; do adaptivestep bench prm-quality --pair $x.json exh.json > pair-$x.log 2>&1; done
python agree.py > agree.log
# (5) early stop at equal budget: exhaustive on its prefix within early stop's cost of the K_e questions
BES=$(python -c "import json;print(int(json.loads(open('agree.log').read().splitlines()[-2])['early-stop (replayed)']['tokens']))")
adaptivestep $Q --corpus $EXH --label-budget $BES --rest-after $KE --out exh-esbudget.json > exh-esbudget.log 2>&1
adaptivestep bench prm-quality --pair exh.json exh-esbudget.json > pair-es-budget.log 2>&1
date
