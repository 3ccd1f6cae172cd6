#!/bin/bash
# Grow the shipped GSM8K-easy corpus from 62 to 100 training questions (issue 13: where does the learning
# curve flatten?). Resumable: rerun this script. Started 2026-12-07 ~11:00 UTC on the AMD EPYC (AVX2) host.
cd /work/corpus
exec adaptivestep bench corpus --seed-from embedded --data-dir /work/shared/data --out-dir /work/corpus/grow/corpus --questions 100
