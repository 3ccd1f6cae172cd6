"""Pass rates of two candidate pools on the same questions, paired by question (record script of
docs/prm_quality.md, "The 1.5B policy on code and on GSM8K-easy").

    python compare.py A_DIR B_DIR [--first K]      # pools written by `bench corpus --no-label`
    python compare.py --shipped B_DIR              # B against the 0.5B responses of the shipped corpus

Prints per pool: responses, pass rate, mixed / all-wrong / all-right questions, truncated share, median
tokens; then the paired difference B - A of the per-question pass rate with its bootstrap interval.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from adaptivestep.checkers import check_samples
from adaptivestep.jsonl import read_records
from adaptivestep.prm.quality import paired_bootstrap
from adaptivestep.prm.shipped import corpus_dir
from adaptivestep.records import Problem, Sample


def pool(samples: list[Sample], problems: dict[str, Problem], ids: list[str]) -> dict[str, list[bool]]:
    out: dict[str, list[bool]] = {i: [] for i in ids}
    keep = [s for s in samples if s.problem_id in out]
    for s, ok in zip(keep, check_samples(problems, keep)):
        out[s.problem_id].append(ok)
    return out


def figures(name: str, by_q: dict[str, list[bool]], samples: list[Sample]) -> dict[str, object]:
    flat = [c for v in by_q.values() for c in v]
    keep = [s for s in samples if s.problem_id in by_q]
    return {"pool": name, "questions": len(by_q), "responses": len(flat),
            "pass_rate": float(np.mean(flat)) if flat else float("nan"),
            "mixed": sum(any(v) and not all(v) for v in by_q.values()),
            "all_wrong": sum(not any(v) for v in by_q.values()),
            "all_right": sum(bool(v) and all(v) for v in by_q.values()),
            "truncated_share": float(np.mean([s.finish_reason == "length" for s in keep])) if keep else 0.0,
            "median_tokens": float(np.median([len(s.token_ids) for s in keep])) if keep else 0.0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("a", nargs="?")
    ap.add_argument("b")
    ap.add_argument("--shipped", action="store_true", help="A = the shipped corpus' 0.5B samples")
    ap.add_argument("--first", type=int, default=0, help="only the first K questions of B's order")
    a = ap.parse_args(argv)
    b_dir = Path(a.b)
    problems = {p.id: p for p in read_records(b_dir / "problems.jsonl", Problem)}  # in file order
    ids = list(problems)[: a.first] if a.first else list(problems)
    b_samples = list(read_records(b_dir / "samples.jsonl", Sample, tolerate_torn_tail=True))
    if a.shipped:
        d = corpus_dir("gsm8k")
        assert d is not None
        a_samples = list(read_records(d / "samples.jsonl.gz", Sample))
        a_name = str(d)
    else:
        a_samples = list(read_records(Path(a.a) / "samples.jsonl", Sample, tolerate_torn_tail=True))
        a_name = a.a
    pa, pb = pool(a_samples, problems, ids), pool(b_samples, problems, ids)
    both = [i for i in ids if pa[i] and pb[i]]  # questions both pools have responses of
    out = {"A": figures(a_name, {i: pa[i] for i in both}, a_samples),
           "B": figures(str(b_dir), {i: pb[i] for i in both}, b_samples)}
    d, lo, hi = paired_bootstrap([float(np.mean(pb[i])) for i in both], [float(np.mean(pa[i])) for i in both])
    out["B_minus_A_pass_rate"] = {"diff": d, "lo": lo, "hi": hi, "questions": len(both)}
    for k, v in out.items():
        print(f"{k}: {v}")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
