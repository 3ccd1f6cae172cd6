"""Benchmark tasks as :class:`~adaptivestep.records.Problem` records, the prompts that ask for them, and
final-answer extraction.

Loaders read the data sets' own files (``../shared/data`` layout, see :data:`TASKS`); every bad line raises
:class:`~adaptivestep.jsonl.DataError` naming ``file:line``. Ids are ``"<dataset>/<split>/<key>"``, e.g.
``gsm8k/test/17`` (17 = 0-based line index), ``math500/test/precalculus/807``, ``humaneval/test/0``,
``leetcode/test/two-sum``.

Code tasks (how a candidate is judged): the program

    meta["preamble"]  +  candidate code  +  Problem.tests

is run (:func:`adaptivestep.checkers.code_check.build_program` assembles it, with the exact rules); it passes
iff it exits 0 (``tests`` defines ``check(candidate)`` and ends with the ``check(<entry_point>)`` call). The
preamble holds what the data set puts before the solution: LeetCodeDataset's imports and
``ListNode``/``TreeNode`` helpers, HumanEval's whole prompt (imports, helper functions and a docstring-only
stub that the candidate redefines).
``meta["reference_code"]`` is the data set's canonical solution in the same form as a candidate.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from .checkers.math_check import number_text, parse_number
from .jsonl import DataError, iter_json
from .records import TASK_KINDS, Problem, RecordError

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------------------
# Reading JSONL / JSONL.gz with file:line errors


def iter_json_any(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for every non-empty line of a ``.jsonl`` or ``.jsonl.gz`` file.

    Same errors as :func:`adaptivestep.jsonl.iter_json` (``DataError("file:line: ...")``) for both.
    """
    path = Path(path)
    if path.suffix != ".gz":
        yield from iter_json(path)
        return
    if not path.exists():
        raise DataError(f"{path}: no such file")
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: not a readable gzip file ({e})") from None
    for i, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{i}: malformed JSON ({e.msg} at column {e.colno})") from None
        except UnicodeDecodeError:
            raise DataError(f"{path}:{i}: not UTF-8 text") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{i}: expected a JSON object, got {type(obj).__name__}")
        yield i, obj


def _get(obj: dict[str, Any], key: str, where: str, *, typ: type | tuple[type, ...] = str) -> Any:
    """``obj[key]``, raising DataError at ``where`` (``file:line``) when missing, of the wrong type or empty."""
    if key not in obj:
        raise DataError(
            f"{where}: missing field {key!r} (fields present: {', '.join(sorted(obj)) or 'none'})"
        )
    v = obj[key]
    if not isinstance(v, typ) or isinstance(v, bool):
        names = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
        raise DataError(f"{where}: field {key!r} must be {names}, got {type(v).__name__}")
    if isinstance(v, str) and not v.strip():
        raise DataError(f"{where}: field {key!r} is empty")
    return v


def _problem(where: str, **kw: Any) -> Problem:
    p = Problem(**kw)
    try:
        p.validate()
    except RecordError as e:
        raise DataError(f"{where}: {e}") from None
    return p


def _unique(items: list[tuple[str, Problem]]) -> list[Problem]:
    """The problems of ``(where, problem)`` pairs; DataError at the second of two equal ids."""
    seen: dict[str, str] = {}
    for where, p in items:
        if p.id in seen:
            raise DataError(f"{where}: duplicate problem id {p.id!r} (first at {seen[p.id]})")
        seen[p.id] = where
    return [p for _, p in items]


# ----------------------------------------------------------------------------------------------------------
# Answers


def gsm8k_gold(answer_text: str) -> str:
    """The gold number of a GSM8K ``answer`` field: what follows ``####``, in the math checker's canonical
    form (:func:`~adaptivestep.checkers.math_check.number_text`, the one answer normaliser).

    Raises ValueError when there is no ``#### <number>``.

    >>> gsm8k_gold("She makes 9 * 2 = $<<9*2=18>>18.\\n#### 18")
    '18'
    >>> gsm8k_gold("...\\n#### 1,200")
    '1200'
    """
    if "####" not in answer_text:
        raise ValueError("answer has no '#### <number>' line")
    tail = answer_text.rsplit("####", 1)[1]
    n = parse_number(tail)
    if n is None:
        raise ValueError(f"not a number after '####': {tail.strip()!r}")
    return number_text(n)


# ----------------------------------------------------------------------------------------------------------
# Loaders (one per data set format)


