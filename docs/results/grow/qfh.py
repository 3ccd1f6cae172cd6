"""Q (fully labelled question prefix of the grown corpus), F and H (the pre-registered curve sizes).

Usage: python qfh.py CORPUS_DIR  ->  prints "Q F H"."""
import sys
from math import ceil
from pathlib import Path

from adaptivestep.bench.corpus import labelled_prefix
from adaptivestep.sample import existing_indices

out = Path(sys.argv[1])
_, prefix, _ = labelled_prefix(out)
q = len(prefix)
sampled = existing_indices(out / "samples.jsonl")
assert all(len(sampled[x]) == 4 for x in prefix), "every question has 4 responses"
f = 4 * (q - ceil(q / 5))  # the smallest fold's training side (5 folds, 4 responses a question)
print(q, f, (f // 2) // 4 * 4)
