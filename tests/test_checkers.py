"""Answer checkers on real benchmark data: gold solutions pass, wrong ones fail, bad output never crashes."""

from __future__ import annotations

import gzip
import itertools
import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from adaptivestep.checkers import CHECKERS, Checker, CodeChecker, MathChecker, Verdict, get_checker
from adaptivestep.checkers.code_check import build_program, defines, entry_name
from adaptivestep.checkers.math_check import extract_answer, last_boxed, last_number, parse_number
from adaptivestep.checkers.sandbox_runner import SandboxLimits
from adaptivestep.code_blocks import extract_code
from adaptivestep.records import Problem

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"reference data not found at {DATA}")


def _jsonl(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:  # type: ignore[operator]
        return [json.loads(line) for line in f if line.strip()]


def _math(answer: str) -> Problem:
    return Problem(id="m", question="q", kind="math", answer=answer)


@pytest.fixture(scope="module")
def math_checker() -> Any:
    checker = MathChecker(timeout_s=5.0)
    yield checker
    checker.close()


# ------------------------------------------------------------------------------------------------- registry


def test_registry_and_protocol() -> None:
    assert set(CHECKERS) == {"math", "code"}
    for kind in CHECKERS:
        checker = get_checker(kind)
        assert isinstance(checker, Checker) and checker.kind == kind
    with pytest.raises(ValueError, match="unknown checker kind 'chess'"):
        get_checker("chess")
    with pytest.raises(ValueError, match="bad option"):
        get_checker("code", max_wrkers=3)
    with pytest.raises(ValueError, match="max_workers"):
        CodeChecker(max_workers=0)


def test_verdict_is_frozen() -> None:
    v = Verdict(True, "ok", "1")
    with pytest.raises(AttributeError):
        v.correct = False  # type: ignore[misc]


# --------------------------------------------------------------------------------------------------- math


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so \boxed{\frac{1}{\sqrt{2}}} done", r"\frac{1}{\sqrt{2}}"),
        (r"\boxed{1} then \boxed{ {2} }", "{2}"),
        (r"\boxed{7} and a truncated \boxed{\frac{3", "7"),
        (r"answer \boxed 5.", "5"),
        ("She has $1,234.50 left.", "1234.50"),
        ("He gives 3/4 of it, so -3 remain", "-3"),
        ("So the answer is 3/4.", "3/4"),
        ("pages 3-5", "5"),
        ("no answer here", None),
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


def test_extraction_helpers() -> None:
    assert last_boxed("nothing") is None and last_boxed(r"\boxed{}") is None
    assert last_number("v2 and x3") is None  # digits glued to a word are not numbers
    assert parse_number(r"\text{18 dollars}") == 18 and parse_number("2x") is None


@pytest.mark.parametrize(
    ("gold", "response"),
    [
        ("18", "She earns 18 dollars."),
        ("18", r"\boxed{18.00}"),
        ("18", "The total is $18."),
        ("18", r"\boxed{\$18}"),
        ("18", r"\boxed{18 \text{ dollars}}"),
        ("1234", "It costs 1,234 in all."),
        ("-3", r"x = \boxed{-3}"),
        ("0.75", "That is 3/4"),
        (r"\frac{1}{2}", r"\boxed{0.5}"),
        (r"\frac{1}{2}", r"\boxed{1/2}"),
        (r"\frac12", r"\boxed{\dfrac{1}{2}}"),
        (r"\frac{\sqrt2}{2}", r"\boxed{\sqrt{2}/2}"),
        (r"\sqrt{2}/2", r"\boxed{\frac{\sqrt{2}}{2}}"),
        ("3", r"\boxed{x=3}"),
        (r"[1, 2)", r"\boxed{[1,2)}"),
        (r"(-\infty, 3]", r"\boxed{(-\infty,3]}"),
        (r"x^2+2x+1", r"\boxed{(x+1)^2}"),
        (r"\{3, 5\}", r"\boxed{5, 3}"),
        (r"10\%", r"\boxed{10}"),
        ("#### 72", "So 72 clips."),
    ],
)
def test_math_equivalent(math_checker: MathChecker, gold: str, response: str) -> None:
    v = math_checker.check(_math(gold), response)
    assert v.correct, v


@pytest.mark.parametrize(
    ("gold", "response"),
    [
        ("18", "She earns 17 dollars."),
        ("18", r"\boxed{18.5}"),
        ("1234", "It costs 1,235."),
        (r"\frac{1}{2}", r"\boxed{2}"),
        (r"\frac{\sqrt2}{2}", r"\boxed{\sqrt{3}/2}"),
        ("3", r"\boxed{x=4}"),
        (r"[1, 2)", r"\boxed{(1,2]}"),
        (r"x^2+2x+1", r"\boxed{(x-1)^2}"),
        ("5", r"the answer is \boxed{5"),  # truncated box and no other number
        ("2", r"\boxed{2\pi}"),
    ],
)
def test_math_not_equivalent(math_checker: MathChecker, gold: str, response: str) -> None:
    v = math_checker.check(_math(gold), response)
    assert not v.correct, v


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "   ",
        "no numbers at all",
        r"\boxed{",
        r"\boxed{\frac{}{}}",
        r"\boxed{)(][}",
        "\x00\xff" * 50,
        r"\boxed{\left(}",
        "}" * 1000 + "{" * 1000,
        r"\boxed{" + "(" * 100 + "}",
    ],
)
def test_math_garbage_is_false_not_a_crash(math_checker: MathChecker, garbage: str) -> None:
    v = math_checker.check(_math("7"), garbage)
    assert isinstance(v, Verdict) and not v.correct