def load_gsm8k(path: str | Path, split: str = "test", *, name: str = "gsm8k") -> list[Problem]:
    """GSM8K JSONL (``question``, ``answer`` ending in ``#### <n>``); gold = that number, commas stripped.

    Id ``"{name}/{split}/{i}"``, ``i`` = 0-based index of the record in the file.
    ``meta["solution"]`` keeps the worked solution.
    """
    out: list[tuple[str, Problem]] = []
    for n, (i, obj) in enumerate(iter_json_any(path)):
        where = f"{path}:{i}"
        q, a = _get(obj, "question", where), _get(obj, "answer", where)
        try:
            gold = gsm8k_gold(a)
        except ValueError as e:
            raise DataError(f"{where}: {e}") from None
        p = _problem(
            where,
            id=f"{name}/{split}/{n}",
            question=q,
            kind="math",
            answer=gold,
            source=name,
            meta={"solution": a},
        )
        out.append((where, p))
    return _unique(out)


def load_math500(path: str | Path, split: str = "test", *, name: str = "math500") -> list[Problem]:
    """MATH-500 JSONL (``problem``, ``answer``, ``unique_id``, ...); gold = ``answer`` (LaTeX).

    Id ``"{name}/{split}/{subject}/{n}"`` from ``unique_id`` ``test/<subject>/<n>.json``;
    ``meta`` keeps ``subject``, ``level``, ``solution``, ``unique_id``.
    """
    out: list[tuple[str, Problem]] = []
    for i, obj in iter_json_any(path):
        where = f"{path}:{i}"
        uid = _get(obj, "unique_id", where)
        key = uid.removesuffix(".json").removeprefix(f"{split}/")
        meta: dict[str, Any] = {"unique_id": uid}
        meta.update({k: obj[k] for k in ("subject", "level", "solution") if k in obj})
        p = _problem(
            where,
            id=f"{name}/{split}/{key}",
            question=_get(obj, "problem", where),
            kind="math",
            answer=_get(obj, "answer", where),
            source=name,
            meta=meta,
        )
        out.append((where, p))
    return _unique(out)


_CHECK_CALL = re.compile(r"^check\(", re.MULTILINE)


def with_check_call(test: str, entry_point: str) -> str:
    """``test`` followed by ``check(<entry_point>)`` unless it already calls ``check`` at top level.

    >>> with_check_call("def check(candidate):\\n    assert candidate(1) == 2\\n", "inc").splitlines()[-1]
    'check(inc)'
    """
    if _CHECK_CALL.search(test) or not re.search(r"^def check\(", test, re.MULTILINE):
        return test
    return test.rstrip("\n") + f"\n\n\ncheck({entry_point})\n"


def load_humaneval(path: str | Path, split: str = "test", *, name: str = "humaneval") -> list[Problem]:
    """HumanEval JSONL(.gz) (``task_id``, ``prompt``, ``canonical_solution``, ``test``, ``entry_point``).

    question = the prompt (signature + docstring); tests = ``test`` + ``check(entry_point)``;
    ``meta``: ``task_id``, ``canonical_solution`` (body only), ``preamble`` = ``starter_code`` = the prompt,
    ``reference_code`` = prompt + canonical solution. Id ``"{name}/{split}/{k}"`` for ``HumanEval/k``.
    """
    out: list[tuple[str, Problem]] = []
    for i, obj in iter_json_any(path):
        where = f"{path}:{i}"
        tid, prompt = _get(obj, "task_id", where), _get(obj, "prompt", where)
        ep, canon = _get(obj, "entry_point", where), _get(obj, "canonical_solution", where)
        meta = {
            "task_id": tid,
            "canonical_solution": canon,
            "preamble": prompt,
            "starter_code": prompt,
            "reference_code": prompt + canon,
        }
        p = _problem(
            where,
            id=f"{name}/{split}/{tid.rsplit('/', 1)[-1]}",
            question=prompt,
            kind="code",
            tests=with_check_call(_get(obj, "test", where), ep),
            entry_point=ep,
            source=name,
            meta=meta,
        )
        out.append((where, p))
    return _unique(out)


