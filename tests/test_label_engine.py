import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import label_job  # noqa: E402

from adaptivestep.jsonl import read_records  # noqa: E402
from adaptivestep.records import LabeledRecord, Sample  # noqa: E402
from adaptivestep.worklog import WorkLog  # noqa: E402


def _labels(path):
    return {(r.problem_id, r.sample_index): (r.hard_labels, r.soft_labels) for r in read_records(path, LabeledRecord)}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("label")
    label_job.make_inputs(d)
    label_job.run(d, "exhaustive.jsonl")
    return d


def test_exhaustive_records_are_valid(inputs):
    recs = list(read_records(inputs / "exhaustive.jsonl", LabeledRecord))
    n_splits = sum(1 for _ in read_records(inputs / "splits.jsonl", __import__("adaptivestep.records").records.StepSplit))
    assert len(recs) == n_splits >= 10
    texts = {(s.problem_id, s.sample_index): s.text for s in read_records(inputs / "samples.jsonl", Sample)}
    for r in recs:
        assert len(r.labels) == len(r.completions) == len(r.soft_labels)
        # steps concatenate to the response (which may be empty: a sample can start with EOS)
        assert "".join(r.completions) == texts[(r.problem_id, r.sample_index)]
        assert all(isinstance(x, float) and 0.0 <= x <= 1.0 for x in r.soft_labels)
        assert r.labels[-1] == (1.0 if r.final_correct else 0.0)
        inner = r.rollouts[:-1]
        assert all(len(m.outcomes) == 4 for m in inner)
        assert r.cost["rollouts"] == 4 * (len(r.completions) - 1)
    # the toy task is hard enough that both labels occur
    every = [x for r in recs for x in r.hard_labels]
    assert 0.0 in every and 1.0 in every


def test_soft_label_type_puts_fractions_in_labels(inputs):
    label_job.run(inputs, "soft.jsonl", label_type="soft", seed=0)
    recs = list(read_records(inputs / "soft.jsonl", LabeledRecord))
    assert all(r.labels == r.soft_labels for r in recs)
    assert any(0.0 < x < 1.0 for r in recs for x in r.labels)


def test_early_stop_gives_exhaustive_hard_labels_with_fewer_rollouts(inputs):
    label_job.run(inputs, "early.jsonl", early_stop=True, wave=1)
    ex, early = _labels(inputs / "exhaustive.jsonl"), _labels(inputs / "early.jsonl")
    assert {k: v[0] for k, v in ex.items()} == {k: v[0] for k, v in early.items()}
    cost = lambda p: sum(r.cost["rollouts"] for r in read_records(p, LabeledRecord))  # noqa: E731
    assert cost(inputs / "early.jsonl") < cost(inputs / "exhaustive.jsonl")


def test_first_error_search_is_cheaper_and_labels_last_step_by_answer(inputs):
    label_job.run(inputs, "bsearch.jsonl", first_error_search=True)
    for r in read_records(inputs / "bsearch.jsonl", LabeledRecord):
        assert r.labels[-1] == (1.0 if r.final_correct else 0.0)
        if r.final_correct:
            assert r.cost["rollouts"] == 0 and set(r.labels) == {1.0}
        # monotone by construction: no 1 after a 0
        assert r.labels == sorted(r.labels, reverse=True)


def test_unbatched_and_no_kv_give_identical_labels(inputs):
    label_job.run(inputs, "plain.jsonl", batched=False, kv_reuse=False)
    assert _labels(inputs / "plain.jsonl") == _labels(inputs / "exhaustive.jsonl")


def test_killed_and_resumed_equals_uninterrupted(inputs, tmp_path):
    d = tmp_path
    for f in ("samples.jsonl", "splits.jsonl"):
        (d / f).write_bytes((inputs / f).read_bytes())
    rnd = random.Random(0)
    job = [sys.executable, str(Path(__file__).parent / "label_job.py"), str(d), "resumed.jsonl", "0.5"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    kills, partial = 0, []
    for _ in range(8):
        proc = subprocess.Popen(job, env=env)
        time.sleep(rnd.uniform(0.8, 2.0))  # python + numpy start up in ~1 s, then rollouts run
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        out = d / "resumed.jsonl"
        partial.append(len(out.read_text().splitlines()) if out.exists() else 0)
    subprocess.run(job, env=env, check=True)
    assert _labels(d / "resumed.jsonl") == _labels(inputs / "exhaustive.jsonl")
    # no rollout repeated: the log holds exactly one row per rollout used
    log = WorkLog(d / "resumed.jsonl.worklog.sqlite")
    used = sum(int(r.cost["rollouts"]) for r in read_records(d / "resumed.jsonl", LabeledRecord))
    assert log.count() == used
    assert kills >= 1, "the job finished before any kill: make it longer"


def test_split_that_does_not_match_samples_is_reported(inputs, tmp_path):
    from adaptivestep.jsonl import JsonlWriter
    from adaptivestep.jsonl import read_records as rr
    from adaptivestep.records import StepSplit

    sp = next(iter(rr(inputs / "splits.jsonl", StepSplit)))
    bad = StepSplit(sp.problem_id, sp.sample_index, "fixed", [1, sp.n_tokens + 5], sp.n_tokens + 5)
    with JsonlWriter(tmp_path / "splits.jsonl") as w:
        w.write(bad)
    (tmp_path / "samples.jsonl").write_bytes((inputs / "samples.jsonl").read_bytes())
    label_job.run(tmp_path, "out.jsonl")
    errs = (tmp_path / "out.jsonl.errors.jsonl").read_text()
    assert "does not match" in errs
    assert not (tmp_path / "out.jsonl").read_text().strip()


def test_concurrent_samples_do_not_change_labels(inputs):
    label_job.run(inputs, "one-at-a-time.jsonl", concurrent_samples=1, first_error_search=True)
    label_job.run(inputs, "grouped.jsonl", concurrent_samples=5, first_error_search=True)
    assert _labels(inputs / "one-at-a-time.jsonl") == _labels(inputs / "grouped.jsonl")


def test_saver_replayed_from_exhaustive_log_equals_real_run(inputs, tmp_path):
    """bench label-cost replays saver settings from the exhaustive work log: same labels and cost, no decoding."""
    from fakes import FakeBackend

    from adaptivestep.bench.label_cost import _label

    problems = {p.id: p for p in label_job.PROBLEMS}
    splits = inputs / "splits.jsonl"
    (tmp_path / "samples.jsonl").write_bytes((inputs / "samples.jsonl").read_bytes())
    be = FakeBackend()
    base = {"rollouts": 4, "max_tokens": 20}
    ref, _, ref_log = _label(be, label_job.judge, problems, tmp_path, splits, "exhaustive", **base)
    saver = {"early_stop": True, "wave": 1, "first_error_search": True}
    real, _, _ = _label(FakeBackend(), label_job.judge, problems, tmp_path, splits, "real", **base, **saver)
    replay_be = FakeBackend()
    replayed, _, _ = _label(replay_be, label_job.judge, problems, tmp_path, splits, "replay", replay_from=ref_log,
                            **base, **saver)
    assert replay_be.calls == 0  # every rollout came from the log
    key = lambda r: (r.problem_id, r.sample_index)  # noqa: E731
    got = {key(r): (r.hard_labels, r.cost["rollouts"], r.cost["generated_tokens"]) for r in replayed}
    assert got == {key(r): (r.hard_labels, r.cost["rollouts"], r.cost["generated_tokens"]) for r in real}
    assert sum(r.cost["rollouts"] for r in real) < sum(r.cost["rollouts"] for r in ref)
