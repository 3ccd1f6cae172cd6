#!/bin/bash
# The 1.5B policy on code and GSM8K-easy (docs/prm_quality.md, "The 1.5B policy on code and on GSM8K-easy").
# Candidate pools only (train splits, no labels), one at a time; resumable: rerun this script.
set -e
cd /work/runs
for m in default qwen2.5-coder-1.5b; do
  adaptivestep bench corpus --task leetcode --split train --data-dir /work/shared/data --questions 20 \
    --max-solution-lines 0 --max-tokens 768 --no-label --model $m --out-dir leetcode-pool-$m > leetcode-pool-$m.log 2>&1
done
adaptivestep bench corpus --data-dir /work/shared/data --questions 10 --no-label --model qwen2.5-coder-1.5b \
  --out-dir gsm8k-pool-1.5b > gsm8k-pool-1.5b.log 2>&1
echo ALL_DONE
