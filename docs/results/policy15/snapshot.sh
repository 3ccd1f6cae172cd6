#!/bin/bash
# Keep the code corpus' files (samples, splits, labels, work log, card) in the repository as they grow.
here=$(cd "$(dirname "$0")" && pwd)
tar czf "$here/code-1.5b-corpus.tar.gz" -C /work/runs leetcode-pool-qwen2.5-coder-1.5b
