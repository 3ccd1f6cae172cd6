"""The sandbox that runs model-written programs: hostile programs fail safely and leave the machine unharmed."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest

from adaptivestep.checkers.sandbox_runner import (
    SandboxError,
    SandboxLimits,
    network_namespace_available,
    process_limit_enforced,
    run_python,
)

FAST = SandboxLimits(timeout_s=3.0, memory_mb=512)
UNGUARDED = SandboxLimits(timeout_s=3.0, memory_mb=512, guard=False)  # only the process-level layers


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _wait_dead(pids: list[int], within_s: float = 3.0) -> list[int]:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        alive = [p for p in pids if _alive(p)]
        if not alive:
            return []
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


def _pids(stdout: str) -> list[int]:
    return [int(line.split()[1]) for line in stdout.splitlines() if line.startswith("pid ")]


def test_normal_program_passes_and_its_directory_is_removed() -> None:
    r = run_python("import os\nprint('cwd', os.getcwd())\nopen('scratch.txt', 'w').write('ok')\n", FAST)
    assert r.ok, r.stderr
    cwd = r.stdout.split()[1]
    assert Path(cwd).name.startswith("adaptivestep-sandbox-")
    assert not Path(cwd).exists()


def test_exception_and_exit_fail() -> None:
    assert run_python("raise ValueError('boom')", FAST).returncode == 1
    early_exit = run_python([("candidate.py", "import sys\nsys.exit(0)"), ("tests.py", "assert False")], FAST)
    assert not early_exit.ok and "called exit" in early_exit.stderr
    os_exit = run_python("import os\nos._exit(0)", FAST)
    assert not os_exit.ok


def test_sources_share_one_namespace_and_main_block_is_skipped() -> None:
    r = run_python(
        [
            ("a.py", "x = 41\nif __name__ == '__main__':\n    input()\n"),
            ("b.py", "assert x + 1 == 42\nprint('ok')"),
        ],
        FAST,
    )
    assert r.ok and r.stdout == "ok\n", r.stderr


def test_infinite_loop_is_killed_with_its_whole_process_group() -> None:
    prog = (
        "import subprocess, sys\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "import os; print('pid', os.getpid()); print('pid', p.pid, flush=True)\n"
        "while True:\n    pass\n"
    )
    start = time.monotonic()
    r = run_python(prog, SandboxLimits(timeout_s=1.5, memory_mb=512, guard=False))
    assert r.timed_out and not r.ok
    assert time.monotonic() - start < 10
    pids = _pids(r.stdout)
    assert len(pids) == 2
    assert _wait_dead(pids) == []


def test_infinite_loop_guarded_is_killed() -> None:
    r = run_python("while True:\n    pass\n", SandboxLimits(timeout_s=1.0))
    assert r.timed_out and r.returncode is not None and r.returncode < 0


def test_child_that_outlives_the_parent_is_killed() -> None:
    prog = (
        "import subprocess, sys\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print('pid', p.pid, flush=True)\n"
    )
    r = run_python(prog, UNGUARDED)
    assert r.ok, r.stderr  # the program itself exits 0 at once ...
    assert _wait_dead(_pids(r.stdout)) == []  # ... and its orphan does not survive the run


def test_guard_blocks_process_creation() -> None:
    for prog in (
        "import os\nwhile True:\n    os.fork()\n",  # the classic fork bomb
        "import subprocess\nsubprocess.run(['true'])\n",
        "import os\nos.system('true')\n",
        "import multiprocessing as mp\nmp.Process(target=print).start()\n",
    ):
        r = run_python(prog, FAST)
        assert not r.ok and not r.timed_out, prog
        assert "TypeError" in r.stderr, (prog, r.stderr)


@pytest.mark.skipif(not process_limit_enforced(), reason="no RLIMIT_NPROC (root) and no writable pids cgroup")
def test_fork_bomb_is_bounded_by_the_kernel_even_without_the_guard() -> None:
    prog = (
        "import os, time\n"
        "pids = []\n"
        "try:\n"
        "    for _ in range(200):\n"
        "        pid = os.fork()\n"
        "        if pid == 0:\n"
        "            time.sleep(60)\n"
        "            os._exit(0)\n"
        "        pids.append(pid)\n"
        "finally:\n"
        "    print('forked', len(pids))\n"
        "    for p in pids:\n"
        "        print('pid', p)\n"
    )
    limits = SandboxLimits(timeout_s=5.0, memory_mb=512, max_processes=8, guard=False)
    r = run_python(prog, limits)
    assert not r.ok
    forked = int(r.stdout.split()[1])
    assert 0 <= forked <= limits.max_processes < 200
    assert _wait_dead(_pids(r.stdout)) == []


@pytest.mark.parametrize(
    "prog",
    [
        "a = bytearray(4 * 1024 ** 3)\n",
        "chunks = []\nwhile True:\n    chunks.append(bytearray(10 ** 7))\n",
    ],
)
def test_memory_bomb_is_bounded(prog: str) -> None:
    r = run_python(prog, SandboxLimits(timeout_s=10.0, memory_mb=256))
    assert not r.ok
    assert "MemoryError" in r.stderr or (r.returncode or 0) < 0


def test_files_outside_the_sandbox_survive(tmp_path: Path) -> None:
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
        r = run_python(prog, FAST)
        assert not r.ok, prog
        assert sentinel.read_text() == "keep me", prog
    # reading is allowed, and so is writing inside the sandbox's own directory
    r = run_python(f"print(open({str(sentinel)!r}).read())\nopen('mine.txt', 'w').write('x')\n", FAST)
    assert r.ok and r.stdout.strip() == "keep me", r.stderr


def test_sockets_fail() -> None:
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
            r = run_python(prog, FAST)
            assert not r.ok, prog
            assert "network access is disabled" in r.stderr or "Error" in r.stderr
        with pytest.raises(TimeoutError):
            server.accept()  # nothing ever connected
    finally:
        server.close()


@pytest.mark.skipif(not network_namespace_available(), reason="unshare --net does not work on this machine")
def test_network_namespace_has_no_route_even_for_raw_sockets() -> None:
    r = run_python("import socket\nprint(sorted(name for _, name in socket.if_nameindex()))", FAST)
    assert r.ok, r.stderr
    assert r.layers["netns"] and r.stdout.strip() == "['lo']"  # no interface that leads anywhere


def test_huge_output_is_truncated() -> None:
    prog = (
        "import sys\nfor _ in range(400):\n    sys.stdout.write('x' * 50000)\nprint('err', file=sys.stderr)\n"
    )
    limits = SandboxLimits(timeout_s=10.0, max_output_bytes=4096)
    r = run_python(prog, limits)
    assert r.ok, r.stderr
    assert r.truncated
    assert r.stdout.startswith("x" * 4096) and len(r.stdout) < 4096 + 100
    assert "[truncated 19995904 bytes]" in r.stdout
    assert r.stderr == "err\n"


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="sources"):
        run_python([])
    with pytest.raises(ValueError, match="timeout_s"):
        SandboxLimits(timeout_s=0)


def test_runs_in_parallel_threads() -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: run_python(f"print({i} * 2)", FAST), range(8)))
    assert [r.stdout.strip() for r in results] == [str(i * 2) for i in range(8)]


def test_a_broken_sandbox_raises_instead_of_failing_the_program(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    with pytest.raises(SandboxError):
        run_python("print(1)", FAST)
