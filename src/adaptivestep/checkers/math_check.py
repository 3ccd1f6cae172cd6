"""Math answers: extract the final answer of a response and compare it with the gold answer.

Final answer (:func:`extract_answer`): the content of the last *complete* ``\\boxed{...}`` (balanced braces;
``\\fbox`` too, and ``\\boxed 5``), else the last number of the text before any unclosed box, GSM8K style (``1,234``, ``$5``,
``5.00``, ``-3``, ``3/4``). Gold (:func:`gold_answer`): ``problem.answer``; its ``\\boxed{}`` content or the
part after ``####`` if it holds a whole solution.

Comparison: when both sides are plain numbers (:func:`parse_number`: decimals, thousands separators,
``$``, ``%``, ``\\frac{a}{b}``, ``a/b``, trailing unit words such as ``dollars``) they are compared exactly as
fractions with relative tolerance ``rel_tol`` (default 1e-6), without math-verify. Otherwise math-verify
(``parse`` + ``verify``, symbolic: ``\\frac{\\sqrt2}{2}`` = ``\\sqrt{2}/2``, ``x=3`` = ``3``, intervals, sets)
decides. math-verify's own timeouts use ``signal.alarm``, which fails outside the main thread, so they are
switched off (``parsing_timeout=None``, ``timeout_seconds=None``) and every comparison runs instead in a
persistent worker process (``python -c``, no ``multiprocessing``, so the caller's ``__main__`` is never
re-imported) with a deadline: on timeout the worker is killed and restarted on the next call. This works from
any thread and any process.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import re
import select
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Sequence
from decimal import Decimal
from fractions import Fraction
from typing import cast

from ..records import Problem
from . import Verdict

DEFAULT_TIMEOUT_S = 5.0  # per math-verify comparison; sympy can hang on e.g. 9^{9^{9}}
DEFAULT_REL_TOL = 1e-6
DEFAULT_WORKER_MEMORY_MB = 2048  # address-space cap of the verifier process (a runaway sympy dies, not us)
_WORKER_START_TIMEOUT_S = 60.0  # python start + importing sympy and math-verify, on a busy machine

# ------------------------------------------------------------------------------------------------ extraction

_BOXED = re.compile(r"\\(?:boxed|fbox)\b")
_NUMBER = re.compile(
    r"(?<![\w.])-?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s?/\s?\d+)?|(?<![\w.])-?\.\d+"
)


def last_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}`` (balanced braces) in ``text``, or ``None``.

    >>> last_boxed(r"so \\boxed{\\frac{1}{2}} and \\boxed{3")  # the last one is unclosed (truncated)
    '\\\\frac{1}{2}'
    """
    for m in reversed(list(_BOXED.finditer(text))):
        i = m.end()
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            depth, j = 0, i
            while j < len(text):
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    depth -= 1
                    if depth == 0:
                        content = text[i + 1 : j].strip()
                        if content:
                            return content
                        break
                j += 1
        elif i > m.end():  # "\boxed 5": one token
            token = re.match(r"[^\s$]+", text[i:])
            if token:
                return token.group(0).rstrip(".")
    return None


def last_number(text: str) -> str | None:
    """The last number in ``text``, normalised (no ``$``, thousands commas or spaces), or ``None``.

    >>> last_number("He pays $1,234.50 in total, i.e. 3/4 of it.")
    '3/4'
    >>> last_number("The answer is -3.")
    '-3'
    """
    found = _NUMBER.findall(text)
    if not found:
        return None
    return re.sub(r"[\s$,]", "", found[-1])


def extract_answer(text: str) -> str | None:
    """The final answer of a response: last complete ``\\boxed{}`` content, else the last number.

    Numbers inside a box left open (a truncated response) do not count: the answer was never finished.

    >>> extract_answer(r"... = 12, so \\boxed{x = 3}"), extract_answer("Total: 18 dollars.")
    ('x = 3', '18')
    """
    if not isinstance(text, str):
        return None
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    opened = list(_BOXED.finditer(text))  # a box left open (truncated output): its content is no answer
    return last_number(text[: opened[-1].start()] if opened else text)


