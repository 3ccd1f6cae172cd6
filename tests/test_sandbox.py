"""The sandbox that runs model-written programs: hostile programs fail safely and leave the machine unharmed.

Most tests run twice, with the OS layer (bubblewrap; skipped where it does not work) and without it
(``os_layer="none"``: the process-level layers alone), through the ``layer`` fixture.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from adaptivestep.checkers import os_layer
from adaptivestep.checkers.code_check import CodeChecker
from adaptivestep.checkers.sandbox_runner import (
    RUNNER_PATH,
    SandboxError,
    SandboxLimits,
    network_namespace_available,
    process_limit_enforced,
    run_python,
)
from adaptivestep.records import Problem

BWRAP = os_layer.available(RUNNER_PATH)[0]
LAYERS = [pytest.param("bwrap", marks=pytest.mark.skipif(not BWRAP, reason="bubblewrap does not work here")), "none"]


@pytest.fixture(params=LAYERS)
def layer(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def fast(layer: str, **kw: object) -> SandboxLimits:
    opts: dict[str, object] = {"timeout_s": 3.0, "memory_mb": 512, "os_layer": layer}
    opts.update(kw)
    return SandboxLimits(**opts)  # type: ignore[arg-type]


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _with_marker(marker: str) -> list[int]:
    """Host pids whose command line holds ``marker`` (seen from outside any PID namespace)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes() and _alive(int(entry)):
                    out.append(int(entry))
            except OSError:
                pass
    return out


def _wait_gone(marker: str, within_s: float = 3.0) -> list[int]:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not _with_marker(marker):
            return []
        time.sleep(0.05)
    return _with_marker(marker)


def _sleeper(marker: str) -> str:
    """Python source that starts a 60-second sleeper process carrying ``marker`` in its command line."""
    return (
        "import subprocess, sys\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)  # {marker}'])\n"
    )


# ------------------------------------------------------------------------------------- basic behaviour


def test_normal_program_passes_and_its_directory_is_removed(layer: str) -> None:
    r = run_python("import os\nprint('cwd', os.getcwd())\nopen('scratch.txt', 'w').write('ok')\n", fast(layer))
    assert r.ok and r.reported, r.stderr
    assert r.layers["bwrap"] == (layer == "bwrap") and r.layers["guard"]
    cwd = r.stdout.split()[1]
    if layer == "bwrap":
        assert cwd == os_layer.INNER_WORKDIR  # on the sandbox's own tmpfs, gone with the run
    else:
        assert Path(cwd).name.startswith("adaptivestep-sandbox-")
        assert not Path(cwd).exists()


def test_exception_and_exit_fail(layer: str) -> None:
    assert run_python("raise ValueError('boom')", fast(layer)).returncode == 1
    early = run_python([("candidate.py", "import sys\nsys.exit(0)"), ("tests.py", "assert False")], fast(layer))
    assert not early.ok and "called exit" in early.stderr
    os_exit = run_python("import os\nos._exit(0)", fast(layer))
    assert not os_exit.ok


def test_exit_status_zero_without_the_report_fails(layer: str) -> None:
    """The pass signal: exiting 0 through the original ``_exit`` (found with gc) skips the report."""
    prog = (
        "import gc\n"
        "exits = [o for o in gc.get_objects() if callable(o) and getattr(o, '__name__', '') == '_exit']\n"
        "exits[0](0)\n"
    )
    r = run_python([("candidate.py", prog), ("tests.py", "assert False")], fast(layer))
    assert r.returncode == 0 and not r.reported and not r.ok


def test_sources_share_one_namespace_and_main_block_is_skipped(layer: str) -> None:
    r = run_python(
        [
            ("a.py", "x = 41\nif __name__ == '__main__':\n    input()\n"),
            ("b.py", "assert x + 1 == 42\nprint('ok')"),
        ],
        fast(layer),
    )
    assert r.ok and r.stdout == "ok\n", r.stderr


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="sources"):
        run_python([])
    with pytest.raises(ValueError, match="timeout_s"):
        SandboxLimits(timeout_s=0)
    with pytest.raises(ValueError, match="os_layer"):
        SandboxLimits(os_layer="docker")


