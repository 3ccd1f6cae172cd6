#!/bin/bash
# Exhaustive labelling (no savers) of the shipped corpus' own responses, same seed, M and rollout length,
# so that the savers can be judged by the PRM they train (issue 13). Resumable: rerun this script.
cd /work/corpus/exh
exec adaptivestep label samples.jsonl split-confidence.jsonl --out labels-confidence.jsonl \
  --rollouts 4 --max-tokens 384 --seed 0 --label-type hard --quiet
