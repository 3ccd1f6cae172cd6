#!/bin/bash
# The follow-up curve on the grown corpus at (up to) 100 questions (docs/prm_quality.md, "Resumed toward 100
# questions"). Run after the labelling finished or was stopped at 16:00 UTC; from /work/corpus/grow.
set -euo pipefail
cd /work/corpus/grow
read -r Q F H < <(python /work/main/docs/results/grow/qfh.py corpus)
echo "Q=$Q F=$F H=$H"
mkdir -p q100
pq() { adaptivestep bench prm-quality --corpus corpus --questions "$Q" --backbones smollm2-135m default --folds 5 "$@"; }
for s in 0 1 2; do
  extra=(); [ "$s" = 0 ] && extra=(--unregularised)
  # (a run whose JSON exists is not repeated: the first launch stopped at a typo after seed 0's two runs)
  [ -s "q100/curve-s$s.json" ] || pq --seed "$s" --sizes 40 80 "$H" "$F" "${extra[@]}" --out "q100/curve-s$s.json" > "q100/curve-s$s.log" 2>&1
  [ -s "q100/half-s$s.json" ] || pq --seed "$s" --sizes "$H" --out "q100/half-s$s.json" > "q100/half-s$s.log" 2>&1
  for sc in prm:smollm2-135m prm:default; do
    adaptivestep bench prm-quality --pair "q100/curve-s$s.json" "q100/half-s$s.json" --pair-on curve --pair-scorer "$sc" \
      > "q100/pair-s$s-${sc/:/-}.log" 2>&1
  done
done