def test_runs_in_parallel_threads(layer: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: run_python(f"print({i} * 2)", fast(layer)), range(8)))
    assert [r.stdout.strip() for r in results] == [str(i * 2) for i in range(8)]
    assert all(r.ok for r in results)


def test_a_broken_sandbox_raises_instead_of_failing_the_program(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    with pytest.raises(SandboxError):
        run_python("print(1)", fast("none"))


def test_required_os_layer_that_does_not_work_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os_layer, "_probe", {"ok": False, "why": "no bwrap (test)"})
    with pytest.raises(SandboxError, match="no bwrap"):
        run_python("print(1)", fast("bwrap"))
    r = run_python("print(1)", fast("auto"))  # auto falls back to the process layers
    assert r.ok and not r.layers["bwrap"]


# ------------------------------------------------------------------------- process, memory, output limits


def test_infinite_loop_is_killed_with_every_process_it_started(layer: str) -> None:
    marker = f"sandbox-test-{uuid.uuid4().hex}"
    start = time.monotonic()
    r = run_python(_sleeper(marker) + "while True:\n    pass\n", fast(layer, timeout_s=1.5, guard=False))
    assert r.timed_out and not r.ok and (r.returncode or 0) < 0
    assert time.monotonic() - start < 10
    assert _wait_gone(marker) == []


def test_child_that_outlives_the_program_is_killed(layer: str) -> None:
    marker = f"sandbox-test-{uuid.uuid4().hex}"
    r = run_python(_sleeper(marker) + "print('started', flush=True)\n", fast(layer, guard=False))
    assert r.ok and "started" in r.stdout, r.stderr  # the program itself exits 0 at once ...
    assert _wait_gone(marker) == []  # ... and its orphan does not survive the run


def test_guard_blocks_process_creation(layer: str) -> None:
    for prog in (
        "import os\nwhile True:\n    os.fork()\n",  # the classic fork bomb
        "import subprocess\nsubprocess.run(['true'])\n",
        "import os\nos.system('true')\n",
        "import multiprocessing as mp\nmp.Process(target=print).start()\n",
    ):
        r = run_python(prog, fast(layer))
        assert not r.ok and not r.timed_out, prog
        assert "TypeError" in r.stderr, (prog, r.stderr)


@pytest.mark.skipif(not process_limit_enforced(), reason="no RLIMIT_NPROC (root) and no writable pids cgroup")
def test_fork_bomb_is_bounded_by_the_kernel_even_without_the_guard(layer: str) -> None:
    prog = (
        "import os, time\n"
        "n = 0\n"
        "try:\n"
        "    for _ in range(200):\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(60)\n"
        "            os._exit(0)\n"
        "        n += 1\n"
        "finally:\n"
        "    print('forked', n, flush=True)\n"
    )
    limits = fast(layer, timeout_s=5.0, max_processes=8, guard=False)
    r = run_python(prog, limits)
    assert not r.ok
    forked = int(r.stdout.split()[1])
    assert 0 <= forked <= limits.max_processes < 200


@pytest.mark.parametrize(
    "prog",
    [
        "a = bytearray(4 * 1024 ** 3)\n",
        "chunks = []\nwhile True:\n    chunks.append(bytearray(10 ** 7))\n",
    ],
)
def test_memory_bomb_is_bounded(prog: str, layer: str) -> None:
    r = run_python(prog, fast(layer, timeout_s=10.0, memory_mb=256))
    assert not r.ok
    assert "MemoryError" in r.stderr or (r.returncode or 0) < 0


def test_huge_output_is_truncated(layer: str) -> None:
    prog = (
        "import sys\nfor _ in range(400):\n    sys.stdout.write('x' * 50000)\nprint('err', file=sys.stderr)\n"
    )
    r = run_python(prog, fast(layer, timeout_s=10.0, max_output_bytes=4096))
    assert r.ok, r.stderr
    assert r.truncated
    assert r.stdout.startswith("x" * 4096) and len(r.stdout) < 4096 + 100
    assert "[truncated 19995904 bytes]" in r.stdout
    assert r.stderr == "err\n"


# ------------------------------------------------------------------------------------------ files, network