def load_leetcode(path: str | Path, split: str = "test", *, name: str = "leetcode") -> list[Problem]:
    """LeetCodeDataset JSONL(.gz) (``task_id``, ``query``, ``prompt``, ``completion``, ``entry_point``, ``test``).

    question = ``query`` (statement + starter code in a python block); tests = ``test`` (defines
    ``check(candidate)``) + ``check(Solution().method)``. ``meta``: ``task_id``, ``question_id``,
    ``difficulty``, ``preamble`` = ``prompt`` (imports and ListNode/TreeNode helpers), ``starter_code``,
    ``completion`` = ``reference_code`` (the canonical solution).
    """
    out: list[tuple[str, Problem]] = []
    for i, obj in iter_json_any(path):
        where = f"{path}:{i}"
        tid, ep = _get(obj, "task_id", where), _get(obj, "entry_point", where)
        completion = _get(obj, "completion", where)
        raw_meta = obj.get("meta")
        m: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
        meta = {
            "task_id": tid,
            "question_id": m.get("question_id"),
            "difficulty": m.get("difficulty"),
            "preamble": _get(obj, "prompt", where),
            "starter_code": m.get("lang_code"),
            "completion": completion,
            "reference_code": completion,
        }
        p = _problem(
            where,
            id=f"{name}/{split}/{tid}",
            question=_get(obj, "query", where),
            kind="code",
            tests=with_check_call(_get(obj, "test", where), ep),
            entry_point=ep,
            source=name,
            meta=meta,
        )
        out.append((where, p))
    return _unique(out)


def load_jsonl_tasks(
    path: str | Path,
    question_field: str,
    answer_field: str | None = None,
    id_field: str | None = None,
    kind: str = "math",
    tests_field: str | None = None,
    entry_point_field: str | None = None,
) -> list[Problem]:
    """Any JSONL(.gz) of tasks, given which field holds what.

    Id = the ``id_field`` value (str or int), else ``"{file stem}/{i}"`` (0-based record index). Math answers
    are kept as given. Code tasks need ``tests_field`` and ``entry_point_field``; tests that define
    ``check(candidate)`` without calling it get the ``check(entry_point)`` call appended. Fields not mapped
    are kept in ``meta``.
    """
    path = Path(path)
    if kind not in TASK_KINDS:
        raise DataError(f"{path}: unknown task kind {kind!r} (expected one of {', '.join(TASK_KINDS)})")
    if kind == "code" and (tests_field is None or entry_point_field is None):
        raise DataError(f"{path}: kind 'code' needs tests_field and entry_point_field")
    stem = path.name.split(".")[0]
    mapped = {f for f in (question_field, answer_field, id_field, tests_field, entry_point_field) if f}
    out: list[tuple[str, Problem]] = []
    for n, (i, obj) in enumerate(iter_json_any(path)):
        where = f"{path}:{i}"
        pid = str(_get(obj, id_field, where, typ=(str, int))) if id_field else f"{stem}/{n}"
        answer = str(_get(obj, answer_field, where, typ=(str, int, float))) if answer_field else None
        ep = _get(obj, entry_point_field, where) if entry_point_field else None
        tests = _get(obj, tests_field, where) if tests_field else None
        if tests is not None and ep is not None:
            tests = with_check_call(tests, ep)
        p = _problem(
            where,
            id=pid,
            question=_get(obj, question_field, where),
            kind=kind,
            answer=answer,
            tests=tests,
            entry_point=ep,
            source=str(path),
            meta={k: v for k, v in obj.items() if k not in mapped},
        )
        out.append((where, p))
    return _unique(out)


def load_problems(path: str | Path) -> list[Problem]:
    """A JSONL(.gz) of :class:`Problem` records (this project's own format, e.g. a saved subset)."""
    out: list[tuple[str, Problem]] = []
    for i, obj in iter_json_any(path):
        try:
            out.append((f"{path}:{i}", Problem.from_dict(obj)))
        except (RecordError, TypeError) as e:
            raise DataError(f"{path}:{i}: {e}") from None
    return _unique(out)


# ----------------------------------------------------------------------------------------------------------
# Registry


Loader = Callable[..., list[Problem]]  # (path, split, *, name) -> problems


@dataclass(frozen=True)
class TaskSource:
    """Where a named data set lives and how to read it.

    folder: sub-folder of ``data_dir`` (``data_dir/<folder>/<file>``, the ``../shared/data`` layout).
    files: split -> file name in ``folder``.
    loader: reads one file into problems.
    embedded: split -> file name in the package's ``adaptivestep/data`` (used when no data_dir is given).
    """

    folder: str
    files: Mapping[str, str]
    loader: Loader
    embedded: Mapping[str, str] = field(default_factory=dict)


TASKS: dict[str, TaskSource] = {
    "gsm8k": TaskSource(
        "gsm8k",
        {"train": "train.jsonl", "test": "test.jsonl"},
        load_gsm8k,
        embedded={"train": "gsm8k_train.jsonl", "test": "gsm8k_test.jsonl"},
    ),
    "math500": TaskSource("math500", {"test": "test.jsonl"}, load_math500),
    "humaneval": TaskSource("humaneval", {"test": "HumanEval.jsonl.gz"}, load_humaneval),
    "leetcode": TaskSource(
        "leetcode",
        {"train": "LeetCodeDataset-v0.2.0-train.jsonl.gz", "test": "LeetCodeDataset-v0.2.0-test.jsonl.gz"},
        load_leetcode,
    ),
}