def test_math_bad_problem_raises(math_checker: MathChecker) -> None:
    with pytest.raises(ValueError, match="no gold answer"):
        math_checker.check(Problem(id="nogold", question="q", kind="math"), "1")


def test_math_check_many_keeps_order(math_checker: MathChecker) -> None:
    texts = [r"\boxed{4}", "5", r"\boxed{2+2}", "nothing"]
    assert [v.correct for v in math_checker.check_many(_math("4"), texts)] == [True, False, True, False]


def test_math_timeout_from_a_thread_then_recovers() -> None:
    checker = MathChecker(timeout_s=1.0)
    try:
        slow = r"\boxed{9^{9^{9}}}"  # sympy evaluates a 370-million-digit integer: minutes
        with ThreadPoolExecutor(2) as pool:
            start = time.monotonic()
            slow_v, fast_v = pool.map(lambda t: checker.check(_math("1"), t), [slow, r"\boxed{\sqrt{4}}"])
            elapsed = time.monotonic() - start
        assert not slow_v.correct and "timeout" in slow_v.reason
        assert not fast_v.correct and "math-verify" in fast_v.reason  # sqrt(4) = 2 != 1, judged normally
        assert elapsed < 60  # not the minutes the computation would take
        starts = checker._worker.starts
        v = checker.check(_math(r"\frac{\sqrt2}{2}"), r"\boxed{\sqrt{2}/2}")  # needs a (restarted) worker
        assert v.correct, v
        assert checker._worker.starts >= 1 and starts >= 1
    finally:
        checker.close()


def test_math_worker_request_timeout_kills_and_restarts() -> None:
    checker = MathChecker(timeout_s=30.0)  # the compares may be slow on a busy machine; the sleep's deadline is 0.5 s
    try:
        checker.compare(r"\pi", r"\pi")  # starts the worker
        first = checker._worker.starts
        with pytest.raises(TimeoutError):
            checker._worker.call(("sleep", 30), 0.5)
        assert checker._worker._proc is None  # killed
        assert checker.compare(r"\pi", r"\pi").correct
        assert checker._worker.starts == first + 1
    finally:
        checker.close()


