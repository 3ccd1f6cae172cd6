#!/bin/bash
# Label the 1.5B policy's code pool in place (docs/prm_quality.md, "The 1.5B policy on code and on GSM8K-easy":
# what follows a passing code rule). Resumable: rerun this script. If /work/runs is gone (a new machine), it is
# restored from the snapshot that snapshot.sh keeps in this folder.
set -e
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p /work/runs && cd /work/runs
if [ ! -d leetcode-pool-qwen2.5-coder-1.5b ] && [ -f "$here/code-1.5b-corpus.tar.gz" ]; then
  tar xzf "$here/code-1.5b-corpus.tar.gz"
fi
exec adaptivestep bench corpus --task leetcode --split train --data-dir /work/shared/data --questions 20 \
  --max-solution-lines 0 --max-tokens 768 --rollout-tokens 768 --model qwen2.5-coder-1.5b \
  --out-dir leetcode-pool-qwen2.5-coder-1.5b