def test_files_outside_the_sandbox_survive(tmp_path: Path, layer: str) -> None:
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("keep me")
    attacks = [
        f"import os\nos.remove({str(sentinel)!r})",
        f"import os\nos.unlink({str(sentinel)!r})",
        f"import shutil\nshutil.rmtree({str(tmp_path)!r})",
        f"import pathlib\npathlib.Path({str(sentinel)!r}).unlink()",
        f"open({str(sentinel)!r}, 'w').write('overwritten')",
        f"import pathlib\npathlib.Path({str(sentinel)!r}).write_text('overwritten')",
        f"import os\nos.rename({str(sentinel)!r}, 'stolen.txt')",
        f"import os\nfd = os.open({str(sentinel)!r}, os.O_WRONLY | os.O_TRUNC)",
    ]
    for prog in attacks:
        r = run_python(prog, fast(layer))
        assert not r.ok, prog
        assert sentinel.read_text() == "keep me", prog
    # writing inside the sandbox's own directory is allowed
    r = run_python("open('mine.txt', 'w').write('x')\nprint(open('mine.txt').read())\n", fast(layer))
    assert r.ok and r.stdout.strip() == "x", r.stderr


@pytest.mark.skipif(not BWRAP, reason="bubblewrap does not work here")
def test_os_layer_hides_the_host_even_from_an_unguarded_program(tmp_path: Path) -> None:
    """With the guard off (a program that undid it), the OS layer alone keeps host files out of reach."""
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret")
    prog = (
        "import os\n"
        "seen = {d: os.path.exists(d) for d in ('/work', '/home', '/root/.ssh', '/etc/passwd', "
        f"{str(tmp_path)!r}, {str(Path.home() / '.bash_history')!r})}}\n"
        "print(sorted(d for d, there in seen.items() if there))\n"
        f"try:\n    open({str(secret)!r}, 'w').write('x')\nexcept OSError as e:\n    print('write', type(e).__name__)\n"
        "try:\n    open('/usr/lib/planted', 'w')\nexcept OSError as e:\n    print('usr', type(e).__name__)\n"
        "print('pid', os.getpid(), 'procs', sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))\n"
    )
    r = run_python(prog, fast("bwrap", guard=False))
    assert r.ok, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "[]"
    assert lines[1].startswith("write") and lines[2].startswith("usr")
    procs = [int(x) for x in lines[3].split("procs", 1)[1].strip(" []").split(",")]
    assert max(procs) < 10  # only the sandbox's own few processes in its PID namespace
    assert secret.read_text() == "s3cret"


def test_sockets_fail(layer: str) -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    try:
        for prog in (
            f"import socket\ns = socket.socket()\ns.connect(('127.0.0.1', {port}))",
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)",
            f"import urllib.request\nurllib.request.urlopen('http://127.0.0.1:{port}/', timeout=1)",
        ):
            r = run_python(prog, fast(layer))
            assert not r.ok, prog
            assert "network access is disabled" in r.stderr or "Error" in r.stderr
        with pytest.raises(TimeoutError):
            server.accept()  # nothing ever connected
    finally:
        server.close()


@pytest.mark.skipif(not (BWRAP or network_namespace_available()), reason="no network namespace here")
def test_network_namespace_has_no_route_even_for_raw_sockets() -> None:
    layer = "bwrap" if BWRAP else "none"
    r = run_python("import socket\nprint(sorted(name for _, name in socket.if_nameindex()))", fast(layer))
    assert r.ok, r.stderr
    assert r.layers["netns"] and r.stdout.strip() == "['lo']"  # no interface that leads anywhere


# ------------------------------------------------------------------- hostile candidates against CodeChecker

ADD = Problem(
    id="add",
    question='def add(a, b):\n    """Return a + b."""\n',
    kind="code",
    entry_point="add",
    tests="def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"
    "    assert abs(candidate(0.5, 0.25) - 0.75) < 1e-9\n",
)


def _fenced(code: str) -> str:
    return f"Here is my answer.\n```python\n{code}\n```\n"


