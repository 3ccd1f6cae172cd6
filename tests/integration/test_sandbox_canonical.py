"""Every canonical solution of HumanEval and LeetCodeDataset (train + test) passes the hardened sandbox.

No model is needed, but it is some 2,250 sandbox runs (minutes on 2 cores), so it sits in the integration tier;
the unit tier checks all of HumanEval and a LeetCode sample (tests/test_checkers.py). It runs with the OS layer
when bubblewrap works here (``auto``) and reports the failures by id and reason.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from adaptivestep import tasks
from adaptivestep.checkers.code_check import CodeChecker

pytestmark = pytest.mark.integration
DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
# Its tests expect the ladders in one order, and the reference solution's order follows set iteration, i.e.
# the string-hash seed: it passed 4 of 12 runs under random seeds before this sandbox fixed the seed, and
# fails under seed 0. A flaw of the data, not of the sandbox.
ORDER_DEPENDENT = {"leetcode/train/word-ladder-ii"}


@pytest.mark.skipif(not (DATA / "leetcode").is_dir(), reason="no ../shared/data")
def test_every_canonical_solution_passes() -> None:
    problems = tasks.load_humaneval(DATA / "humaneval" / "HumanEval.jsonl.gz")
    for split in ("train", "test"):
        problems += tasks.load_leetcode(DATA / "leetcode" / f"LeetCodeDataset-v0.2.0-{split}.jsonl.gz", split)
    checker = CodeChecker(timeout_s=20.0, max_workers=2)
    start = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        verdicts = list(pool.map(
            lambda p: checker.check(p, f"```python\n{p.meta['reference_code']}\n```"), problems))
    elapsed = time.monotonic() - start
    failed = [(p.id, v.reason) for p, v in zip(problems, verdicts) if not v.correct]
    print(f"{len(problems)} canonical solutions, {len(failed)} failed, {elapsed:.0f} s, "
          f"layers: {verdicts[0].reason.split('[sandbox: ')[-1].rstrip(']')}")
    for pid, reason in failed:
        print(f"  FAILED {pid}: {reason}")
    assert [(pid, reason) for pid, reason in failed if pid not in ORDER_DEPENDENT] == []
