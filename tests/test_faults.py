"""Fault injection across the pipeline: kills, a killed checker, a full or read-only disk, two runs on one output,
a damaged work log. Each test injects the fault for real (SIGKILL, a tiny tmpfs, flock, bytes on disk) and checks
what survives it. The fake backend keeps them fast; ``label`` kill/resume on the fake backend is also in
tests/test_label_engine.py and on the real model in tests/integration/test_pipeline_real.py.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import fault_jobs  # noqa: E402
import label_job  # noqa: E402

from adaptivestep.checkers import os_layer  # noqa: E402
from adaptivestep.checkers.code_check import CodeChecker  # noqa: E402
from adaptivestep.checkers.sandbox_runner import _PY_FLAGS, RUNNER_PATH, SandboxLimits  # noqa: E402
from adaptivestep.jsonl import read_records  # noqa: E402
from adaptivestep.label import LabelConfig, label_files  # noqa: E402
from adaptivestep.records import LabeledRecord, Problem, Sample  # noqa: E402
from adaptivestep.worklog import OutputLocked, Rollout, WorkLog, WorkLogError, output_lock  # noqa: E402

HERE = Path(__file__).parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
BWRAP = os_layer.available(RUNNER_PATH)[0]
LAYERS = [pytest.param("bwrap", marks=pytest.mark.skipif(not BWRAP, reason="bubblewrap does not work here")), "none"]


def _job(*args: str) -> list[str]:
    return [sys.executable, str(HERE / "fault_jobs.py"), *args]


def _lines(path: Path) -> int:
    return len(path.read_bytes().splitlines()) if path.exists() else 0


def _kill_at_random_points(cmd: list[str], rnd: random.Random, lo: float, hi: float, tries: int = 6,
                           watch: Path | None = None) -> int:
    """Start ``cmd`` and SIGKILL it after a random delay, again and again until it finishes; returns the kills.

    ``watch``: an output file; the delay then starts once this attempt has added a line to it, so the kill
    lands mid-job however fast the machine is (a fixed delay let a quiet machine finish before any kill)."""
    kills = 0
    for _ in range(tries):
        before = _lines(watch) if watch is not None else 0
        proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if watch is not None:
            t_end = time.monotonic() + 120
            while proc.poll() is None and _lines(watch) <= before and time.monotonic() < t_end:
                time.sleep(0.01)
        time.sleep(rnd.uniform(lo, hi))
        if proc.poll() is not None:
            assert proc.returncode == 0, proc.stderr.read().decode() if proc.stderr else ""
            return kills
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    subprocess.run(cmd, env=ENV, check=True)
    return kills


def _samples(path: Path) -> dict[tuple[str, int], tuple[list[int], list[float]]]:
    return {s.key: (s.token_ids, s.logprobs) for s in read_records(path, Sample)}


def _labels(path: Path) -> dict[tuple[str, int], tuple[list[float], list[float]]]:
    return {(r.problem_id, r.sample_index): (r.hard_labels, r.soft_labels) for r in read_records(path, LabeledRecord)}


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _orphan_sandboxes() -> list[int]:
    """Sandbox processes of this checkout whose labelling process is gone (reparented to init)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or RUNNER_PATH not in _cmdline(int(entry)):
            continue
        try:
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == 1 or "python" not in _cmdline(ppid) and "bwrap" not in _cmdline(ppid):
            out.append(int(entry))
    return out


# ------------------------------------------------------------------------------------ SIGKILL and resume


