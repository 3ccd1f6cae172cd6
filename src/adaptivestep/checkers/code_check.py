"""Code answers: run the candidate program against the task's tests in the sandbox.

Program assembly (:func:`build_program`, :func:`build_tests`), for a response and a
:class:`~adaptivestep.records.Problem` with ``tests`` (Python defining ``check(candidate)``, with or without
the ``check(<entry_point>)`` call) and ``entry_point`` (``has_close_elements``, ``Solution().twoSum``):

1. code = the first fenced block tagged ``python`` / ``python3`` / ``py``, else the first fenced block of any
   language, else the whole response; an unclosed block (truncated response) runs to the end: the one parser
   :mod:`adaptivestep.code_blocks`, which :func:`adaptivestep.split.code_region` uses too, so the checker runs
   the code the splitter tags.
2. head = ``meta["preamble"]`` (:mod:`adaptivestep.tasks`: LeetCodeDataset's imports and ``ListNode`` /
   ``TreeNode`` helpers; HumanEval's prompt), else ``meta["prompt"]`` when it is Python (the raw
   LeetCodeDataset field); then the question, when it is Python and not already in the head (a raw HumanEval
   prompt: imports, helper functions such as ``poly`` and a docstring-only stub).
3. If the code defines the entry point's top-level name (``has_close_elements``, ``Solution``), the program is
   head + blank line + code (the answer's definition comes later and replaces the stub). Otherwise the code is
   taken for the *body* that continues the prompt (HumanEval-style completion): head + code.
4. The sandbox runs the program, then the tests (which end with ``check(<entry_point>)``), their comparisons
   and ``candidate(...)`` calls hardened against exotic values (an always-equal ``__eq__`` fails). Pass = the
   harness reports that the tests ran to their end, within the limits; an early ``exit()`` or ``os._exit`` in
   the candidate is a failure. The verdict's reason names the isolation layers the run had, e.g.
   ``"passed [sandbox: bwrap+pids_cgroup+netns+guard]"`` (see :mod:`adaptivestep.checkers.sandbox_runner`
   for what each layer does and what a program can still do).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from ..code_blocks import extract_code
from ..records import Problem
from . import Verdict
from .sandbox_runner import SandboxLimits, SandboxResult, run_python

DEFAULT_MAX_WORKERS = 2  # sandboxes run at once in check_many; each is one busy CPU core at worst


def entry_name(entry_point: str) -> str:
    """The top-level name an entry-point expression needs.

    >>> entry_name("Solution().twoSum"), entry_name("has_close_elements")
    ('Solution', 'has_close_elements')
    """
    return re.split(r"[.(\s\[]", entry_point.strip(), maxsplit=1)[0]


def defines(code: str, name: str) -> bool:
    """True when ``code`` parses and binds ``name`` at top level (def, class, assignment or import).

    >>> defines("def f(x):\\n    return x", "f"), defines("    return x", "f")
    (True, False)
    """
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return True
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return True
        if isinstance(node, (ast.Import, ast.ImportFrom)) and any(
            (a.asname or a.name.split(".")[0]) == name for a in node.names
        ):
            return True
    return False


def _is_python(text: str) -> bool:
    try:
        ast.parse(text)
    except (SyntaxError, ValueError):
        return False
    return bool(text.strip())


def build_program(problem: Problem, code: str) -> str:
    """The program to test: preamble, the prompt where it is code, the candidate code (module docstring).

    >>> p = Problem(id="t", question="def f(x):\\n    '''Double.'''\\n", kind="code", entry_point="f")
    >>> build_program(p, "    return 2 * x\\n").splitlines()[-1]
    '    return 2 * x'
    """
    meta = problem.meta if isinstance(problem.meta, dict) else {}
    head = meta.get("preamble")
    if not isinstance(head, str):
        raw = meta.get("prompt")  # LeetCodeDataset's own field name for the same preamble
        head = raw if isinstance(raw, str) and _is_python(raw) else ""
    if _is_python(problem.question) and problem.question.strip() not in head:
        head = (_nl(head) if head else "") + problem.question
    if not head:
        return _nl(code)
    if defines(code, entry_name(problem.entry_point or "")):
        return _nl(head) + "\n" + _nl(code)
    return _nl(head) + _nl(code)  # a body that continues the prompt


_CHECK_CALL = re.compile(r"^check\(", re.MULTILINE)
_CHECK_DEF = re.compile(r"^def check\(", re.MULTILINE)


def build_tests(problem: Problem) -> str:
    """``problem.tests``, plus ``check(<entry_point>)`` when it defines ``check`` without calling it.

    >>> p = Problem(id="t", question="q", kind="code", entry_point="f", tests="def check(c):\\n    assert c(1)\\n")
    >>> build_tests(p).splitlines()[-1]
    'check(f)'
    """
    tests = problem.tests or ""
    if _CHECK_DEF.search(tests) and not _CHECK_CALL.search(tests):
        tests = _nl(tests) + f"\n\ncheck({problem.entry_point})\n"
    return tests


def _nl(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"


class CodeChecker:
    """Runs a response's program against ``problem.tests`` in a sandboxed process.

    ``timeout_s``: wall-clock limit per run (seconds). ``memory_mb``: address-space limit (MiB).
    ``max_workers``: sandboxes run at once by :meth:`check_many`. Other sandbox limits: ``limits``.
    ``timeout_s`` / ``memory_mb`` left at None take their value from ``limits`` (default
    :class:`~.sandbox_runner.SandboxLimits`: 10 s, 1024 MiB); given, they override it.
    """

    kind = "code"

    def __init__(
        self,
        timeout_s: float | None = None,
        memory_mb: int | None = None,
        max_workers: int = DEFAULT_MAX_WORKERS,
        limits: SandboxLimits | None = None,
    ) -> None:
        if max_workers < 1:
            raise ValueError(f"CodeChecker: max_workers must be >= 1, got {max_workers}")
        given = {"timeout_s": timeout_s, "memory_mb": memory_mb}
        # only what the caller set overrides limits: a default here once silently replaced limits.timeout_s
        self.limits = replace(limits or SandboxLimits(), **{k: v for k, v in given.items() if v is not None})
        self.max_workers = max_workers

    def check(self, problem: Problem, response_text: str) -> Verdict:
        """Pass/fail of one response; never raises for what the response contains.

        Raises ``ValueError`` when the problem has no ``tests`` or ``entry_point`` (bad task data) and
        :class:`~.sandbox_runner.SandboxError` when the sandbox itself fails (no verdict is possible then).
        """
        _require_code_problem(problem)
        code = extract_code(response_text if isinstance(response_text, str) else "")
        if not code.strip():
            return Verdict(False, "no code in the response", None)
        program = build_program(problem, code)
        result = run_python(
            [("candidate.py", program), ("tests.py", build_tests(problem))], self.limits, strict=("tests.py",)
        )
        again = ", re-run after the sandbox was killed from outside" if result.restarts else ""
        return Verdict(result.ok, f"{_reason(result, self.limits)} [sandbox: {result.layers_text}{again}]", code)

    def check_many(self, problem: Problem, texts: Sequence[str]) -> list[Verdict]:
        """:meth:`check` of each text, ``max_workers`` sandboxes at a time; results in input order."""
        _require_code_problem(problem)
        if len(texts) <= 1 or self.max_workers == 1:
            return [self.check(problem, t) for t in texts]
        with ThreadPoolExecutor(max_workers=min(self.max_workers, len(texts))) as pool:
            return list(pool.map(lambda t: self.check(problem, t), texts))


def _require_code_problem(problem: Problem) -> None:
    if not problem.tests or not problem.entry_point:
        raise ValueError(f"CodeChecker: problem {problem.id!r} has no tests or no entry_point")


def _reason(result: SandboxResult, limits: SandboxLimits) -> str:
    if result.ok:
        return "passed"
    if result.returncode == 0:  # exit 0 without the harness's report: the tests did not run to their end
        return "exit status 0 before the tests ran to their end (no report from the harness)"
    if result.timed_out:
        return f"timeout after {limits.timeout_s:g} s"
    lines = [ln for ln in result.stderr.splitlines() if ln.strip() and not ln.startswith("...[truncated")]
    last = lines[-1].strip() if lines else ""
    if result.returncode < 0:
        return f"killed by signal {-result.returncode} (CPU/memory limit?)" + (f": {last}" if last else "")
    return f"exit status {result.returncode}" + (f": {last[:300]}" if last else "")