HOSTILE = {
    "exit(0)": "import sys\nsys.exit(0)",
    "os._exit(0)": "import os\nos._exit(0)",
    "gc-found _exit": (
        "import gc\n"
        "for o in gc.get_objects():\n"
        "    if callable(o) and getattr(o, '__name__', '') == '_exit':\n"
        "        o(0)\n"
    ),
    "frame-found _exit": (
        "import sys\n"
        "f = sys._getframe()\n"
        "while f is not None:\n"
        "    for v in list(f.f_locals.values()):\n"
        "        if getattr(v, '__name__', '') == '_exit':\n"
        "            v(0)\n"
        "    f = f.f_back\n"
    ),
    "SIGKILL to itself": "import signal\nsignal.raise_signal(signal.SIGKILL)",
    "always-equal __eq__": (
        "class Any:\n    def __eq__(self, other):\n        return True\n    __ne__ = __lt__ = __gt__ = __eq__\n"
        "    def __sub__(self, other):\n        return 0\n    __abs__ = lambda self: 0\n"
        "def add(a, b):\n    return Any()\n"
    ),
    "always-equal int subclass": (
        "class I(int):\n    def __eq__(self, other):\n        return True\n    def __sub__(self, other):\n"
        "        return 0\ndef add(a, b):\n    return I(0)\n"
    ),
    "__class__ spoof": (
        "class Any:\n    __class__ = int\n    def __eq__(self, other):\n        return True\n"
        "    def __sub__(self, other):\n        return 0\ndef add(a, b):\n    return Any()\n"
    ),
    "thread patches check": (
        "import threading, sys\n"
        "def patch():\n"
        "    g = sys.modules['__main__'].__dict__ if False else globals()\n"
        "    while True:\n"
        "        if 'check' in g and getattr(g['check'], '__name__', '') == 'check':\n"
        "            g['check'] = lambda c: None\n"
        "threading.Thread(target=patch, daemon=True).start()\n"
        "def add(a, b):\n    return 0\n"
    ),
    "deep recursion": "import sys\nsys.setrecursionlimit(10 ** 7)\ndef f(n):\n    return f(n + 1)\nf(0)",
    "enormous output": "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)",
    "infinite loop": "while True:\n    pass",
    "fork bomb": "import os\nwhile True:\n    os.fork()",
    "memory hog": "x = []\nwhile True:\n    x.append(bytearray(10 ** 7))",
    "socket out": "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=1)\ndef add(a, b):\n    return a + b\n",
    "ctypes": "import ctypes\nctypes.CDLL(None).exit(0)",
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_candidates_are_judged_wrong(name: str, layer: str) -> None:
    checker = CodeChecker(timeout_s=1.5, memory_mb=512, limits=SandboxLimits(os_layer=layer))
    v = checker.check(ADD, _fenced(HOSTILE[name]))
    assert not v.correct, (name, v.reason)
    assert ("[sandbox: bwrap+" in v.reason) == (layer == "bwrap"), v.reason


def test_a_correct_answer_passes_and_names_its_layers(layer: str) -> None:
    checker = CodeChecker(timeout_s=3.0, limits=SandboxLimits(os_layer=layer))
    v = checker.check(ADD, _fenced("def add(a, b):\n    return a + b"))
    assert v.correct, v.reason
    assert v.reason.startswith("passed [sandbox: ") and ("bwrap" in v.reason) == (layer == "bwrap")


def test_always_equal_elements_in_a_container_fail(layer: str) -> None:
    p = Problem(id="pair", question="Write pair().", kind="code", entry_point="pair",
                tests="def check(candidate):\n    assert candidate() == [1, 2]\n")
    code = "class Any:\n    def __eq__(self, other):\n        return True\ndef pair():\n    return [Any(), Any()]\n"
    checker = CodeChecker(timeout_s=3.0, limits=SandboxLimits(os_layer=layer))
    v = checker.check(p, _fenced(code))
    assert not v.correct and "not plain data" in v.reason, v.reason
    assert checker.check(p, _fenced("def pair():\n    return [1, 2]")).correct


def test_plain_data_and_record_objects_still_compare(layer: str) -> None:
    """Hardening keeps what honest answers return: numbers of mixed types, containers, ListNode-like records."""
    tests = (
        "class Node:\n    def __init__(self, v, nxt=None):\n        self.val, self.next = v, nxt\n"
        "def same(a, b):\n"
        "    while a and b:\n        if a.val != b.val:\n            return False\n        a, b = a.next, b.next\n"
        "    return a is None and b is None\n"
        "def check(candidate):\n"
        "    assert candidate('int') == 5.0 and candidate('float') == 5\n"
        "    assert candidate('nested') == {'a': [1, (2, 3)], 'b': {4}}\n"
        "    assert candidate('counter') == {'x': 2}\n"
        "    assert same(candidate('list'), Node(1, Node(2)))\n"
        "    assert candidate('none') is None and candidate('bool') != False\n"
    )
    code = (
        "import collections\n"
        "def f(kind):\n"
        "    return {'int': 5, 'float': 5.0, 'nested': {'a': [1, (2, 3)], 'b': {4}},\n"
        "            'counter': collections.Counter('xx'), 'list': Node(1, Node(2)), 'none': None,\n"
        "            'bool': True}[kind]\n"
    )
    p = Problem(id="plain", question="Write f.", kind="code", entry_point="f", tests=tests)
    checker = CodeChecker(timeout_s=5.0, limits=SandboxLimits(os_layer=layer))
    v = checker.check(p, _fenced(tests.split("def check")[0] + code))
    assert v.correct, v.reason


@pytest.mark.xfail(strict=True, reason="documented limit (sandbox_runner docstring): code in the same "
                   "interpreter that enumerates its descriptors can copy the token to the report pipe")
def test_forging_the_report_through_raw_descriptors_is_a_known_limit(layer: str) -> None:
    forge = (
        "import os, gc\n"
        "token = b''\n"
        "for fd in range(3, 64):\n"
        "    try:\n        token = token or os.read(fd, 64)\n    except OSError:\n        pass\n"
        "for fd in range(3, 64):\n"
        "    try:\n        os.write(fd, token)\n    except OSError:\n        pass\n"
        "[o for o in gc.get_objects() if callable(o) and getattr(o, '__name__', '') == '_exit'][0](0)\n"
    )
    v = CodeChecker(timeout_s=3.0, limits=SandboxLimits(os_layer=layer)).check(ADD, _fenced(forge))
    assert not v.correct, v.reason


def test_signals_to_other_processes_fail(layer: str) -> None:
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        for prog in (
            f"import os, signal\nos.kill({victim.pid}, signal.SIGKILL)",
            f"import os, signal\nos.killpg({victim.pid}, signal.SIGKILL)",
            f"import signal\nsignal.pthread_kill({victim.pid}, signal.SIGKILL)",
        ):
            r = run_python(prog, fast(layer))
            assert not r.ok, prog
        assert victim.poll() is None  # still alive
    finally:
        victim.kill()
        victim.wait()


def test_proc_tricks_reveal_nothing_under_the_os_layer(tmp_path: Path, layer: str) -> None:
    """``/proc/<pid>/environ`` of another process, ``ptrace``: judged wrong in both settings; hidden with bwrap."""
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                              env={**os.environ, "VICTIM_SECRET": "s3cret-env"})
    try:
        prog = (
            "data = b''\n"
            f"try:\n    data = open('/proc/{victim.pid}/environ', 'rb').read()\nexcept OSError:\n    pass\n"
            "print('leaked' if b's3cret-env' in data else 'hidden')\n"
            "import ctypes\n"  # ptrace needs ctypes (or a C extension): the guard refuses it
            f"ctypes.CDLL(None).ptrace(16, {victim.pid}, 0, 0)\n"
        )
        r = run_python(prog, fast(layer))
        assert not r.ok
        if layer == "bwrap":
            assert r.stdout.strip() == "hidden"
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()


def test_bench_sandbox_prints_figures_and_a_json_last_line(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from adaptivestep.bench import sandbox as bench

    assert bench.main(["--runs", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    res = json.loads(lines[-1])
    assert "runs/s" in lines[0]
    assert 0 < res["checker_share_ratio"] < 1
    for layer in res["layers"]:
        assert res[f"{layer}_check_2w_runs_s"] > 0
    assert ("bwrap_vs_none_check_2w_ratio" in res) == BWRAP