def answer_key(text: str) -> str | None:
    r"""What majority votes count: :func:`extract_answer` in a canonical form, so that answers the checker
    would judge equal as plain numbers vote together (``$18.00`` and ``18`` -> ``18``, ``\frac{3}{4}`` ->
    ``0.75``, see :func:`number_text`); any other answer is its text without ``$``, whitespace, case, a final
    period or thousands commas (``X = 3.`` -> ``x=3``). ``None`` when there is no answer.

    This is the project's one answer normaliser: Best-of-N votes on these keys as they are.

    >>> answer_key(r"so \boxed{\frac{3}{4}}"), answer_key("She earns $1,800.00."), answer_key(r"\boxed{2  \Pi}")
    ('0.75', '1800', '2\\pi')
    >>> answer_key(r"1/3 of it: \boxed{1/3}"), answer_key("no answer here") is None
    ('1/3', True)
    """
    a = extract_answer(text)
    if a is None:
        return None
    n = parse_number(a)
    if n is not None:
        return number_text(n)
    s = re.sub(r"\s+", "", a.replace("$", "")).lower().rstrip(".")
    return _THOUSANDS_SEP.sub("", s) or None


_THOUSANDS_SEP = re.compile(r"(?<=\d),(?=\d{3}(?:\D|$))")


def number_text(n: Fraction) -> str:
    """Canonical text of an exact number: an integer, else a terminating decimal, else ``a/b``.

    >>> number_text(Fraction(18)), number_text(Fraction(-5, 2)), number_text(Fraction(1, 3))
    ('18', '-2.5', '1/3')
    """
    if n.denominator == 1:
        return str(n.numerator)
    d = n.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    if d != 1:  # no terminating decimal
        return f"{n.numerator}/{n.denominator}"
    return format((Decimal(n.numerator) / Decimal(n.denominator)).normalize(), "f")


def gold_answer(problem: Problem) -> str:
    """The gold final answer of a math problem; ``ValueError`` naming the problem when it has none."""
    gold = problem.answer
    if gold is None or not str(gold).strip():
        raise ValueError(f"MathChecker: problem {problem.id!r} has no gold answer (Problem.answer)")
    gold = str(gold)
    if "####" in gold:  # a whole GSM8K solution: the answer follows "####"
        gold = gold.rsplit("####", 1)[1]
    return (last_boxed(gold) or gold).strip()


# ------------------------------------------------------------------------------------------- plain numbers

_WRAPPERS = re.compile(r"\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*)\}")
_UNITS = re.compile(r"(?:\s+[A-Za-z]{2,}\.?)+$")  # trailing words: "18 dollars", "5 apples"
_NOT_UNITS = {"pi", "inf", "infty", "infinity"}
_DECIMAL = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")
_THOUSANDS = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_SLASH = re.compile(r"([-+]?\d+)\s*/\s*(\d+)")
_LATEX_FRAC = re.compile(r"([-+]?)\\[dt]?frac\s*(?:\{\s*(\d+)\s*\}|(\d))\s*(?:\{\s*(\d+)\s*\}|(\d))")


def parse_number(s: str) -> Fraction | None:
    """Exact value of a plain number answer, or ``None`` when ``s`` is anything else (left to math-verify).

    >>> [parse_number(x) for x in ("$18", "18.00", "18 dollars", "1,234", "\\\\frac{3}{4}", "-3/4", "10\\\\%")]
    [Fraction(18, 1), Fraction(18, 1), Fraction(18, 1), Fraction(1234, 1), Fraction(3, 4), Fraction(-3, 4), \
Fraction(10, 1)]
    >>> parse_number("2\\\\pi") is None, parse_number("3, 5") is None
    (True, True)
    """
    s = _WRAPPERS.sub(r" \1 ", s)
    for junk in ("\\$", "$", "\\%", "%", "\\!", "\\,", "\\;", "{,}"):
        s = s.replace(junk, "" if junk != "{,}" else ",")
    s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?", "", s).strip().rstrip(".").strip()
    units = _UNITS.search(s)
    if units and not any(w.strip(".").lower() in _NOT_UNITS for w in units.group(0).split()):
        s = s[: units.start()].strip()
    try:
        if _DECIMAL.fullmatch(s):
            return Fraction(s)
        if _THOUSANDS.fullmatch(s):
            return Fraction(s.replace(",", ""))
        if m := _SLASH.fullmatch(s):
            return Fraction(int(m.group(1)), int(m.group(2))) if int(m.group(2)) else None
        if m := _LATEX_FRAC.fullmatch(s):
            num, den = int(m.group(2) or m.group(3)), int(m.group(4) or m.group(5))
            return (Fraction(num, den) * (-1 if m.group(1) == "-" else 1)) if den else None
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return None


