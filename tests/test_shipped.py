"""The shipped PRM corpus: gzip JSONL reading, how `prm.corpus` resolves, and the corpus itself."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from adaptivestep.jsonl import DataError, iter_json, read_records
from adaptivestep.prm.shipped import SHIPPED, corpus_dir, resolve_corpus
from adaptivestep.records import LabeledRecord


def test_iter_json_reads_gzip_and_names_a_broken_one(tmp_path: Path) -> None:
    rec = {"prompt": "q", "completions": ["a", "b"], "labels": [1.0, 0.5]}
    p = tmp_path / "x.jsonl.gz"
    p.write_bytes(gzip.compress((json.dumps(rec) + "\n").encode()))
    assert [r.labels for r in read_records(p, LabeledRecord)] == [[1.0, 0.5]]
    bad = tmp_path / "bad.jsonl.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(DataError, match="bad.jsonl.gz"):
        list(iter_json(bad))


def test_resolve_corpus(tmp_path: Path) -> None:
    assert resolve_corpus(None, "gsm8k") is None and resolve_corpus("none", "gsm8k") is None
    assert resolve_corpus("embedded", "humaneval") is None  # nothing shipped for code
    f = tmp_path / "l.jsonl"
    f.write_text("")
    assert resolve_corpus(str(f), "gsm8k") == f
    with pytest.raises(ValueError, match="prm.corpus"):
        resolve_corpus(str(tmp_path / "missing.jsonl"), "gsm8k")


SHIPPED_TASKS = [t for t in SHIPPED if corpus_dir(t) is not None]


@pytest.mark.parametrize("task", SHIPPED_TASKS)
def test_shipped_corpus_is_valid_train_only_and_loads_with_datasets(task: str) -> None:
    d = corpus_dir(task)
    assert d is not None
    recs = list(read_records(d / "labels.jsonl.gz", LabeledRecord))  # validates against the data contract
    assert recs and all(r.problem_id.startswith(f"{task}/train/") for r in recs)
    card = json.loads((d / "card.json").read_text())
    assert card["responses"] >= len({(r.problem_id, r.sample_index) for r in recs})
    assert card["spec"]["split"] == "train"
    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset("json", data_files=str(d / "labels.jsonl.gz"), split="train")
    assert len(ds) == len(recs) and set(ds.column_names) >= {"prompt", "completions", "labels"}


@pytest.mark.parametrize("task", SHIPPED_TASKS)
def test_shipped_corpus_shares_no_question_with_evaluation_sets(task: str) -> None:
    from adaptivestep.tasks import load_tasks

    d = corpus_dir(task)
    assert d is not None
    questions = {r.prompt.strip() for r in read_records(d / "labels.jsonl.gz", LabeledRecord)}
    data = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
    test = load_tasks(task, split="test", data_dir=data if data.exists() else None)
    assert not questions & {p.question.strip() for p in test}


def test_embedded_prm_names_what_is_shipped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from adaptivestep.prm import shipped

    monkeypatch.setattr(shipped, "_root", lambda: tmp_path)  # an install that ships nothing
    with pytest.raises(ValueError, match="ships no trained PRM for task 'gsm8k'"):
        shipped.head_dir("embedded")
    (tmp_path / "gsm8k-easy" / "head").mkdir(parents=True)
    (tmp_path / "gsm8k-easy" / "labels.jsonl.gz").write_bytes(b"")
    assert shipped.head_dir("embedded:gsm8k") == tmp_path / "gsm8k-easy" / "head"
    with pytest.raises(ValueError, match="task 'humaneval'.*shipped: \\['gsm8k'\\]"):
        shipped.head_dir("embedded:humaneval")


def test_the_main_job_splits_at_the_shipped_corpus_tau_only_where_it_trains_on_it() -> None:
    from adaptivestep.config import load_config
    from adaptivestep.pipeline import _shipped_tau
    from adaptivestep.prm.shipped import shipped_tau

    d = corpus_dir("gsm8k")
    if d is None:
        pytest.skip("no shipped gsm8k corpus in this checkout")
    card = json.loads((d / "card.json").read_text())
    assert shipped_tau("embedded", "gsm8k", card["spec"]["break_rate"]) == card["tau"]
    assert shipped_tau("embedded", "gsm8k", card["spec"]["break_rate"] / 2) is None  # another quantile
    assert shipped_tau("none", "gsm8k", card["spec"]["break_rate"]) is None
    assert shipped_tau("embedded", "humaneval", 0.02) is None
    cfg = load_config(None)
    assert cfg.prm.corpus == "embedded" and _shipped_tau(cfg) == card["tau"]
    for change in ({"prm.corpus": "none"}, {"split.method": "newline"}, {"split.tau": 0.1},
                   {"policy.model": "other.gguf"}):
        assert _shipped_tau(load_config(None, overrides=change)) is None, change


def test_prm_corpus_questions_keeps_the_corpus_first_questions(tmp_path: Path) -> None:
    from adaptivestep.config import load_config
    from adaptivestep.pipeline import first_questions_file

    d = corpus_dir("gsm8k")
    assert d is not None
    recs = list(read_records(d / "labels.jsonl.gz", LabeledRecord))
    order = list(dict.fromkeys(r.problem_id for r in recs))
    out = first_questions_file(d / "labels.jsonl.gz", 3, tmp_path / "sub.jsonl")
    sub = list(read_records(out, LabeledRecord))
    assert [r.problem_id for r in sub] == [r.problem_id for r in recs if r.problem_id in order[:3]]
    assert len(sub) > 3 and [r.labels for r in sub] == [r.labels for r in recs[: len(sub)]]
    assert load_config(None).prm.corpus_questions is None  # the default trains on all of it