def test_sample_killed_at_random_points_resumes_exactly(tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    ref.mkdir()
    fault_jobs.sample(ref)
    run = tmp_path / "run"
    run.mkdir()
    kills = _kill_at_random_points(_job("sample", str(run), "0.25"), random.Random(5), 0.0, 0.4,
                                   watch=run / "samples.jsonl")
    assert kills >= 2, "the job finished before two kills: make it longer"
    assert _samples(run / "samples.jsonl") == _samples(ref / "samples.jsonl")
    assert len((run / "samples.jsonl").read_text().splitlines()) == len(_samples(ref / "samples.jsonl"))  # no repeats


def test_label_killed_while_sandboxes_run_resumes_exactly_and_leaves_no_process(tmp_path: Path) -> None:
    d = tmp_path
    fault_jobs.sample(d)
    fault_jobs.make_splits(d, limit=4)
    fault_jobs.label_code(d, d / "ref.jsonl")
    kills, rnd = 0, random.Random(11)
    for _ in range(2):
        # slowed (the same rollouts, later): on an idle machine the plain job can end before the first kill
        proc = subprocess.Popen(_job("label-code", str(d), str(d / "run.jsonl"), "2.0"), env=ENV)
        time.sleep(rnd.uniform(2.0, 4.0))
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        gone_by = time.monotonic() + 10  # PR_SET_PDEATHSIG / --die-with-parent: at once, but a busy CPU lags
        while _orphan_sandboxes() and time.monotonic() < gone_by:
            time.sleep(0.2)
        assert _orphan_sandboxes() == []
    subprocess.run(_job("label-code", str(d), str(d / "run.jsonl")), env=ENV, check=True)
    assert kills >= 1, "the job finished before any kill: make it longer"
    assert _labels(d / "run.jsonl") == _labels(d / "ref.jsonl")
    used = sum(int(r.cost["rollouts"]) for r in read_records(d / "run.jsonl", LabeledRecord))
    assert WorkLog(d / "run.jsonl.worklog.sqlite").count() == used  # nothing done twice, nothing lost


@pytest.mark.integration  # no real model, but each restart re-imports torch + transformers (~10 s on 2 cores)
def test_train_killed_at_random_points_resumes_exactly(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from test_prm import _records

    from adaptivestep.prm.model import PRM

    backbone = fault_jobs.make_backbone(tmp_path / "backbone")
    data = _records(tmp_path / "data.jsonl", n=24)
    fault_jobs.train_prm(backbone, data, tmp_path / "ref")
    cmd = _job("train", str(backbone), str(data), str(tmp_path / "run"))
    ckdir = tmp_path / "run" / "checkpoints"

    def steps_saved() -> list[int]:
        return sorted(int(p.name.rsplit("-", 1)[1]) for p in ckdir.glob("checkpoint-*"))

    rnd, killed_after = random.Random(3), []
    for _ in range(3):  # start-up (imports) takes long and varies: kill at a random point after a new checkpoint
        before = steps_saved()
        proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 240
        while proc.poll() is None and steps_saved()[-1:] == before[-1:] and time.monotonic() < deadline:
            time.sleep(0.2)
        if proc.poll() is not None:
            break
        time.sleep(rnd.uniform(0.0, 3.0))  # somewhere in the next step, or while it saves a checkpoint
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_after.append(steps_saved())
    subprocess.run(cmd, env=ENV, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(f"checkpoints on disk after each kill: {killed_after}")
    assert len(killed_after) >= 2 and all(killed_after), killed_after
    ref = PRM.load(tmp_path / "ref").network.state_dict()
    got = PRM.load(tmp_path / "run").network.state_dict()
    assert ref.keys() == got.keys()
    assert [k for k in ref if not torch.equal(ref[k], got[k])] == []


# -------------------------------------------------------------------------------- checker worker killed

SLOW_ADD = Problem(id="slow-add", question="Write add(a, b).", kind="code", entry_point="add",
                   tests="def check(candidate):\n    assert candidate(2, 3) == 5\n")
SLOW_ANSWER = "```python\nimport time\ntime.sleep(2.0)\ndef add(a, b):\n    return a + b\n```"


def _sandbox_children() -> list[int]:
    """Sandboxed interpreters started by this process (directly or under bwrap)."""
    mine = {os.getpid()}
    found = []
    for _ in range(3):  # descendants: walk the tree a few levels down
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid in mine:
                mine.add(int(entry))
    for pid in mine - {os.getpid()}:
        cmd = _cmdline(pid)
        if f" {' '.join(_PY_FLAGS)} " in cmd and not cmd.startswith(shutil.which("bwrap") or "bwrap"):
            found.append(pid)
    return found


@pytest.mark.parametrize("layer", LAYERS)
def test_checker_worker_killed_mid_check_is_rerun_not_mislabelled(layer: str) -> None:
    checker = CodeChecker(timeout_s=8.0, limits=SandboxLimits(os_layer=layer))
    verdicts = []
    t = threading.Thread(target=lambda: verdicts.append(checker.check(SLOW_ADD, SLOW_ANSWER)))
    t.start()
    killed = None
    deadline = time.monotonic() + 20
    while killed is None and time.monotonic() < deadline:
        kids = _sandbox_children()
        if kids:
            time.sleep(0.3)  # mid-check: the program is in its sleep
            os.kill(kids[0], signal.SIGKILL)
            killed = kids[0]
        time.sleep(0.05)
    t.join(30)
    assert killed is not None, "no sandbox process to kill"
    assert verdicts and verdicts[0].correct, verdicts
    assert "re-run after the sandbox was killed from outside" in verdicts[0].reason


# ---------------------------------------------------------------------------- full disk, read-only disk


def _can_mount_tmpfs() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    r = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                       capture_output=True, check=False)
    return r.returncode == 0


LABEL_IN_MOUNT = """
import sys
sys.path.insert(0, {here!r})
import label_job
from fakes import FakeBackend
from adaptivestep.jsonl import DataError
from adaptivestep.label import LabelConfig, label_files
try:
    s = label_files(FakeBackend(), label_job.judge, {{p.id: p for p in label_job.PROBLEMS}}, {inputs!r} + "/samples.jsonl",
                    {inputs!r} + "/splits.jsonl", sys.argv[1], LabelConfig(max_tokens=20, rollouts=4), progress=False,
                    limit=int(sys.argv[2]) if len(sys.argv) > 2 else None)
    print("labelled", s.labelled)
except DataError as e:  # what the CLI prints for it
    print(f"error: {{type(e).__name__}}: {{e}}", file=sys.stderr)
    sys.exit(2)
"""


@pytest.fixture(scope="module")
def label_inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("label-inputs")
    label_job.make_inputs(d)
    label_job.run(d, "ref.jsonl")
    return d


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs root and unshare -m to mount a small tmpfs")
def test_full_disk_and_read_only_output_stop_clearly_and_keep_what_was_logged(
    tmp_path: Path, label_inputs: Path
) -> None:
    script = tmp_path / "label_in_mount.py"
    script.write_text(LABEL_IN_MOUNT.format(here=str(HERE), inputs=str(label_inputs)))
    ref_size = sum(f.stat().st_size for f in label_inputs.glob("ref.jsonl*"))
    saved = tmp_path / "saved"
    saved.mkdir()
    py = f"{sys.executable} {script}"
    # a disk too small for the job: it must stop with a clear error; then the same disk turned read-only
    shell = (
        f"mount -t tmpfs -o size={max(64, ref_size // 2048)}k tmpfs /mnt && "
        f"({py} /mnt/labels.jsonl > {tmp_path}/full.out 2> {tmp_path}/full.err; echo $? > {tmp_path}/full.rc); "
        f"cp -a /mnt/. {saved}/ && mount -o remount,ro /mnt && "
        f"({py} /mnt/labels.jsonl > {tmp_path}/ro.out 2> {tmp_path}/ro.err; echo $? > {tmp_path}/ro.rc)"
    )
    subprocess.run(["unshare", "-m", "sh", "-c", shell], env=ENV, check=True, timeout=300)
    for case, why in (("full", ("ENOSPC", "disk is full")), ("ro", ("EROFS",))):
        rc = int((tmp_path / f"{case}.rc").read_text())
        err = (tmp_path / f"{case}.err").read_text()
        assert rc == 2, (case, err)
        assert "StorageError" in err and any(w in err for w in why), err
        assert "re-run the same command to resume" in err and "Traceback" not in err
    kept = (saved / "labels.jsonl").read_text() if (saved / "labels.jsonl").exists() else ""
    kept_lines = kept.split("\n")[:-1]  # complete lines only: a torn tail is repaired on resume
    kept_rollouts = WorkLog(saved / "labels.jsonl.worklog.sqlite").count()
    assert kept_rollouts > 0  # the disk filled part way through
    # resume on a disk with room: exactly the uninterrupted labels, the kept records and rollouts reused
    for f in ("samples.jsonl", "splits.jsonl"):
        shutil.copy(label_inputs / f, saved / f)
    label_job.run(saved, "labels.jsonl")
    assert _labels(saved / "labels.jsonl") == _labels(label_inputs / "ref.jsonl")
    final_lines = (saved / "labels.jsonl").read_text().splitlines()
    assert final_lines[: len(kept_lines)] == kept_lines  # records written before the fault are kept as they were
    used = sum(int(r.cost["rollouts"]) for r in read_records(saved / "labels.jsonl", LabeledRecord))
    assert WorkLog(saved / "labels.jsonl.worklog.sqlite").count() == used >= kept_rollouts


# ------------------------------------------------------------------------------------- two runs, one output


def test_two_label_runs_on_one_output_refuse_to_interleave(tmp_path: Path, label_inputs: Path) -> None:
    out = tmp_path / "labels.jsonl"
    holder = subprocess.Popen(_job("hold-lock", str(out)), env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputLocked, match=f"pid {holder.pid}.*another process|another process.*pid {holder.pid}"):
            label_files(label_job.FakeBackend(), label_job.judge, {p.id: p for p in label_job.PROBLEMS},
                        label_inputs / "samples.jsonl", label_inputs / "splits.jsonl", out,
                        LabelConfig(max_tokens=20, rollouts=4), progress=False)
        assert not out.exists()  # refused before writing anything
    finally:
        holder.send_signal(signal.SIGKILL)  # a killed holder must not block the next run
        holder.wait()
    for f in ("samples.jsonl", "splits.jsonl"):
        shutil.copy(label_inputs / f, tmp_path / f)
    # two real runs started together: one labels, the other stops with the clear message
    job = [sys.executable, str(HERE / "label_job.py"), str(tmp_path), "labels.jsonl", "0.2"]
    procs = [subprocess.Popen(job, env=ENV, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(), p.stderr.read() if p.stderr else "") for p in procs]
    assert sorted(rc == 0 for rc, _ in results) == [False, True], results
    assert any("OutputLocked" in err and "being written by another process" in err for _, err in results)
    assert _labels(out) == _labels(label_inputs / "ref.jsonl")
    assert len(out.read_text().splitlines()) == len(_labels(out))  # no record written twice


def test_output_lock_is_exclusive_within_one_machine(tmp_path: Path) -> None:
    out = tmp_path / "x.jsonl"
    with output_lock(out) as lock:
        assert lock.read_text().strip() == str(os.getpid())
        r = subprocess.run([sys.executable, "-c", "import sys\nfrom adaptivestep.worklog import output_lock\n"
                            f"with output_lock({str(out)!r}):\n    pass"], env=ENV, capture_output=True, text=True)
        assert r.returncode != 0 and "OutputLocked" in r.stderr
    with output_lock(out):  # released
        pass


# ------------------------------------------------------------------------------------ damaged work log


def _good_log(path: Path, n: int = 400) -> None:
    log = WorkLog(path)
    for i in range(n):
        log.add(Rollout("p", 0, i, 0, 7, i % 2, 10, 3, 0.1, "x" * 50))
    log.close()


def _corrupt(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncated":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif how == "page overwritten":
        page = int.from_bytes(data[16:18], "big") or 65536
        data[2 * page : 3 * page] = random.Random(0).randbytes(page)
        path.write_bytes(bytes(data))
    elif how == "header overwritten":
        path.write_bytes(b"garbage!" * 8 + bytes(data[64:]))
    elif how == "impossible outcome":
        db = sqlite3.connect(path)
        db.execute("UPDATE rollouts SET outcome = 7 WHERE prefix_end = 3")
        db.commit()
        db.close()
    elif how == "not a work log":
        path.unlink()
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE other (x)")
        db.commit()
        db.close()
    else:
        raise ValueError(how)


@pytest.mark.parametrize("how", ["truncated", "page overwritten", "header overwritten", "impossible outcome",
                                 "not a work log"])
def test_damaged_work_log_is_reported_never_trusted(tmp_path: Path, how: str, label_inputs: Path) -> None:
    path = tmp_path / "labels.jsonl.worklog.sqlite"
    _good_log(path)
    assert WorkLog(path).count() == 400  # intact: opens and counts
    _corrupt(path, how)
    with pytest.raises(WorkLogError, match="is damaged"):
        WorkLog(path).count()
    out = tmp_path / "labels.jsonl"
    with pytest.raises(WorkLogError):  # the labelling job stops before it writes a label
        label_files(label_job.FakeBackend(), label_job.judge, {p.id: p for p in label_job.PROBLEMS},
                    label_inputs / "samples.jsonl", label_inputs / "splits.jsonl", out,
                    LabelConfig(max_tokens=20, rollouts=4), progress=False)
    assert not out.exists() or out.read_text() == ""