def numbers_equal(a: Fraction, b: Fraction, rel_tol: float = DEFAULT_REL_TOL) -> bool:
    """``|a - b| <= rel_tol * max(|a|, |b|)``, exact on fractions.

    >>> numbers_equal(Fraction(1, 3), Fraction("0.3333333")), numbers_equal(Fraction(1, 3), Fraction("0.33"))
    (True, False)
    """
    return a == b or abs(a - b) <= Fraction(rel_tol) * max(abs(a), abs(b))


# -------------------------------------------------------------------------------------------------- checker


class MathChecker:
    """Final-answer checker for math tasks (GSM8K numbers, MATH LaTeX answers).

    ``timeout_s``: deadline of one math-verify comparison (seconds). ``rel_tol``: relative tolerance of the
    plain-number fast path. ``memory_mb``: address-space cap of the math-verify worker process.
    """

    kind = "math"

    def __init__(
        self,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        rel_tol: float = DEFAULT_REL_TOL,
        memory_mb: int = DEFAULT_WORKER_MEMORY_MB,
    ) -> None:
        if not timeout_s > 0:
            raise ValueError(f"MathChecker: timeout_s must be > 0, got {timeout_s!r}")
        if not 0 <= rel_tol < 1:
            raise ValueError(f"MathChecker: rel_tol must be in [0, 1), got {rel_tol!r}")
        if importlib.util.find_spec("math_verify") is None:
            raise ImportError("MathChecker needs math-verify: pip install 'math-verify>=0.9.0'")
        self.timeout_s = float(timeout_s)
        self.rel_tol = float(rel_tol)
        self._worker = _VerifyWorker(memory_mb)

    def check(self, problem: Problem, response_text: str) -> Verdict:
        """Verdict for one response; never raises for what the response contains."""
        gold = gold_answer(problem)
        pred = extract_answer(response_text)
        if pred is None:
            return Verdict(False, "no final answer (no \\boxed{} and no number)", None)
        return self.compare(gold, pred)

    def check_many(self, problem: Problem, texts: Sequence[str]) -> list[Verdict]:
        """:meth:`check` of each text, in input order (comparisons are fast; no parallelism needed)."""
        return [self.check(problem, t) for t in texts]

    def compare(self, gold: str, pred: str) -> Verdict:
        """Verdict for an already extracted answer ``pred`` against ``gold``."""
        g, p = parse_number(gold), parse_number(pred)
        if g is not None and p is not None:
            same = numbers_equal(g, p, self.rel_tol)
            return Verdict(same, f"numeric: {pred} {'==' if same else '!='} {gold}", pred)
        try:
            same, detail = cast(tuple[bool, str], self._worker.call(("verify", gold, pred), self.timeout_s))
        except TimeoutError:
            return Verdict(False, f"math-verify timeout after {self.timeout_s:g} s", pred)
        except Exception as e:  # noqa: BLE001 - a broken worker must not stop labelling
            return Verdict(False, f"math-verify error: {e}", pred)
        return Verdict(bool(same), f"math-verify: {detail}", pred)

    def close(self) -> None:
        """Stop the math-verify worker process (it is restarted if the checker is used again)."""
        self._worker.close()


# ------------------------------------------------------------------------------------ math-verify worker