@needs_data
def test_gsm8k_gold_solutions_pass_and_shifted_ones_fail(math_checker: MathChecker) -> None:
    rows = _jsonl(DATA / "gsm8k" / "test.jsonl")
    golds = [r["answer"].rsplit("####", 1)[1].strip().replace(",", "") for r in rows]
    assert all(math_checker.check(_math(g), r["answer"]).correct for g, r in zip(golds, rows))
    wrong = [
        math_checker.check(_math(g), r["answer"]).correct
        for g, r in zip(golds, rows[1:] + rows[:1])
        if float(g) != float(r["answer"].rsplit("####", 1)[1].strip().replace(",", ""))
    ]
    assert len(wrong) > 1000 and not any(wrong)


@needs_data
def test_math500_gold_solutions_pass(math_checker: MathChecker) -> None:
    rows = random.Random(0).sample(_jsonl(DATA / "math500" / "test.jsonl"), 60)
    failed = [
        (r["unique_id"], v)
        for r in rows
        if not (v := math_checker.check(_math(r["answer"]), r["solution"])).correct
    ]
    assert failed == []
    # each solution against the next problem's answer, where the two gold answers differ
    pairs = [
        (a, b)
        for a, b in itertools.pairwise(rows)
        if not math_checker.compare(a["answer"], b["answer"]).correct
    ]
    assert len(pairs) > 50
    wrong = [
        (a["answer"], b["answer"])
        for a, b in pairs
        if math_checker.check(_math(a["answer"]), b["solution"]).correct
    ]
    assert wrong == []


# --------------------------------------------------------------------------------------------------- code


def test_extract_code_rules() -> None:
    assert extract_code("x\n```python\na = 1\n```\n```python\nb = 2\n```") == "a = 1\n"
    assert extract_code("```text\nhello\n```\n```py\nc = 3\n```") == "c = 3\n"
    assert extract_code("```\nd = 4\n```") == "d = 4\n"
    assert extract_code("```python\ne = 5\nf = 6") == "e = 5\nf = 6"  # unclosed: runs to the end
    assert extract_code("    return 1\n") == "    return 1\n"
    assert entry_name("Solution().twoSum") == "Solution" and entry_name(" f ") == "f"
    assert defines("class Solution:\n    pass", "Solution") and not defines("def g(): pass", "f")


def _humaneval() -> list[tuple[Problem, dict[str, Any]]]:
    out = []
    for r in _jsonl(DATA / "humaneval" / "HumanEval.jsonl.gz"):
        p = Problem(
            id=r["task_id"],
            question=r["prompt"],
            kind="code",
            tests=r["test"],
            entry_point=r["entry_point"],
            source="humaneval",
            meta={"canonical_solution": r["canonical_solution"]},
        )
        out.append((p, r))
    return out


def _leetcode() -> list[tuple[Problem, dict[str, Any]]]:
    out = []
    for r in _jsonl(DATA / "leetcode" / "LeetCodeDataset-v0.2.0-test.jsonl.gz"):
        p = Problem(
            id=r["task_id"],
            question=r["query"],
            kind="code",
            tests=r["test"],
            entry_point=r["entry_point"],
            source="leetcode",
            meta={"prompt": r["prompt"], "completion": r["completion"]},
        )
        out.append((p, r))
    return out


def _check_all(checker: CodeChecker, jobs: list[tuple[Problem, str]]) -> list[Verdict]:
    with ThreadPoolExecutor(checker.max_workers) as pool:
        return list(pool.map(lambda job: checker.check(*job), jobs))


@needs_data
def test_every_humaneval_canonical_solution_passes() -> None:
    checker = CodeChecker(max_workers=2)
    items = _humaneval()
    start = time.monotonic()
    verdicts = _check_all(checker, [(p, r["canonical_solution"]) for p, r in items])  # bodies, as in the data
    elapsed = time.monotonic() - start
    assert [(p.id, v.reason) for (p, _), v in zip(items, verdicts) if not v.correct] == []
    assert elapsed < 120, f"{len(items)} sandbox runs took {elapsed:.0f} s"


