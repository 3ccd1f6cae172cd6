"""The Ray actor pool on a local two-node Ray cluster (two ``ray start`` nodes of one CPU each, loopback only):
a labelling job whose worker actor is SIGKILLed mid-job gives the labels of a single-process run, with nothing
lost or repeated in the work log.

Run with ``pytest -m integration tests/integration/test_ray_pool.py``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")
ray = pytest.importorskip("ray")

from adaptivestep.backends.base import SamplingConfig  # noqa: E402
from adaptivestep.backends.llamacpp import LlamaCppBackend  # noqa: E402
from adaptivestep.checkers import get_checker  # noqa: E402
from adaptivestep.embedded_models import ModelError, embedded_model_path  # noqa: E402
from adaptivestep.jsonl import JsonlWriter, read_records  # noqa: E402
from adaptivestep.label import LabelConfig, label_files  # noqa: E402
from adaptivestep.records import LabeledRecord, Sample  # noqa: E402
from adaptivestep.sample import sample_problems  # noqa: E402
from adaptivestep.split import SplitParams, split_samples  # noqa: E402
from adaptivestep.tasks import load_tasks, render_prompt  # noqa: E402
from adaptivestep.worklog import WorkLog  # noqa: E402

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))
# a throwaway loopback cluster: no token auth (Ray 2.60's `ray start` otherwise expects the token of whichever
# cluster last wrote ~/.ray/auth_token, and the driver here would be refused)
os.environ["RAY_AUTH_MODE"] = "disabled"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_cpus(address: str, n: int, timeout_s: float) -> None:
    code = (f"import ray, time; ray.init(address={address!r}, log_to_driver=False); t = time.time()\n"
            f"while ray.cluster_resources().get('CPU', 0) < {n} and time.time() - t < {timeout_s}: time.sleep(0.5)\n"
            f"raise SystemExit(0 if ray.cluster_resources().get('CPU', 0) >= {n} else 1)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=timeout_s + 60)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two Ray nodes of one CPU each on this machine; each ``ray start --block`` leads its own process group,
    which teardown ends by its id."""
    port = _free_port()
    address = f"127.0.0.1:{port}"
    temp = tmp_path_factory.mktemp("ray")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--block", "--disable-usage-stats"]
    procs = [subprocess.Popen([RAY, "start", "--head", "--port", str(port), "--include-dashboard", "false",
                               "--temp-dir", str(temp), *common], env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        _wait_cpus(address, 1, 120)
        procs.append(subprocess.Popen([RAY, "start", "--address", address, *common], env=env,
                                      start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait_cpus(address, 2, 120)
        yield address
    finally:
        if ray.is_initialized():
            ray.shutdown()
        for p in reversed(procs):
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=30)


def _path(name: str) -> Path:
    try:
        return embedded_model_path(name)
    except ModelError as e:
        pytest.skip(str(e))


def _job_inputs(d: Path, model: Path) -> dict:
    problems = load_tasks("gsm8k", split="train", limit=3)
    be = LlamaCppBackend(model, n_ctx=1024, n_seq_max=8, n_threads=1)
    try:
        sample_problems(be, problems, d / "samples.jsonl", n=1, seed=0, render=lambda p: render_prompt(p, be),
                        config=SamplingConfig(max_tokens=48), progress=False)
    finally:
        be.close()
    samples = list(read_records(d / "samples.jsonl", Sample))
    with JsonlWriter(d / "splits.jsonl", fsync=False) as w:
        w.write_all(split_samples(samples, "fixed", SplitParams(k=12)))
    return {p.id: p for p in problems}


CFG = LabelConfig(rollouts=4, max_tokens=40, keep_text=True)


def _judge():
    checker = get_checker("math")
    return lambda p, t: checker.check(p, t).correct


def _label(backend, problems, d: Path, out: str) -> tuple[list, dict]:
    label_files(backend, _judge(), problems, d / "samples.jsonl", d / "splits.jsonl", d / out, CFG, progress=False)
    recs = [(r.problem_id, r.sample_index, r.hard_labels, r.soft_labels, r.rollouts)
            for r in read_records(d / out, LabeledRecord)]
    wl = WorkLog(d / (out + ".worklog.sqlite"))
    try:
        rows = wl._db.execute("SELECT problem_id, sample_index, prefix_end, idx, seed, outcome, tokens, text "
                              "FROM rollouts ORDER BY 1, 2, 3, 4").fetchall()
    finally:
        wl.close()
    return recs, rows


def test_killed_actor_is_retried_and_labels_equal_single_process(cluster, tmp_path: Path) -> None:
    from adaptivestep.backends.ray_pool import RayPoolBackend

    model = _path("smollm2-135m")
    problems = _job_inputs(tmp_path, model)
    single = LlamaCppBackend(model, n_ctx=1024, n_seq_max=8, n_threads=1)
    try:
        ref_recs, ref_rows = _label(single, problems, tmp_path, "single.jsonl")
    finally:
        single.close()
    assert ref_rows

    pool = RayPoolBackend("llamacpp", str(model), address=cluster, actors=2, bundle=4, n_ctx=1024, n_seq_max=8)
    try:
        first_pids = list(pool.pids)
        assert len(set(first_pids)) == 2
        result: dict = {}

        def job() -> None:
            try:
                result["out"] = _label(pool, problems, tmp_path, "ray.jsonl")
            except BaseException as e:  # reported by the assertion below
                result["error"] = e

        t = threading.Thread(target=job, daemon=True)
        t.start()
        log = tmp_path / "ray.jsonl.worklog.sqlite"
        deadline = time.time() + 300
        while time.time() < deadline and t.is_alive():
            if log.exists() and _count(log) >= 4:
                break
            time.sleep(0.1)
        assert t.is_alive(), f"the job ended before the kill: {result}"
        killed_at = _count(log)
        os.kill(first_pids[0], signal.SIGKILL)
        t.join(timeout=600)
        assert not t.is_alive(), "the job did not finish after its actor was killed"
        assert "error" not in result, repr(result.get("error"))
        assert killed_at < len(ref_rows)
        new_pids = ray.get([a.ready.remote() for a in pool._actors], timeout=120)
        assert new_pids[0] != first_pids[0]  # Ray restarted the killed actor
    finally:
        pool.close()
    recs, rows = result["out"]
    assert recs == ref_recs
    assert rows == ref_rows  # every rollout once, token for token the single process's


def _count(log: Path) -> int:
    import sqlite3

    with sqlite3.connect(str(log), timeout=30) as db:
        try:
            return int(db.execute("SELECT COUNT(*) FROM rollouts").fetchone()[0])
        except sqlite3.OperationalError:
            return 0


def test_score_on_the_cluster_equals_scoring_in_process(cluster, tmp_path: Path) -> None:
    """`score --ray ADDRESS`: two actors, each holding the shipped PRM, score chunks of 1 response; the driver
    writes the same step scores, in the same order, as `score` in this process."""
    import json

    from adaptivestep.cli import main

    problems = _job_inputs(tmp_path, _path("smollm2-135m"))
    with JsonlWriter(tmp_path / "problems.jsonl", fsync=False) as w:
        w.write_all(problems.values())
    common = ["score", str(tmp_path / "samples.jsonl"), "--splits", str(tmp_path / "splits.jsonl"), "--prm", "embedded"]
    assert main([*common, "--out", str(tmp_path / "local.jsonl")]) == 0
    assert main([*common, "--out", str(tmp_path / "ray.jsonl"), "--ray", cluster, "--ray-actors", "2",
                 "--batch", "1"]) == 0
    local, remote = ([json.loads(x) for x in (tmp_path / f).read_text().splitlines()] for f in ("local.jsonl", "ray.jsonl"))
    assert len(local) == len(problems)
    assert [(r["problem_id"], r["sample_index"]) for r in remote] == [(r["problem_id"], r["sample_index"]) for r in local]
    for a, b in zip(local, remote):
        assert len(a["scores"]) == len(b["scores"]) > 0
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-5)
