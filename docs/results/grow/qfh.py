"""Q (fully labelled question prefix of the grown corpus), F and H (the pre-registered curve sizes).

Usage: python qfh.py CORPUS_DIR  ->  prints "Q F H"."""
import sys
from math import ceil
from pathlib import Path

from adaptivestep.bench.corpus import complete_prefix
from adaptivestep.jsonl import read_records
from adaptivestep.records import LabeledRecord, Problem
from adaptivestep.sample import existing_indices

out = Path(sys.argv[1])
order = [p.id for p in read_records(out / "problems.jsonl", Problem)]
done: dict[str, set[int]] = {}
for r in read_records(out / "labels-confidence.jsonl", LabeledRecord, tolerate_torn_tail=True):
    done.setdefault(r.problem_id, set()).add(r.sample_index)
sampled = existing_indices(out / "samples.jsonl")
q = len(complete_prefix(order, sampled, done))
assert all(len(sampled[x]) == 4 for x in order[:q]), "every question has 4 responses"
f = 4 * (q - ceil(q / 5))  # the smallest fold's training side (5 folds, 4 responses a question)
print(q, f, (f // 2) // 4 * 4)
