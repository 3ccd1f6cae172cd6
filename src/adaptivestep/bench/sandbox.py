"""Code-sandbox throughput: checks per second with and without the OS layer (bubblewrap).

``adaptivestep bench sandbox [--quick] [--runs N] [--rollout-wall-s S]`` times, for each layer setting
(``bwrap`` where it works here, ``none`` = the process-level layers only) and 1 or 2 sandboxes at once:

- ``empty``: ``run_python("pass")``, the fixed cost of one sandboxed interpreter;
- ``check``: one :class:`~adaptivestep.checkers.code_check.CodeChecker` verdict on a HumanEval-style task
  (a correct answer and its hardened tests), what labelling pays per code rollout.

Figures are runs per second over the whole batch (median of 3 batches). ``checker_share_ratio`` puts the
check beside a rollout's generation time (``--rollout-wall-s``, default 4.2 s: the per-rollout wall time of
``bench label-cost`` at default size in docs/benchmarks.md): the share of a code labelling job's wall time
spent in the checker, with checks run one at a time. Human-readable lines first; the LAST line is one JSON
object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from adaptivestep.checkers import os_layer
from adaptivestep.checkers.code_check import CodeChecker
from adaptivestep.checkers.sandbox_runner import RUNNER_PATH, SandboxLimits, run_python
from adaptivestep.records import Problem

TASK = Problem(
    id="bench/add_lists",
    question='def add_lists(a, b):\n    """Element-wise sums of two equal-length lists."""\n',
    kind="code",
    entry_point="add_lists",
    tests="def check(candidate):\n"
    "    assert candidate([1, 2], [3, 4]) == [4, 6]\n"
    "    assert candidate([], []) == []\n"
    "    assert candidate([0.5], [0.25]) == [0.75]\n",
)
ANSWER = "```python\ndef add_lists(a, b):\n    return [x + y for x, y in zip(a, b)]\n```"


def _rate(job: Callable[..., bool], runs: int, workers: int, batches: int = 3) -> float:
    """Runs per second of ``job`` (which must return True), ``workers`` at once, median of ``batches``."""
    rates = []
    for _ in range(batches):
        t0 = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            oks = list(pool.map(lambda _i: job(), range(runs)))
        rates.append(runs / (time.perf_counter() - t0))
        if not all(oks):
            raise RuntimeError("bench sandbox: a run that must pass failed")
    return float(statistics.median(rates))


def run(runs: int, rollout_wall_s: float) -> dict[str, Any]:
    layers = ["bwrap", "none"] if os_layer.available(RUNNER_PATH)[0] else ["none"]
    res: dict[str, Any] = {"runs_per_batch": runs, "layers": layers, "rollout_wall_s": rollout_wall_s}
    for layer in layers:
        limits = SandboxLimits(os_layer=layer)
        checker = CodeChecker(limits=limits)
        run_python("pass", limits)  # the first run probes the layer; keep it out of the timing
        for workers in (1, 2):
            res[f"{layer}_empty_{workers}w_runs_s"] = _rate(
                lambda lim=limits: run_python("pass", lim).ok, runs, workers)
            res[f"{layer}_check_{workers}w_runs_s"] = _rate(
                lambda c=checker: c.check(TASK, ANSWER).correct, runs, workers)
    best = layers[0]
    check_s = 1.0 / res[f"{best}_check_1w_runs_s"]
    res["checker_share_ratio"] = check_s / (check_s + rollout_wall_s)
    if "bwrap" in layers:
        for kind in ("empty", "check"):
            for w in (1, 2):
                bw, none = res[f"bwrap_{kind}_{w}w_runs_s"], res[f"none_{kind}_{w}w_runs_s"]
                res[f"bwrap_vs_none_{kind}_{w}w_ratio"] = bw / none
    return res


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry: ``adaptivestep bench sandbox [--quick] [--runs N] [--rollout-wall-s S]``."""
    ap = argparse.ArgumentParser(prog="adaptivestep bench sandbox", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="12 runs per batch instead of 40")
    ap.add_argument("--runs", type=int, default=None, help="sandbox runs per timed batch")
    ap.add_argument("--rollout-wall-s", type=float, default=4.2,
                    help="seconds one rollout takes to generate, for checker_share_ratio")
    a = ap.parse_args(list(argv) if argv is not None else None)
    runs = a.runs or (12 if a.quick else 40)
    if runs < 1 or a.rollout_wall_s <= 0:
        ap.error("--runs and --rollout-wall-s must be > 0")
    res = run(runs, a.rollout_wall_s)
    have = "bwrap" if "bwrap" in res["layers"] else "none available"
    print(f"sandbox runs/s, median of 3 batches of {runs} (OS layer: {have})")
    for layer in res["layers"]:
        for kind, what in (("empty", "empty program"), ("check", "code check (answer + hardened tests)")):
            one, two = res[f"{layer}_{kind}_1w_runs_s"], res[f"{layer}_{kind}_2w_runs_s"]
            print(f"  {layer:5s} {what:38s}: 1 at a time {one:6.2f}/s   2 at a time {two:6.2f}/s")
    if "bwrap" in res["layers"]:
        print(f"  bwrap / none, code check, 2 at a time: {res['bwrap_vs_none_check_2w_ratio']:.2f}")
    print(f"  checker share of a code rollout ({a.rollout_wall_s:g} s generation + 1 check): "
          f"{100 * res['checker_share_ratio']:.1f}%")
    sys.stdout.flush()
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