class _VerifyWorker:
    """A persistent ``python -c`` child running math-verify, serving one request at a time.

    Protocol on its stdin/stdout: frames of a 4-byte big-endian length + a pickle. Requests are tuples
    (``("verify", gold, pred)``, ``("sleep", seconds)`` for tests); replies ``("ok", value)`` or
    ``("error", message)``. A deadline is enforced by the caller: on timeout the process is killed.
    """

    def __init__(self, memory_mb: int) -> None:
        self.memory_mb = int(memory_mb)
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._owner_pid = 0
        self._finalizer: weakref.finalize | None = None
        self.starts = 0  # how many processes were started (tests read it)

    def call(self, request: tuple[object, ...], timeout_s: float) -> object:
        """Send ``request``; its value, ``TimeoutError`` after ``timeout_s``, ``RuntimeError`` if it died."""
        with self._lock:
            proc = self._ensure_started()
            payload = pickle.dumps(request)
            try:
                assert proc.stdin is not None
                proc.stdin.write(struct.pack(">I", len(payload)) + payload)
                proc.stdin.flush()
                status, value = _read_frame(proc, time.monotonic() + timeout_s)
            except TimeoutError:
                self._stop()
                raise
            except (OSError, EOFError, pickle.UnpicklingError) as e:
                self._stop()
                raise RuntimeError(f"math-verify worker died ({e})") from None
        if status != "ok":
            raise RuntimeError(str(value))
        return value

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _ensure_started(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._owner_pid == os.getpid() and self._proc.poll() is None:
            return self._proc
        if self._owner_pid != os.getpid():
            self._proc = None  # inherited through fork: the process belongs to the parent
        else:
            self._stop()
        src_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src_root, os.environ.get("PYTHONPATH")) if p)
        code = f"from adaptivestep.checkers.math_check import _worker_main; _worker_main({self.memory_mb})"
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
        self._proc, self._owner_pid = proc, os.getpid()
        self._finalizer = weakref.finalize(self, _kill, proc)
        self.starts += 1
        try:
            status, value = _read_frame(proc, time.monotonic() + _WORKER_START_TIMEOUT_S)
        except (TimeoutError, OSError, EOFError) as e:
            self._stop()
            raise RuntimeError(f"math-verify worker did not start ({e!r})") from None
        if status != "ok":
            self._stop()
            raise RuntimeError(f"math-verify worker did not start: {value}")
        return proc

    def _stop(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # kills and reaps the process once
            self._finalizer = None
        self._proc = None


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass


def _read_frame(proc: subprocess.Popen[bytes], deadline: float) -> tuple[str, object]:
    """One reply frame from the worker before ``deadline`` (monotonic seconds)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    need = 4
    header_done = False
    while True:
        while len(buf) < need:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError("math-verify worker did not answer in time")
            chunk = os.read(fd, max(need - len(buf), 1 << 16))
            if not chunk:
                raise EOFError("worker closed its output")
            buf += chunk
        if header_done:
            return pickle.loads(buf[:need])  # type: ignore[no-any-return]
        (length,) = struct.unpack(">I", buf[:4])
        buf, need, header_done = buf[4:], length, True


def _worker_main(memory_mb: int) -> None:  # pragma: no cover - runs in the worker process
    """Serve math-verify requests on stdin/stdout until stdin closes."""
    import logging
    import resource

    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints of sympy & co. go to stderr, not into the protocol
    inp = sys.stdin.buffer
    try:
        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ValueError, OSError):
        pass

    def send(reply: tuple[str, object]) -> None:
        data = pickle.dumps(reply)
        out.write(struct.pack(">I", len(data)) + data)
        out.flush()

    try:
        import math_verify  # noqa: F401 - warm up before the first deadline

        logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout disabled" warnings: we know
    except BaseException as e:  # noqa: BLE001
        send(("error", f"cannot import math_verify: {e!r}"))
        return
    send(("ok", "ready"))
    while True:
        header = inp.read(4)
        if len(header) < 4:
            return
        request = pickle.loads(inp.read(struct.unpack(">I", header)[0]))
        try:
            if request[0] == "verify":
                send(("ok", _math_verify_equal(request[1], request[2])))
            elif request[0] == "sleep":
                time.sleep(float(request[1]))
                send(("ok", "slept"))
            else:
                send(("error", f"unknown request {request[0]!r}"))
        except BaseException as e:  # noqa: BLE001 - MemoryError, RecursionError, sympy internals
            send(("error", f"{type(e).__name__}: {str(e)[:200]}"))


def _math_verify_equal(gold: str, pred: str) -> tuple[bool, str]:
    """math-verify on two extracted answers, its signal-based timeouts off (the caller enforces one)."""
    from math_verify import parse, verify

    g = parse(f"\\boxed{{{gold}}}", parsing_timeout=None)  # type: ignore[arg-type]
    if not g:
        return False, f"cannot parse the gold answer {gold!r}"
    p = parse(f"\\boxed{{{pred}}}", parsing_timeout=None)  # type: ignore[arg-type]
    if not p:
        return False, f"cannot parse {pred!r}"
    same = bool(verify(g, p, timeout_seconds=None))
    return same, f"{pred} {'==' if same else '!='} {gold}"