def load_tasks(
    name_or_path: str,
    split: str = "test",
    data_dir: str | Path | None = None,
    limit: int | None = None,
    offset: int = 0,
    *,
    question_field: str = "question",
    answer_field: str | None = "answer",
    kind: str = "math",
) -> list[Problem]:
    """Problems ``[offset, offset + limit)`` of a named data set (see :data:`TASKS`) or of a JSONL file.

    name_or_path: a key of :data:`TASKS`, or the path of a ``.jsonl``/``.jsonl.gz`` file: a file of this
        project's Problem records (every record has ``id``, ``question`` and ``kind``: read as such, an unknown
        ``kind`` is an error naming file:line), else any JSONL read with ``question_field`` / ``answer_field`` /
        ``kind`` (see :func:`load_jsonl_tasks`).
    data_dir: folder laid out like ``../shared/data`` (``<data_dir>/<name>/<file>``; a folder holding the
        file directly also works). None: the package's embedded subset (GSM8K only: the first 200 test /
        400 train questions); other data sets then raise ValueError asking for ``--data-dir``.
    """
    if offset < 0 or (limit is not None and limit < 0):
        raise ValueError(f"offset and limit must be >= 0, got offset={offset}, limit={limit}")
    src = TASKS.get(name_or_path)
    if src is None:
        p = Path(name_or_path)
        if not p.name.endswith((".jsonl", ".jsonl.gz")):
            raise ValueError(
                f"unknown task {name_or_path!r}: expected one of {', '.join(TASKS)} or a .jsonl/.jsonl.gz "
                f"file of problems"
            )
        if is_problem_file(p):  # DataError "<path>: no such file" when absent
            problems = load_problems(p)
        else:
            problems = load_jsonl_tasks(p, question_field=question_field, answer_field=answer_field, kind=kind)
    else:
        if split not in src.files:
            raise ValueError(f"task {name_or_path!r} has no split {split!r} (has: {', '.join(src.files)})")
        if data_dir is not None:
            problems = src.loader(_data_file(Path(data_dir), src, split), split, name=name_or_path)
        elif split in src.embedded:
            problems = _load_embedded(name_or_path, src, split)
            n = len(problems)
            if limit is None or offset + limit > n:
                log.warning(
                    "%s/%s: using the embedded subset (%d problems); pass --data-dir for all",
                    name_or_path,
                    split,
                    n,
                )
        else:
            raise ValueError(
                f"task {name_or_path!r} is not embedded in the package: pass --data-dir pointing at a folder "
                f"laid out like ../shared/data (holding {src.folder}/{src.files[split]})"
            )
    end = None if limit is None else offset + limit
    return problems[offset:end]


PROBLEM_FIELDS = ("id", "question", "kind")
"""The fields that make a JSONL record one of this project's Problem records."""


def is_problem_file(path: str | Path) -> bool:
    """True when the first record of ``path`` has every :data:`PROBLEM_FIELDS` field (a Problem file, e.g.
    a run's ``problems.jsonl``); False for any other JSONL and for an empty file."""
    for _, obj in iter_json_any(path):
        return all(k in obj for k in PROBLEM_FIELDS)
    return False


@dataclass
class ProblemSet:
    """Which problems: a slice of a data set or of a JSONL file.

    task: gsm8k | math500 | humaneval | leetcode, or a JSONL file of problems (this project's Problem records,
        or any JSONL read with question_field / answer_field / kind).
    split: dataset split: test or train.
    data_dir: folder laid out like shared/data (gsm8k/, math500/, ...); None = the embedded GSM8K subset.
    limit: use at most this many problems (None = all).
    offset: skip this many problems first.
    question_field: generic JSONL: field holding the question.
    answer_field: generic JSONL: field holding the gold answer.
    kind: generic JSONL: task kind (math or code).
    max_solution_lines: keep only problems whose reference solution has at most this many lines (GSM8K's
        worked solutions: a difficulty filter on the question, applied before offset / limit); 0 = all.
    """

    task: str = "gsm8k"
    split: str = "test"
    data_dir: str | None = None
    limit: int | None = None
    offset: int = 0
    question_field: str = "question"
    answer_field: str = "answer"
    kind: str = "math"
    max_solution_lines: int = 0

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit <= 0:
            raise ValueError(f"--limit must be > 0, got {self.limit}")
        if self.offset < 0:
            raise ValueError(f"--offset must be >= 0, got {self.offset}")


