#!/bin/bash
# The pre-registered learning curve on the grown corpus (docs/prm_quality.md, "Growing the corpus past 62
# questions"). Run after the labelling was stopped at the cut-off; from /work/corpus/grow.
set -euo pipefail
cd /work/corpus/grow
read -r Q F H < <(python /work/main/docs/results/grow/qfh.py corpus)
echo "Q=$Q F=$F H=$H"
pq() { adaptivestep bench prm-quality --corpus corpus --questions "$Q" --backbones smollm2-135m default --folds 5 "$@"; }
pq --seed 0 --sizes 40 80 "$H" "$F" --unregularised --out curve-s0.json > curve-s0.log 2>&1
# as run: H alone (the same subsets and heads as with --sizes 40 80 H)
pq --seed 0 --sizes "$H" --out half-s0.json > half-s0.log 2>&1
for sc in prm:smollm2-135m prm:default; do
  adaptivestep bench prm-quality --pair curve-s0.json half-s0.json --pair-on curve --pair-scorer "$sc" > "pair-${sc/:/-}.log" 2>&1
done
# not run on 2026-12-07 (out of time):
for s in 1 2; do pq --seed "$s" --sizes 40 80 "$H" "$F" --out "curve-s$s.json" > "curve-s$s.log" 2>&1; done
