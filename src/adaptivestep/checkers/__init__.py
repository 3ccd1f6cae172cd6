"""Answer checkers: is a response's final answer correct? One checker per task kind, chosen from a registry.

Monte-Carlo labelling (method.md section 3) runs a checker on every rollout: ``math`` compares the final
answer with the gold answer (:mod:`.math_check`), ``code`` runs the program against the task's tests in a
sandbox (:mod:`.code_check`, :mod:`.sandbox_runner`). A checker never raises because of what a response
contains: an unparseable answer or a crashing program is ``Verdict(False, reason)``. It does raise
``ValueError`` for bad task data (a math problem without ``answer``, a code problem without ``tests``).

>>> checker = get_checker("math")
>>> checker.check(Problem(id="p", question="1+1?", kind="math", answer="2"), "So \\\\boxed{2}.").correct
True
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ..records import Problem


@dataclass(frozen=True)
class Verdict:
    """Outcome of one check.

    ``correct``: the response solves the problem. ``reason``: a short human-readable why (``"passed"``,
    ``"numeric: 18 == 18"``, ``"timeout after 10 s"``, ...). ``extracted``: what was judged (the final-answer
    string for math, the program for code), ``None`` when nothing could be extracted.
    """

    correct: bool
    reason: str
    extracted: str | None = None


@runtime_checkable
class Checker(Protocol):
    """Judges responses to one kind of task (``kind`` is one of ``records.TASK_KINDS``)."""

    kind: str

    def check(self, problem: Problem, response_text: str) -> Verdict:
        """Verdict for one response text."""
        ...

    def check_many(self, problem: Problem, texts: Sequence[str]) -> list[Verdict]:
        """Verdicts for many responses to the same problem, in input order."""
        ...


# Imported after Verdict / Checker exist: the checker modules import them from this package.
from ..code_blocks import extract_code, program_key
from .code_check import CodeChecker
from .math_check import MathChecker, answer_key

CHECKERS: dict[str, type[Any]] = {"math": MathChecker, "code": CodeChecker}


def get_checker(kind: str, **opts: Any) -> Checker:
    """A checker for task ``kind`` built with options ``opts`` (constructor keywords of its class).

    Math options: ``timeout_s`` (per comparison, default 5), ``rel_tol`` (1e-6), ``memory_mb`` (verifier
    process). Code options: ``timeout_s`` (per run, default 10), ``memory_mb`` (1024), ``max_workers`` (2),
    ``limits`` (a :class:`~.sandbox_runner.SandboxLimits` for the rest).
    """
    try:
        cls = CHECKERS[kind]
    except KeyError:
        raise ValueError(f"unknown checker kind {kind!r}; expected one of {sorted(CHECKERS)}") from None
    try:
        return cls(**opts)  # type: ignore[no-any-return]
    except TypeError as e:
        raise ValueError(f"checker {kind!r}: bad option(s) {sorted(opts)}: {e}") from None


def check_samples(problems: Mapping[str, Problem], samples: Iterable[Any]) -> list[bool]:
    """Whether each sample (anything with ``problem_id`` and ``text``) answers its problem, in input order, with
    one default checker per task kind.

    >>> from types import SimpleNamespace as S
    >>> ps = {"a": Problem(id="a", question="1+1?", kind="math", answer="2")}
    >>> check_samples(ps, [S(problem_id="a", text="It is 2."), S(problem_id="a", text="It is 3.")])
    [True, False]
    """
    checkers: dict[str, Checker] = {}
    out = []
    for s in samples:
        p = problems[s.problem_id]
        if p.kind not in checkers:
            checkers[p.kind] = get_checker(p.kind)
        out.append(bool(checkers[p.kind].check(p, s.text).correct))
    return out


def vote_key(kind: str, text: str) -> str | None:
    """What a majority vote counts for a response of task ``kind``; ``None`` when it gives no answer.

    math: the final answer as the math checker extracts it, in canonical form
    (:func:`.math_check.answer_key`).
    code: the extracted program (:func:`adaptivestep.code_blocks.extract_code`) in canonical form
    (:func:`adaptivestep.code_blocks.program_key`), so programs that differ only in layout, comments or
    docstrings vote together; names, literals and block structure are kept (they are the program).
    Best-of-N compares these keys as they are (:mod:`adaptivestep.search.bon`).

    >>> vote_key("math", "so the total is $1,200.00"), vote_key("code", "```python\\nx = 1   \\n\\n```")
    ('1200', 'x = 1')
    """
    if kind == "math":
        return answer_key(text)
    if kind == "code":
        return program_key(extract_code(text)) or None
    raise ValueError(f"unknown task kind {kind!r}; expected one of {sorted(CHECKERS)}")


__all__ = ["CHECKERS", "Checker", "CodeChecker", "MathChecker", "Verdict", "check_samples", "get_checker", "vote_key"]