def load_problem_set(ps: ProblemSet) -> list[Problem]:
    """The problems a :class:`ProblemSet` names (every verb and the main job read problems through this)."""
    if not ps.max_solution_lines:
        return load_tasks(ps.task, split=ps.split, data_dir=ps.data_dir, limit=ps.limit, offset=ps.offset,
                          question_field=ps.question_field, answer_field=ps.answer_field, kind=ps.kind)
    every = load_tasks(ps.task, split=ps.split, data_dir=ps.data_dir, question_field=ps.question_field,
                       answer_field=ps.answer_field, kind=ps.kind)
    kept = [p for p in every if solution_lines(p) <= ps.max_solution_lines]
    return kept[ps.offset: None if ps.limit is None else ps.offset + ps.limit]


def solution_lines(problem: Problem) -> int:
    """Lines of a problem's worked reference solution (``meta["solution"]``, before GSM8K's ``####`` answer
    line; 0 when there is none): how many steps the data set's own author needed.

    >>> solution_lines(Problem(id="a", question="q", kind="math", meta={"solution": "x = 1\\ny = 2\\n#### 2"}))
    2
    """
    sol = str(problem.meta.get("solution") or "")
    return len([ln for ln in sol.split("####")[0].strip().splitlines() if ln.strip()])


def _data_file(data_dir: Path, src: TaskSource, split: str) -> Path:
    fname = src.files[split]
    for cand in (data_dir / src.folder / fname, data_dir / fname):
        if cand.exists():
            return cand
    raise DataError(f"{data_dir / src.folder / fname}: no such file (--data-dir {data_dir})")


def _load_embedded(name: str, src: TaskSource, split: str) -> list[Problem]:
    ref = resources.files("adaptivestep") / "data" / src.embedded[split]
    with resources.as_file(ref) as path:
        problems = src.loader(path, split, name=name)
    for p in problems:
        p.meta["embedded_subset"] = True
    return problems


# ----------------------------------------------------------------------------------------------------------
# Prompts


DEFAULT_SYSTEM = "You are a helpful assistant."
"""System turn used unless told otherwise: explicit, so the prompt does not depend on a chat template's default."""

MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
CODE_INSTRUCTION = (
    "Write a complete, self-contained Python solution, including the function signature (and class, if any) "
    "and every import it needs, in a single ```python code block."
)


class _ChatTemplate(Protocol):
    def chat_prompt(self, user: str, system: str | None = None) -> str: ...


def build_user_message(problem: Problem) -> str:
    """The user turn asking for ``problem``.

    math: the question + "reason step by step, final answer in \\boxed{}".
    code: the question (the starter code, in a python block, when the question does not already hold it)
    + "one complete solution in a single ```python block". A question that *is* code (HumanEval) is shown
    as a python block to complete.
    """
    if problem.kind == "math":
        return f"{problem.question.strip()}\n\n{MATH_INSTRUCTION}"
    if problem.kind == "code":
        q = problem.question.strip("\n")
        starter = (problem.meta.get("starter_code") or "").strip("\n")
        if starter and q.strip() == starter.strip():
            body = f"Complete the following Python code:\n```python\n{q}\n```"
        elif starter and starter.strip() not in q:
            body = f"{q.strip()}\n\nStarter code:\n```python\n{starter}\n```"
        else:
            body = q.strip()
        return f"{body}\n\n{CODE_INSTRUCTION}"
    raise ValueError(f"problem {problem.id!r}: unknown task kind {problem.kind!r}")


def render_prompt(problem: Problem, backend: _ChatTemplate, system: str | None = DEFAULT_SYSTEM) -> str:
    """The full prompt text: ``backend.chat_prompt(build_user_message(problem), system=system)``.

    ``backend`` is any :class:`~adaptivestep.backends.base.Backend` (only ``chat_prompt`` is used).
    """
    return backend.chat_prompt(build_user_message(problem), system=system)


__all__ = [
    "CODE_INSTRUCTION",
    "DEFAULT_SYSTEM",
    "MATH_INSTRUCTION",
    "TASKS",
    "TaskSource",
    "build_user_message",
    "gsm8k_gold",
    "iter_json_any",
    "load_gsm8k",
    "load_humaneval",
    "load_jsonl_tasks",
    "load_leetcode",
    "load_math500",
    "load_problems",
    "load_tasks",
    "render_prompt",
    "with_check_call",
]
