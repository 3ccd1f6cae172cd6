"""End to end on the embedded default model (Qwen2.5-Coder-0.5B GGUF): sample, resume, split, label, main job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adaptivestep.jsonl import read_records
from adaptivestep.records import LabeledRecord, Sample, StepSplit, TVDRecord
from adaptivestep.worklog import WorkLog

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "adaptivestep.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, **kw)


def test_sample_resumes_after_kill_and_labels_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "samples.jsonl"
    args = ["sample", "--task", "gsm8k", "--split", "train", "--limit", "3", "--n", "2", "--max-tokens", "96",
            "--batch", "2", "--out", str(out), "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "adaptivestep.cli", *args], cwd=ROOT)
    deadline = time.time() + 240
    while time.time() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 2):
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = len(out.read_text().splitlines())
    assert 0 < partial < 6, "kill the run while it is part way"
    r = _cli(*args)
    assert r.returncode == 0, r.stderr
    assert f"({partial} already there" in r.stdout
    samples = list(read_records(out, Sample))
    assert sorted(s.key for s in samples) == sorted({s.key for s in samples})  # nothing repeated
    assert 5 <= len(samples) <= 6  # 3 problems x 2 (an immediate end-of-text response is not written)
    for s in samples:
        assert all(lp <= 0 for lp in s.logprobs) and len(s.logprobs) == len(s.token_ids)

    split = tmp_path / "split.jsonl"
    r = _cli("split", str(out), "--method", "confidence", "--out", str(split), "--show", "1")
    assert r.returncode == 0, r.stderr
    assert " | " in r.stdout or "1 steps" in r.stdout
    splits = list(read_records(split, StepSplit))
    assert all(sp.threshold is not None and sp.boundaries[-1] == sp.n_tokens for sp in splits)

    labels = tmp_path / "labels.jsonl"
    # 128-token rollouts: the longest prefixes + rollouts pass 256 cached tokens (where batch-dependent
    # attention rounding once made resumed rollouts drift)
    label_args = [str(out), str(split), "--rollouts", "2", "--max-tokens", "128",
                  "--keep-text", "--quiet"]
    r = _cli("label", *label_args, "--out", str(labels))
    assert r.returncode == 0, r.stderr
    recs = list(read_records(labels, LabeledRecord))
    assert len(recs) == len(samples)
    for rec in recs:
        assert len(rec.labels) == len(rec.completions) == len(rec.soft_labels)
        assert "".join(rec.completions).strip()
        assert rec.cost["rollouts"] == 2 * (len(rec.completions) - 1)
    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset("json", data_files=str(labels), split="train")
    assert set(["prompt", "completions", "labels"]) <= set(ds.column_names)
    assert all(isinstance(x, float) for x in ds[0]["labels"])

    # Resumable to the rollout, exactly: the same job killed after its first sample's rollouts are logged and
    # resumed one rollout at a time (so its rollouts are decoded in other batches than above, or alone) gives the
    # same rollouts and labels.
    resumed = tmp_path / "resumed.jsonl"
    log = tmp_path / "resumed.jsonl.worklog.sqlite"
    proc = subprocess.Popen([sys.executable, "-m", "adaptivestep.cli", "label", *label_args, "--out", str(resumed),
                             "--concurrent-samples", "1"], cwd=ROOT)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and _logged(log) == 0:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    total = sum(rec.cost["rollouts"] for rec in recs)
    assert 0 < _logged(log) < total, "kill the run while it is part way"
    r = _cli("label", *label_args, "--out", str(resumed), "--no-batch")  # lone decodes past 256 tokens
    assert r.returncode == 0, r.stderr
    again = list(read_records(resumed, LabeledRecord))
    key = lambda rec: (rec.problem_id, rec.sample_index)  # noqa: E731
    assert sorted(map(key, again)) == sorted(map(key, recs))
    for a, b in zip(sorted(again, key=key), sorted(recs, key=key)):
        assert (a.hard_labels, a.soft_labels, a.rollouts) == (b.hard_labels, b.soft_labels, b.rollouts)
    assert _rollout_texts(log, recs) == _rollout_texts(tmp_path / "labels.jsonl.worklog.sqlite", recs)


def test_main_job_quick(tmp_path: Path) -> None:
    rd = tmp_path / "quick"
    r = _cli("run", "--quick", "--run-dir", str(rd), env=dict(os.environ), timeout=1500)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((rd / "results.json").read_text())
    for key in ("greedy", "tvd", "curves", "train", "prm"):
        assert key in res
    assert {"majority", "prm-min", "oracle"} <= set(res["curves"])
    oracle = res["curves"]["oracle"][-1]["mean"]
    assert all(res["curves"][r][-1]["mean"] <= oracle + 1e-9 for r in res["curves"])  # nothing beats pass@N
    assert (rd / "results.md").read_text().startswith("| method |")
    assert "| greedy |" in r.stdout
    # the claim is a paired difference on the same questions, with its interval
    paired = res["prm_minus_majority"]["prm-min"]
    assert paired["questions"] == res["n_questions"] and paired["lo"] <= paired["diff"] <= paired["hi"]
    assert "| prm-min - majority @ N=4 |" in r.stdout and "TVD - greedy" in r.stdout
    assert "| confidence - majority @ N=4 |" in r.stdout  # the zero-training baseline, paired the same way
    assert set(res["response_auc"]) == {"min", "mean", "last", "prod", "confidence"}
    assert set(res["response_auc_within"]) == set(res["response_auc"])
    from adaptivestep.prm.shipped import corpus_dir

    if corpus_dir("gsm8k") is not None:  # the PRM trains on the shipped corpus beside the run's own labels
        assert res["prm"]["n_extra_records"] > 0
        from adaptivestep.config import QUICK

        subset = list(read_records(rd / "train" / "corpus-subset.jsonl", LabeledRecord))  # --quick: its first questions
        assert len({r.problem_id for r in subset}) == QUICK["prm.corpus_questions"]
        assert res["prm"]["n_extra_records"] <= len(subset)
    # the same command again resumes: nothing regenerated, the same results
    again = _cli("run", "--quick", "--run-dir", str(rd), env=dict(os.environ), timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "PRM already trained" in again.stdout
    res2 = json.loads((rd / "results.json").read_text())
    assert res2["curves"] == res["curves"] and res2["greedy"] == res["greedy"]
    # and the verbs read the run folder: bon on its files gives the pipeline's full-pool accuracies
    assert (rd / "eval" / "problems.jsonl").exists() and (rd / "train" / "problems.jsonl").exists()
    bon = _cli("bon", str(rd / "eval" / "candidates.jsonl"), str(rd / "eval" / "scores.jsonl"),
               "--rules", "majority", "prm-min", "oracle", env=dict(os.environ), timeout=300)
    assert bon.returncode == 0, bon.stderr[-3000:]
    full = json.loads(bon.stdout.strip().splitlines()[-1])
    n = str(res["pool_size"])
    for rule in ("majority", "prm-min", "oracle"):
        assert abs(full[rule][n] - res["curves"][rule][-1]["mean"]) < 1e-9
    # the main job's TVD output is records of the data contract
    tvd_recs = list(read_records(rd / "eval" / "tvd.jsonl", TVDRecord))
    assert len(tvd_recs) == res["tvd"]["n"] and sum(r.tokens for r in tvd_recs) == res["tvd"]["tokens"]
    # and the tvd verb runs on the run's PRM (the same function as the main job's TVD), writing tvd records
    tvd_out = tmp_path / "tvd.jsonl"
    tvd = _cli("tvd", "--limit", "1", "--prm", str(rd / "prm"), "--max-tokens", "48", "--out", str(tvd_out),
               env=dict(os.environ), timeout=900)
    assert tvd.returncode == 0, tvd.stderr[-3000:]
    (rec,) = read_records(tvd_out, TVDRecord)
    assert rec.problem_id == "gsm8k/test/0" and 0 < rec.tokens <= 48 and rec.threshold == 0.55



def _logged(log: Path) -> int:
    """Rollouts in a work log (0 before it exists), opened beside a writer that may be killed."""
    if not log.exists():
        return 0
    wl = WorkLog(log)
    try:
        return wl.count()
    finally:
        wl.close()


def _rollout_texts(log: Path, recs: list[LabeledRecord]) -> dict[tuple, tuple]:
    """Every logged rollout of the labelled samples: key -> (outcome, tokens, text)."""
    wl = WorkLog(log)
    try:
        return {(rec.problem_id, rec.sample_index, *k): (r.outcome, r.tokens, r.text)
                for rec in recs for k, r in wl.for_sample(rec.problem_id, rec.sample_index).items()}
    finally:
        wl.close()
