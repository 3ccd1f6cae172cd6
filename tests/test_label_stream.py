"""The streaming labelling engine: same labels and rollouts as lock-step rounds, each rollout logged at once."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import label_job  # noqa: E402
from fakes import FakeBackend  # noqa: E402
from stream_fakes import StreamingFakeBackend  # noqa: E402

from adaptivestep.backends.base import GenRequest, SamplingConfig, collect, generate_stream, lockstep_stream  # noqa: E402
from adaptivestep.jsonl import read_records  # noqa: E402
from adaptivestep.label import LabelConfig, label_files  # noqa: E402
from adaptivestep.records import LabeledRecord  # noqa: E402
from adaptivestep.worklog import WorkLog  # noqa: E402

PROBLEMS = {p.id: p for p in label_job.PROBLEMS}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("stream")
    label_job.make_inputs(d)
    return d


def _run(d, out, backend, **cfg):
    label_files(backend, label_job.judge, PROBLEMS, d / "samples.jsonl", d / "splits.jsonl", d / out,
                LabelConfig(max_tokens=20, rollouts=4, **cfg), progress=False)
    recs = list(read_records(d / out, LabeledRecord))
    log = WorkLog(d / (out + ".worklog.sqlite"))
    rows = {}
    for r in recs:
        for key, roll in log.for_sample(r.problem_id, r.sample_index).items():
            rows[(r.problem_id, r.sample_index, *key)] = (roll.outcome, roll.tokens, roll.text)
    log.close()
    return recs, rows


SETTINGS = {
    "exhaustive": {},
    "soft": {"label_type": "soft"},
    "early": {"early_stop": True, "wave": 1},
    "bsearch": {"first_error_search": True},
    "early+bsearch": {"early_stop": True, "wave": 2, "first_error_search": True, "concurrent_samples": 3},
}


@pytest.mark.parametrize("name", SETTINGS)
def test_streaming_equals_lockstep(inputs, name):
    cfg = {**SETTINGS[name], "keep_text": True}
    lock, lock_rows = _run(inputs, f"lock-{name}.jsonl", FakeBackend(), **cfg)
    be = StreamingFakeBackend(slots=3)
    stream, stream_rows = _run(inputs, f"stream-{name}.jsonl", be, **cfg)
    assert be.streams >= 1 and be.admitted_mid_stream > 0  # it did stream: work joined a running batch
    strip = lambda r: (r.problem_id, r.sample_index, r.labels, r.hard_labels, r.soft_labels, r.rollouts,  # noqa: E731
                       r.cost["rollouts"], r.cost["generated_tokens"], r.completions)
    assert [strip(r) for r in stream] == [strip(r) for r in lock]  # same records in the same order
    assert stream_rows == lock_rows and lock_rows  # the same rollouts, token for token


def test_one_stream_for_the_whole_job(inputs):
    be = StreamingFakeBackend(slots=4)
    _run(inputs, "one.jsonl", be, first_error_search=True, concurrent_samples=4)
    assert be.streams == 1


def test_savers_off_use_separate_calls(inputs):
    """--no-batch / --no-kv-reuse keep their meaning: one generate call per rollout / cache dropped per call."""
    be = StreamingFakeBackend(slots=4)
    recs, _ = _run(inputs, "nobatch.jsonl", be, batched=False)
    assert be.streams == sum(int(r.cost["rollouts"]) for r in recs)  # each generate call is one stream


def test_lockstep_stream_reads_requests_appended_between_yields():
    be = FakeBackend()
    cfg = SamplingConfig(max_tokens=5)
    reqs = [GenRequest((1, 2), n=2, seed=3, config=cfg)]
    seen = []
    for r, j, _g in lockstep_stream(be, reqs):
        seen.append((r, j))
        if len(reqs) < 3:
            reqs.append(GenRequest((4, 5, r), n=1, seed=r, config=cfg))
    assert sorted(seen) == [(0, 0), (0, 1), (1, 0), (2, 0)]
    assert be.calls == 2  # one call for what was submitted, one for what came meanwhile


def test_streaming_fake_matches_generate_and_collect_checks_completeness():
    cfg = SamplingConfig(max_tokens=12)
    reqs = [GenRequest((1, 2, 3), n=3, seed=7, config=cfg), GenRequest((4,), n=2, seed=1, first_index=5, config=cfg)]
    ref = FakeBackend().generate(reqs)
    got = collect(generate_stream(StreamingFakeBackend(slots=2), list(reqs)), reqs)
    assert [[g.token_ids for g in row] for row in got] == [[g.token_ids for g in row] for row in ref]
    with pytest.raises(RuntimeError, match="without continuations"):
        collect(iter([(0, 0, ref[0][0])]), reqs)


def test_killed_job_has_logged_every_finished_rollout(inputs, tmp_path):
    """A kill loses only rollouts still decoding: every continuation the backend had finished is in the log
    (bar the one being judged at that instant), long before any sample or round is complete."""
    for f in ("samples.jsonl", "splits.jsonl"):
        (tmp_path / f).write_bytes((inputs / f).read_bytes())
    finished = tmp_path / "finished.txt"
    job = [sys.executable, str(Path(__file__).parent / "label_stream_job.py"), str(tmp_path), "out.jsonl", "0.01",
           str(finished)]
    proc = subprocess.Popen(job, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if finished.exists() and len(finished.read_text().splitlines()) >= 6:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the job ended before the kill: make it longer"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    n_finished = len(finished.read_text().splitlines())
    log = WorkLog(tmp_path / "out.jsonl.worklog.sqlite")
    logged = log.count()
    log.close()
    assert n_finished >= 6
    assert n_finished - 1 <= logged <= n_finished
    # and the job resumes from there to the labels of an uninterrupted run
    label_job.run(tmp_path, "out.jsonl")
    label_job.run(tmp_path, "ref.jsonl")
    key = lambda p: {(r.problem_id, r.sample_index): r.hard_labels for r in read_records(p, LabeledRecord)}  # noqa: E731
    assert key(tmp_path / "out.jsonl") == key(tmp_path / "ref.jsonl")
