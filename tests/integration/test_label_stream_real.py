"""The streaming labelling engine on real llama.cpp models: same rollouts and labels as lock-step rounds, and a
killed ``label`` has logged every rollout it finished.

Run with ``pytest -m integration tests/integration/test_label_stream_real.py``.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")

from adaptivestep.backends.base import GenRequest, SamplingConfig, WithoutStreaming
from adaptivestep.backends.llamacpp import LlamaCppBackend
from adaptivestep.checkers import get_checker
from adaptivestep.embedded_models import DEFAULT_MODEL, ModelError, embedded_model_path
from adaptivestep.jsonl import JsonlWriter, read_records
from adaptivestep.label import LabelConfig, label_files
from adaptivestep.records import LabeledRecord, Sample
from adaptivestep.sample import sample_problems
from adaptivestep.split import SplitParams, split_samples
from adaptivestep.tasks import load_tasks, render_prompt
from adaptivestep.worklog import WorkLog

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
THREADS = 1  # see test_llamacpp.py: one thread on a shared CPU


def _path(name: str) -> Path:
    try:
        return embedded_model_path(name)
    except ModelError as e:
        pytest.skip(str(e))


def _inputs(be, d: Path, n_q: int, resp_tokens: int, k: int) -> dict:
    problems = load_tasks("gsm8k", split="train", limit=n_q)
    with JsonlWriter(d / "problems.jsonl", fsync=False) as w:
        w.write_all(problems)
    sample_problems(be, problems, d / "samples.jsonl", n=1, seed=0, render=lambda p: render_prompt(p, be),
                    config=SamplingConfig(max_tokens=resp_tokens), progress=False)
    samples = list(read_records(d / "samples.jsonl", Sample))
    with JsonlWriter(d / "splits.jsonl", fsync=False) as w:
        w.write_all(split_samples(samples, "fixed", SplitParams(k=k)))
    return {p.id: p for p in problems}


def _logged(log: Path) -> dict:
    wl = WorkLog(log)
    try:
        rows = wl._db.execute("SELECT problem_id, sample_index, prefix_end, idx, seed, outcome, tokens, text "
                              "FROM rollouts").fetchall()
    finally:
        wl.close()
    return {r[:5]: r[5:] for r in rows}


def test_generate_stream_takes_requests_mid_stream_and_equals_generate() -> None:
    be = LlamaCppBackend(_path("smollm2-135m"), n_ctx=512, n_seq_max=4, n_threads=THREADS)
    try:
        cfg = SamplingConfig(max_tokens=24)
        p = tuple(be.tokenize(be.chat_prompt("Count to ten.")))
        q = tuple(be.tokenize(be.chat_prompt("Name a fruit.")))
        extra = [GenRequest(p, n=2, seed=1, first_index=3, config=cfg), GenRequest(q, n=3, seed=2, config=cfg)]
        reqs = [GenRequest(p, n=3, seed=1, config=cfg)]
        every = reqs + extra
        got, order = {}, []
        for r, j, g in be.generate_stream(reqs):
            got[(r, j)] = g
            order.append((r, j))
            if extra:
                reqs.append(extra.pop(0))  # submitted while the others are still decoding
        assert len(order) == 8 and order[0][0] == 0
        be.reset_cache()
        ref = be.generate(every)
    finally:
        be.close()
    for r, gens in enumerate(ref):
        for j, g in enumerate(gens):
            assert (got[(r, j)].token_ids, got[(r, j)].logprobs) == (g.token_ids, g.logprobs)
    # request 1 continues request 0's stream from index 3: the same tokens as a longer request 0 would draw
    assert ref[1][0].token_ids != ref[0][0].token_ids


@pytest.mark.parametrize("model", ["smollm2-135m", DEFAULT_MODEL])
def test_streaming_equals_lockstep_on_real_model(tmp_path: Path, model: str) -> None:
    """Continuous batching changes which rollouts share a decode call and when plans advance; with exact mode
    every rollout's tokens, every label and every rollout text equal the lock-step engine's."""
    be = LlamaCppBackend(_path(model), n_ctx=1024, n_seq_max=8, n_threads=THREADS)
    try:
        problems = _inputs(be, tmp_path, n_q=3, resp_tokens=64, k=16)
        checker = get_checker("math")
        judge = lambda p, t: checker.check(p, t).correct  # noqa: E731
        cfg = LabelConfig(rollouts=4, max_tokens=40, early_stop=True, wave=2, first_error_search=True,
                          keep_text=True)
        out = {}
        for mode, backend in (("stream", be), ("lockstep", WithoutStreaming(be))):
            be.reset_cache()
            f = tmp_path / f"{mode}.jsonl"
            label_files(backend, judge, problems, tmp_path / "samples.jsonl", tmp_path / "splits.jsonl", f, cfg,
                        progress=False)
            out[mode] = ([(r.problem_id, r.sample_index, r.hard_labels, r.soft_labels, r.rollouts,
                           r.cost["generated_tokens"]) for r in read_records(f, LabeledRecord)],
                         _logged(tmp_path / f"{mode}.jsonl.worklog.sqlite"))
    finally:
        be.close()
    assert len(out["stream"][0]) == 3
    assert out["stream"][1], "no rollouts: the check would be empty"
    assert out["stream"] == out["lockstep"]


def test_label_killed_mid_job_has_logged_its_finished_rollouts(tmp_path: Path) -> None:
    """Exhaustive labelling of all samples at once used to be one lock-step round: nothing was logged until
    every rollout of the job had finished. Streaming logs each rollout as it finishes, so a kill part way
    leaves some (not all) in the log, and the resumed job repeats none of them."""
    model = str(_path("smollm2-135m"))
    be = LlamaCppBackend(model, n_ctx=1024, n_seq_max=8, n_threads=THREADS)
    try:
        _inputs(be, tmp_path, n_q=3, resp_tokens=48, k=12)
    finally:
        be.close()
    out, log = tmp_path / "labels.jsonl", tmp_path / "labels.jsonl.worklog.sqlite"
    args = [sys.executable, "-m", "adaptivestep.cli", "label", str(tmp_path / "samples.jsonl"),
            str(tmp_path / "splits.jsonl"), "--problems", str(tmp_path / "problems.jsonl"), "--rollouts", "4",
            "--max-tokens", "64",
            "--concurrent-samples", "8", "--model", model, "--threads", str(THREADS), "--quiet", "--out", str(out)]

    def count() -> int:
        if not log.exists():
            return 0
        with sqlite3.connect(str(log), timeout=30) as db:
            try:
                return int(db.execute("SELECT COUNT(*) FROM rollouts").fetchone()[0])
            except sqlite3.OperationalError:  # table not created yet
                return 0

    proc = subprocess.Popen(args, cwd=ROOT)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and count() < 2:
            time.sleep(0.1)
        assert proc.poll() is None, "the job ended before the kill"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    at_kill = count()
    r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    recs = list(read_records(out, LabeledRecord))
    total = sum(int(rec.cost["rollouts"]) for rec in recs)
    assert 2 <= at_kill < total  # lock-step: 0 until all `total` were done at once
    assert count() == total  # nothing repeated or lost

