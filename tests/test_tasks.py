"""Task loaders, prompts and final-answer extraction (real data from ../shared/data, no model)."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest

from adaptivestep import tasks
from adaptivestep.checkers.code_check import CodeChecker, build_program, build_tests
from adaptivestep.checkers.math_check import answer_key, last_boxed
from adaptivestep.jsonl import DataError
from adaptivestep.records import Problem
from adaptivestep.tasks import (
    TASKS,
    build_user_message,
    gsm8k_gold,
    load_jsonl_tasks,
    load_problems,
    load_tasks,
    render_prompt,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"{DATA} not present")

COUNTS = [
    ("gsm8k", "train", 7473),
    ("gsm8k", "test", 1319),
    ("math500", "test", 500),
    ("humaneval", "test", 164),
    ("leetcode", "train", 1890),
    ("leetcode", "test", 200),
]


def _write(path: Path, lines: list[str], *, gz: bool = False) -> Path:
    text = "\n".join(lines) + "\n"
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------- real data


@needs_data
@pytest.mark.parametrize(("name", "split", "n"), COUNTS)
def test_real_loaders(name: str, split: str, n: int) -> None:
    ps = load_tasks(name, split, data_dir=DATA)
    assert len(ps) == n
    assert len({p.id for p in ps}) == n
    assert all(p.id.startswith(f"{name}/{split}/") and p.source == name for p in ps)
    assert all(p.question.strip() for p in ps)
    for k, p in enumerate(ps):
        if k % 10 == 0:
            Problem.from_dict(p.to_dict())  # survives the data contract round trip
        if p.kind == "math":
            assert p.answer and p.answer.strip()
        else:
            assert p.kind == "code" and p.entry_point and p.tests
            assert "def check(" in p.tests
            assert p.tests.rstrip().endswith(f"check({p.entry_point})")
            assert p.meta["reference_code"].strip() and p.meta["preamble"].strip()
            if k % 10 == 0:  # every canonical solution runs green: see the report / checker tests
                compile(build_program(p, p.meta["reference_code"]) + build_tests(p), p.id, "exec")


@needs_data
def test_gsm8k_gold_matches_source_and_is_a_number() -> None:
    raw = [json.loads(line) for line in (DATA / "gsm8k" / "test.jsonl").read_text().splitlines()]
    ps = load_tasks("gsm8k", "test", data_dir=DATA)
    for i in (0, 17, len(raw) - 1):
        assert ps[i].id == f"gsm8k/test/{i}"
        assert ps[i].question == raw[i]["question"]
        assert ps[i].answer == raw[i]["answer"].split("####")[-1].strip().replace(",", "")
    assert all(re.fullmatch(r"-?\d+(\.\d+)?", p.answer or "") for p in ps)
    # the gold is what extraction finds in the worked solution
    assert sum(answer_key(p.meta["solution"]) == p.answer for p in ps) == len(ps)


@needs_data
def test_math500_fields() -> None:
    ps = load_tasks("math500", data_dir=DATA)
    p = next(p for p in ps if p.id == "math500/test/precalculus/807")
    assert p.answer == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert p.meta["subject"] == "Precalculus" and p.meta["level"] == 2
    assert {p.meta["subject"] for p in ps} >= {"Algebra", "Geometry", "Number Theory"}
    # the gold is the last box of the reference solution for nearly all problems
    same = sum(last_boxed(p.meta["solution"]) == p.answer for p in ps)
    assert same > 0.9 * len(ps)


@needs_data
def test_humaneval_and_leetcode_fields() -> None:
    he = load_tasks("humaneval", data_dir=DATA)
    assert he[0].id == "humaneval/test/0" and he[0].entry_point == "has_close_elements"
    assert he[0].question.startswith("from typing import List")
    assert "canonical_solution" in he[0].meta
    lc = load_tasks("leetcode", "test", data_dir=DATA)
    assert all(p.entry_point.startswith("Solution().") for p in lc)
    assert all(p.meta["starter_code"] in p.question for p in lc)
    assert all("from typing import" in p.meta["preamble"] for p in lc)


@needs_data
@pytest.mark.parametrize("name", ["humaneval", "leetcode"])
def test_canonical_solutions_pass_and_wrong_ones_fail(tmp_path: Path, name: str) -> None:
    """A few canonical solutions pass the run-time checker as loaded; a broken solution fails."""
    ps = load_tasks(name, data_dir=DATA, limit=3)
    checker = CodeChecker(max_workers=1)
    for p in ps:
        v = checker.check(p, p.meta["reference_code"])
        assert v.correct, (p.id, v.reason)
    p = ps[0]
    broken = re.sub(r"return [^\n]*", "return None", p.meta["reference_code"])
    assert not checker.check(p, broken).correct


@needs_data
def test_limit_offset_and_data_dir_forms() -> None:
    all_ = load_tasks("math500", data_dir=DATA)
    part = load_tasks("math500", data_dir=DATA, offset=10, limit=5)
    assert [p.id for p in part] == [p.id for p in all_[10:15]]
    # data_dir may also be the data set's own folder
    direct = load_tasks("math500", data_dir=DATA / "math500", limit=2)
    assert [p.id for p in direct] == [p.id for p in all_[:2]]


# ---------------------------------------------------------------------------------------------- embedded


def test_embedded_gsm8k_subset_loads_offline() -> None:
    test = load_tasks("gsm8k")
    train = load_tasks("gsm8k", "train")
    assert len(test) == 200 and len(train) == 400
    assert test[17].id == "gsm8k/test/17"
    assert all(p.kind == "math" and p.answer and p.meta["embedded_subset"] for p in test + train)
    assert [p.id for p in load_tasks("gsm8k", limit=3, offset=5)] == [f"gsm8k/test/{i}" for i in (5, 6, 7)]


@needs_data
def test_embedded_subset_equals_the_head_of_the_full_set() -> None:
    full = load_tasks("gsm8k", data_dir=DATA, limit=200)
    emb = load_tasks("gsm8k")
    assert [(p.id, p.question, p.answer) for p in emb] == [(p.id, p.question, p.answer) for p in full]


def test_embedded_licence_present() -> None:
    from importlib import resources

    text = (resources.files("adaptivestep") / "data" / "GSM8K_LICENSE.txt").read_text()
    assert "openai/grade-school-math" in text and "MIT License" in text


def test_registry_and_argument_errors(tmp_path: Path) -> None:
    assert set(TASKS) == {"gsm8k", "math500", "humaneval", "leetcode"}
    with pytest.raises(ValueError, match="--data-dir"):
        load_tasks("math500")
    with pytest.raises(ValueError, match="unknown task 'nope'.*gsm8k"):
        load_tasks("nope")
    with pytest.raises(ValueError, match="no split 'dev'"):
        load_tasks("gsm8k", "dev")
    with pytest.raises(ValueError, match="offset"):
        load_tasks("gsm8k", offset=-1)
    with pytest.raises(DataError, match="no such file"):
        load_tasks("humaneval", data_dir=tmp_path)
    with pytest.raises(DataError, match=r"absent\.jsonl: no such file"):
        load_tasks(str(tmp_path / "absent.jsonl"))


# ---------------------------------------------------------------------------------------------- generic


def test_generic_loader_with_mapping(tmp_path: Path) -> None:
    f = _write(
        tmp_path / "mine.jsonl",
        [
            json.dumps({"uid": "a", "q": "What is 2+2?", "gold": 4, "extra": 1}),
            json.dumps({"uid": 7, "q": "What is 3+3?", "gold": "6"}),
        ],
    )
    ps = load_jsonl_tasks(f, "q", answer_field="gold", id_field="uid")
    assert [(p.id, p.question, p.answer) for p in ps] == [
        ("a", "What is 2+2?", "4"),
        ("7", "What is 3+3?", "6"),
    ]
    assert ps[0].meta == {"extra": 1} and ps[0].kind == "math"
    ps = load_jsonl_tasks(f, "q")
    assert [p.id for p in ps] == ["mine/0", "mine/1"] and ps[0].answer is None


def test_generic_code_loader_gz_adds_check_call(tmp_path: Path) -> None:
    rec = {"text": "Write inc(x).", "t": "def check(candidate):\n    assert candidate(1) == 2\n", "ep": "inc"}
    f = _write(tmp_path / "code.jsonl.gz", [json.dumps(rec)], gz=True)
    (p,) = load_jsonl_tasks(f, "text", kind="code", tests_field="t", entry_point_field="ep")
    assert p.kind == "code" and p.tests.rstrip().endswith("check(inc)")
    checker = CodeChecker(max_workers=1)
    assert checker.check(p, "def inc(x):\n    return x + 1\n").correct
    assert not checker.check(p, "def inc(x):\n    return x\n").correct
    with pytest.raises(DataError, match="tests_field"):
        load_jsonl_tasks(f, "text", kind="code")


def test_problem_jsonl_path_roundtrip(tmp_path: Path) -> None:
    ps = load_tasks("gsm8k", limit=4)
    f = _write(tmp_path / "problems.jsonl", [json.dumps(p.to_dict()) for p in ps])
    back = load_tasks(str(f), offset=1)
    assert [p.to_dict() for p in back] == [p.to_dict() for p in ps[1:]]


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("gz", [False, True])
def test_malformed_json_names_file_and_line(tmp_path: Path, gz: bool) -> None:
    good = json.dumps({"question": "q", "answer": "x\n#### 3"})
    f = _write(tmp_path / ("t.jsonl.gz" if gz else "t.jsonl"), [good, "", good, '{"question": '], gz=gz)
    with pytest.raises(DataError, match=rf"^{re.escape(str(f))}:4: malformed JSON"):
        tasks.load_gsm8k(f)


@pytest.mark.parametrize("gz", [False, True])
def test_missing_field_names_file_and_line(tmp_path: Path, gz: bool) -> None:
    f = _write(
        tmp_path / ("t.jsonl.gz" if gz else "t.jsonl"),
        [json.dumps({"question": "q", "answer": "#### 1"}), json.dumps({"question": "q2"})],
        gz=gz,
    )
    with pytest.raises(DataError, match=rf"^{re.escape(str(f))}:2: missing field 'answer'"):
        tasks.load_gsm8k(f)


def test_other_bad_inputs(tmp_path: Path) -> None:
    f = _write(tmp_path / "g.jsonl", [json.dumps({"question": "q", "answer": "no marker"})])
    with pytest.raises(DataError, match=r"g\.jsonl:1: answer has no '#### <number>'"):
        tasks.load_gsm8k(f)
    f = _write(tmp_path / "e.jsonl", [json.dumps({"question": "ok", "answer": "#### 1"}), "[1, 2]"])
    with pytest.raises(DataError, match=r"e\.jsonl:2: expected a JSON object"):
        tasks.load_gsm8k(f)
    f = _write(tmp_path / "m.jsonl", [json.dumps({"q": "  ", "a": "1"})])
    with pytest.raises(DataError, match=r"m\.jsonl:1: field 'q' is empty"):
        load_jsonl_tasks(f, "q", answer_field="a")
    f = _write(tmp_path / "d.jsonl", [json.dumps({"q": "x", "id": 1}), json.dumps({"q": "y", "id": "1"})])
    with pytest.raises(DataError, match=r"d\.jsonl:2: duplicate problem id '1'.*d\.jsonl:1"):
        load_jsonl_tasks(f, "q", id_field="id")
    with pytest.raises(DataError, match=r"d\.jsonl: unknown task kind 'proof'"):
        load_jsonl_tasks(f, "q", kind="proof")
    bad_kind = {"id": "p1", "question": "q", "kind": "proof"}
    f = _write(
        tmp_path / "p.jsonl",
        [json.dumps({"id": "p0", "question": "q", "kind": "math"}), json.dumps(bad_kind)],
    )
    with pytest.raises(DataError, match=r"p\.jsonl:2: .*unknown task kind 'proof'"):
        load_problems(f)
    f = tmp_path / "x.jsonl.gz"
    f.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match=r"x\.jsonl\.gz: not a readable gzip file"):
        tasks.load_humaneval(f)
    with pytest.raises(DataError, match="no such file"):
        tasks.load_math500(tmp_path / "absent.jsonl")


# ---------------------------------------------------------------------------------------------- answers


@pytest.mark.parametrize(
    ("text", "want"),
    [
        (r"The answer is $\boxed{42}$.", "42"),
        (r"\boxed{1} first, then \boxed{\frac{a}{b+c}}", r"\frac{a}{b+c}"),
        (r"nested \boxed{\left( 3, \frac{\pi}{2} \right)} ok", r"\left( 3, \frac{\pi}{2} \right)"),
        (r"\boxed{7} and a truncated \boxed{\frac{1", "7"),
        (r"\boxed{} empty then nothing", None),
        (r"\fbox{x+1}", "x+1"),
        (r"so $\boxed 5$", "5"),
        ("no box here 12", None),
    ],
)
def test_last_boxed(text: str, want: str | None) -> None:
    assert last_boxed(text) == want


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("She makes 9 * 2 = $18 every day.", "18"),
        ("Total: 1,234 apples", "1234"),
        ("It costs $5.00.", "5"),
        ("It costs \\$5.", "5"),
        ("The change is -3 degrees", "-3"),
        ("owes -$7.50 now", "-7.5"),
        ("pages 3-5", "5"),
        ("10 - 4 = 6", "6"),
        ("ratio 0.25 so 12.50", "12.5"),
        ("1,2,3", "3"),
        ("#### 1,000,000", "1000000"),
        ("no digits at all", None),
    ],
)
def test_answer_key_of_plain_numbers(text: str, want: str | None) -> None:
    assert answer_key(text) == want


def test_answer_key_prefers_box_and_votes_equal_numbers_together() -> None:
    assert answer_key(r"step 1: 3 + 4 = 7, so \boxed{7}. Check: 99") == "7"
    assert answer_key("3 + 4 = 7 apples.") == "7"
    assert answer_key("I do not know.") is None
    assert answer_key(r"\boxed{\$18.00}") == answer_key("so 18 dollars") == answer_key(r"\boxed{18}") == "18"
    assert answer_key(r"\boxed{\frac{1}{2}}") == answer_key("0.50") == "0.5"
    assert answer_key(r"\boxed{x  +  1}") == answer_key(r"\boxed{X+1.}") == "x+1"
    assert answer_key(r"so 12, then \boxed{\frac{1") == "12"  # a truncated box is no answer


def test_gold_and_normalize() -> None:
    assert gsm8k_gold("work\n#### -1,250") == "-1250"
    assert gsm8k_gold("work\n#### 0.50") == "0.5"
    with pytest.raises(ValueError):
        gsm8k_gold("no marker 5")
    with pytest.raises(ValueError, match="not a number"):
        gsm8k_gold("work\n#### abc")


# ---------------------------------------------------------------------------------------------- prompts


class FakeBackend:
    name = "fake"
    model_id = "fake"

    def chat_prompt(self, user: str, system: str | None = None) -> str:
        return f"<sys>{system}</sys><user>{user}</user><assistant>"


def test_math_prompt() -> None:
    p = load_tasks("gsm8k", limit=1)[0]
    msg = build_user_message(p)
    assert msg.startswith(p.question) and "\\boxed{}" in msg and "step by step" in msg
    full = render_prompt(p, FakeBackend())
    assert full == f"<sys>{tasks.DEFAULT_SYSTEM}</sys><user>{msg}</user><assistant>"
    assert render_prompt(p, FakeBackend(), system=None).startswith("<sys>None</sys>")


def test_code_prompts() -> None:
    he = Problem(
        id="h",
        question="def f(x):\n    '''double x'''\n",
        kind="code",
        tests="t",
        entry_point="f",
        meta={"starter_code": "def f(x):\n    '''double x'''\n"},
    )
    msg = build_user_message(he)
    assert "```python\ndef f(x):" in msg and msg.count("```python") == 2  # the code block + the instruction
    lc = Problem(
        id="l",
        question="Add two numbers.",
        kind="code",
        tests="t",
        entry_point="Solution().add",
        meta={"starter_code": "class Solution:\n    def add(self, a, b):"},
    )
    msg = build_user_message(lc)
    assert (
        msg.startswith("Add two numbers.") and "```python\nclass Solution:\n    def add(self, a, b):" in msg
    )
    assert "single ```python code block" in msg
    plain = Problem(id="c", question="Write a function f.", kind="code", tests="t", entry_point="f")
    assert "```python" in build_user_message(plain)


@needs_data
def test_real_code_prompts_hold_the_signature() -> None:
    for name in ("humaneval", "leetcode"):
        for p in load_tasks(name, data_dir=DATA, limit=20):
            msg = build_user_message(p)
            assert f"def {p.entry_point.split('.')[-1]}(" in msg and "```python" in msg