@needs_data
def test_humaneval_answer_forms() -> None:
    checker = CodeChecker()
    items = {p.id: (p, r) for p, r in _humaneval()}
    p, r = items["HumanEval/0"]  # needs `from typing import List` from the prompt
    signature_on = r["prompt"][r["prompt"].index("def " + p.entry_point) :]
    full = signature_on + r["canonical_solution"]
    assert checker.check(p, f"Here is the code:\n```python\n{full}```\nIt works.").correct
    p32, r32 = items["HumanEval/32"]  # find_zero uses the prompt's helper `poly`
    full32 = r32["prompt"][r32["prompt"].index("def find_zero") :] + r32["canonical_solution"]
    assert checker.check(p32, f"```python\n{full32}\n```").correct
    assert "def has_close_elements" in build_program(p, r["canonical_solution"])


@needs_data
def test_humaneval_wrong_solutions_fail() -> None:
    checker = CodeChecker(max_workers=2)
    items = random.Random(1).sample(_humaneval(), 16)
    jobs = [(p, "    return None\n") for p, _ in items[:8]]
    # a real solution of another problem
    jobs += [(p, items[(i + 1) % 8][1]["canonical_solution"]) for i, (p, _) in enumerate(items[8:])]
    verdicts = _check_all(checker, jobs)
    assert [v.correct for v in verdicts] == [False] * len(jobs), [v.reason for v in verdicts]


def _leetcode_jobs(items: list[tuple[Problem, dict[str, Any]]]) -> list[tuple[Problem, str]]:
    return [(p, f"Here is my solution.\n\n```python\n{r['completion']}\n```\n") for p, r in items]


@needs_data
def test_leetcode_canonical_solutions_pass_sample() -> None:
    checker = CodeChecker(max_workers=2)
    items = random.Random(2).sample(_leetcode(), 30)
    verdicts = _check_all(checker, _leetcode_jobs(items))
    assert [(p.id, v.reason) for (p, _), v in zip(items, verdicts) if not v.correct] == []


@needs_data
@pytest.mark.skipif(
    not __import__("os").environ.get("ADAPTIVESTEP_ALL_CANONICAL"),
    reason="all 200 LeetCode canonical solutions: set ADAPTIVESTEP_ALL_CANONICAL=1 (about 25 s on 2 cores)",
)
def test_leetcode_canonical_solutions_pass_all() -> None:
    checker = CodeChecker(max_workers=2)
    items = _leetcode()
    verdicts = _check_all(checker, _leetcode_jobs(items))
    assert [(p.id, v.reason) for (p, _), v in zip(items, verdicts) if not v.correct] == []


@needs_data
def test_leetcode_wrong_solutions_fail() -> None:
    checker = CodeChecker(max_workers=2)
    items = random.Random(3).sample(_leetcode(), 6)
    texts = []
    for p, _ in items:
        method = p.entry_point.rsplit(".", 1)[1]
        texts.append(
            f"```python\nclass Solution:\n    def {method}(self, *args, **kwargs):\n        return None\n```"
        )
    verdicts = _check_all(checker, [(p, t) for (p, _), t in zip(items, texts)])
    assert not any(v.correct for v in verdicts)
    assert all("AssertionError" in v.reason for v in verdicts), [v.reason for v in verdicts]


@needs_data
def test_code_check_many_order_and_hostile_answers() -> None:
    checker = CodeChecker(timeout_s=2.0, max_workers=2)
    p, r = _humaneval()[2]  # truncate_number
    good = r["canonical_solution"]
    texts = [
        good,
        "    return 0.0\n",
        "```python\nwhile True:\n    pass\n```",
        "```python\nimport os\nos.fork()\n```",
        "```python\nimport sys\nsys.exit(0)\n```",  # exiting early must not count as passing
        "",
        "this is not code at all",
        good,
    ]
    verdicts = checker.check_many(p, texts)
    assert [v.correct for v in verdicts] == [True, False, False, False, False, False, False, True]
    assert "timeout" in verdicts[2].reason and "exit" in verdicts[4].reason
    assert verdicts[5].extracted is None and verdicts[0].extracted == good


