"""The OS isolation layer of the code sandbox: bubblewrap (``bwrap``) namespaces around the child interpreter.

:func:`bwrap_prefix` returns the command prefix that runs the sandbox child under bubblewrap with

- a read-only view of only what the interpreter needs: ``/usr`` (and the ``/bin``, ``/lib``... links or folders
  beside it), the Python installation (``sys.prefix``, ``sys.base_prefix``, the site-packages folders), the
  runner script bound alone at ``/sandbox/runner.py``, and ``/etc/ld.so.cache``. Nothing else of the host:
  no home folders, no project, no data, no ``/etc/passwd``, no ``/sys``;
- a private ``tmpfs`` at ``/tmp`` holding the work folder (``/tmp/work``), gone with the run;
- new PID, network (loopback only, down), IPC, UTS and (where possible) cgroup namespaces; a fresh ``/proc``
  of the new PID namespace (the program sees only its own processes) and a minimal ``/dev``;
- every capability dropped (``--cap-drop ALL``; as root, the child cannot mount, ptrace outside, raise hard
  limits or bypass file modes) and ``--die-with-parent``: when the runner is killed, the PID namespace dies.

Whether it works is probed once per process (a run of the interpreter itself under the same prefix): a host
without ``bwrap``, or where it cannot create namespaces (an unprivileged container), gets ``None`` and the
sandbox falls back to its process-level layers, with one warning.
"""

from __future__ import annotations

import logging
import os
import shutil
import site
import subprocess
import sys
import threading

log = logging.getLogger(__name__)

INNER_RUNNER = "/sandbox/runner.py"  # where the runner script is bound inside the sandbox
INNER_WORKDIR = "/tmp/work"  # the program's working folder inside the sandbox (on a private tmpfs)

_lock = threading.Lock()
_probe: dict[str, object] = {}  # "ok": bool, "why": str, once probed


def _python_paths() -> list[str]:
    """Folders the interpreter reads from: its installation and site-packages (real paths, no duplicates)."""
    paths = [sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable))]
    paths += [d for d in site.getsitepackages() if os.path.isdir(d)]
    out: list[str] = []
    for p in map(os.path.realpath, paths):
        if not p.startswith("/usr/") and p != "/usr" and not any(p == q or p.startswith(q + os.sep) for q in out):
            out = [q for q in out if not q.startswith(p + os.sep)] + [p]
    return out


def _system_binds() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    for f in ("/etc/ld.so.cache", "/etc/localtime"):
        if os.path.exists(f):
            args += ["--ro-bind", f, f]
    return args


def build_prefix(runner_path: str, tmpfs_mb: int, writable_files: tuple[str, ...] = ()) -> list[str]:
    """The ``bwrap ... --`` prefix for one run (see the module docstring); ``writable_files`` are bound
    read-write at their own path (the pids cgroup's ``cgroup.procs``, which the child joins itself)."""
    exe = shutil.which("bwrap") or "bwrap"
    args = [exe, *_system_binds()]
    for p in _python_paths():
        args += ["--ro-bind", p, p]
    for f in writable_files:
        args += ["--bind", f, f]
    args += ["--ro-bind", runner_path, INNER_RUNNER]
    args += ["--proc", "/proc", "--dev", "/dev", "--size", str(tmpfs_mb * 1024 * 1024), "--tmpfs", "/tmp",
             "--dir", INNER_WORKDIR, "--chdir", INNER_WORKDIR]
    args += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
             "--die-with-parent", "--cap-drop", "ALL", "--"]
    return args


def available(runner_path: str) -> tuple[bool, str]:
    """(works, why not) for bubblewrap on this machine; probed once, then cached. Warns once when it does not."""
    with _lock:
        if not _probe:
            _probe.update(ok=False, why="")
            if shutil.which("bwrap") is None:
                _probe["why"] = "bwrap is not installed (Debian: apt-get install bubblewrap)"
            else:
                cmd = [*build_prefix(runner_path, 16), sys.executable, "-I", "-S", "-c", "import os; os.getcwd()"]
                try:
                    r = subprocess.run(cmd, capture_output=True, timeout=30, check=False)
                    if r.returncode == 0:
                        _probe["ok"] = True
                    else:
                        _probe["why"] = f"bwrap cannot create namespaces here: {r.stderr.decode(errors='replace')[:300]}"
                except (OSError, subprocess.SubprocessError) as e:
                    _probe["why"] = f"bwrap did not run: {e}"
            if not _probe["ok"]:
                log.warning("code sandbox: no OS isolation layer (%s); using the process-level layers only",
                            _probe["why"])
        return bool(_probe["ok"]), str(_probe["why"])
