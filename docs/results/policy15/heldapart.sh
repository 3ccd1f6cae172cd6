#!/bin/bash
# Held-apart code candidates of the 1.5B policy (docs/prm_quality.md, "The code row on held-apart questions"):
# the seed-0 order's first 24 LeetCodeDataset *test* questions, 4 responses each, sampled as the training pool
# was (T = 1, <= 768 tokens), checked by their tests, no labels; then heads trained on the whole 80-response code
# corpus score them. Resumable: rerun this script.
set -e
here=$(cd "$(dirname "$0")" && pwd)
cd /work/runs
adaptivestep bench corpus --task leetcode --split test --data-dir /work/shared/data --questions 24 \
  --max-solution-lines 0 --max-tokens 768 --no-label --model qwen2.5-coder-1.5b \
  --out-dir leetcode-test-qwen2.5-coder-1.5b > leetcode-test-qwen2.5-coder-1.5b.log 2>&1
cd "$here"
adaptivestep bench prm-quality --corpus /work/runs/leetcode-pool-qwen2.5-coder-1.5b --backbones smollm2-135m logprobs \
  --sizes 64 --folds 5 --seed 0 --cache /work/runs/features-code15 --eval /work/runs/leetcode-test-qwen2.5-coder-1.5b \
  --out heldapart15.json > heldapart15.txt 2> heldapart15.err
echo ALL_DONE