def test_code_checker_keeps_the_limits_it_is_given() -> None:
    """``limits=SandboxLimits(timeout_s=...)`` is the timeout used; an explicit ``timeout_s`` overrides it."""
    assert CodeChecker(limits=SandboxLimits(timeout_s=30)).limits.timeout_s == 30
    assert CodeChecker(limits=SandboxLimits(memory_mb=512)).limits.memory_mb == 512
    assert CodeChecker(timeout_s=4.0, limits=SandboxLimits(timeout_s=30)).limits.timeout_s == 4.0
    assert CodeChecker().limits == SandboxLimits()  # the defaults: 10 s, 1024 MiB
    tests = "def check(candidate):\n    assert candidate(2) == 4\n"
    p = Problem(id="d", question="Write double(x).", kind="code", tests=tests, entry_point="double")
    slow = "```python\nimport time\ntime.sleep(3)\ndef double(x):\n    return 2 * x\n```"
    v = CodeChecker(limits=SandboxLimits(timeout_s=1.0)).check(p, slow)
    assert not v.correct and v.reason.startswith("timeout after 1 s"), v.reason


def test_code_bad_problem_raises() -> None:
    with pytest.raises(ValueError, match="no tests"):
        CodeChecker().check(Problem(id="x", question="q", kind="code"), "print(1)")


def test_code_tests_with_and_without_the_check_call() -> None:
    checker = CodeChecker(timeout_s=5.0)
    tests = "def check(candidate):\n    assert candidate(2) == 4\n"
    for t in (tests, tests + "\ncheck(double)\n"):
        p = Problem(id="d", question="Write double(x).", kind="code", tests=t, entry_point="double")
        assert checker.check(p, "```python\ndef double(x):\n    return 2 * x\n```").correct
        assert not checker.check(p, "```python\ndef double(x):\n    return x\n```").correct


@needs_data
def test_problems_from_the_tasks_module_pass() -> None:
    tasks = pytest.importorskip("adaptivestep.tasks")
    checker = CodeChecker(max_workers=2)
    he = tasks.load_humaneval(DATA / "humaneval" / "HumanEval.jsonl.gz")[:6]
    lc = tasks.load_leetcode(DATA / "leetcode" / "LeetCodeDataset-v0.2.0-test.jsonl.gz")[:6]
    jobs = [(p, p.meta["canonical_solution"]) for p in he] + [(p, p.meta["reference_code"]) for p in he + lc]
    verdicts = _check_all(checker, jobs)
    assert [(p.id, v.reason) for (p, _), v in zip(jobs, verdicts) if not v.correct] == []


def test_vote_key_groups_equal_answers_and_equal_programs():
    from adaptivestep.checkers import vote_key

    assert vote_key("math", r"so \boxed{18.00}") == vote_key("math", "She earns $18.") == "18"
    assert vote_key("math", "no digits") is None
    a = "Here:\n```python\ndef f(x):\n    return x + 1\n```\nDone."
    b = "```python\n\ndef f(x):   \n    return x + 1\n\n```"
    assert vote_key("code", a) == vote_key("code", b) == "def f(x):\n    return x + 1"
    assert vote_key("code", a) != vote_key("code", a.replace("+ 1", "+ 2"))
    # comments, docstrings, spacing and quote style do not split a vote; a truncated program still gets a key
    c = '```python\ndef f(x):\n    """Add one."""\n    # the step\n    return (x+1)  # done\n```'
    assert vote_key("code", c) == vote_key("code", a)
    assert vote_key("code", "```python\ns = 'a'\n```") == vote_key("code", '```python\ns = "a"\n```')
    assert vote_key("code", "```python\ndef f(x:\n    return x  \n") == "def f(x:\n    return x"
    assert vote_key("code", '```python\n"""Only a docstring."""\n```') == "pass"
    assert vote_key("code", "```python\n\n```") is None
    with pytest.raises(ValueError, match="task kind"):
        vote_key("poetry", a)
