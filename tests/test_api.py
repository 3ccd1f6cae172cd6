"""The public API (``import adaptivestep``), the one-function-per-operation layer the verbs and the main job
share, and the output records they write. Fake backends only: no model."""

import json
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fakes import FakeBackend  # noqa: E402

import adaptivestep  # noqa: E402
from adaptivestep.cli import main  # noqa: E402
from adaptivestep.jsonl import JsonlWriter, read_records  # noqa: E402
from adaptivestep.label import LabelConfig, label_files, label_samples  # noqa: E402
from adaptivestep.options import field_help  # noqa: E402
from adaptivestep.records import (  # noqa: E402
    BonChoice,
    ErrorRecord,
    LabeledRecord,
    Problem,
    Sample,
    StepRollouts,
    StepScores,
    StepSplit,
    TVDRecord,
)
from adaptivestep.sample import SampleConfig, generate_samples, sample_set  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TORCH_NAMES = {"PRM", "train_prm"}


def test_split_does_not_import_torch():
    code = ("import sys, adaptivestep; adaptivestep.split_samples; adaptivestep.label_samples; "
            "adaptivestep.tvd_problems; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_public_name_resolves():
    for name in adaptivestep.__all__:
        if name in TORCH_NAMES:
            continue
        assert getattr(adaptivestep, name) is not None, name
    with pytest.raises(AttributeError):
        adaptivestep.no_such_thing  # noqa: B018


def _judge(problem, text):
    nums = re.findall(r"\d", text)
    return bool(nums) and nums[-1] == problem.answer


PROBLEMS = [Problem(id=f"p{i}", question=f"q{i} 1+{i}=", kind="math", answer=str(i % 10)) for i in range(4)]


def _fixed_splits(samples):
    out = []
    for s in samples:
        n = len(s.token_ids)
        out.append(StepSplit(s.problem_id, s.sample_index, "fixed", sorted({*range(4, n, 4), n}), n))
    return out


def test_in_memory_sampling_and_labelling_equal_the_file_based_ones(tmp_path):
    cfg = SampleConfig(n=3, max_tokens=30, seed=1)
    mem = generate_samples(FakeBackend(), PROBLEMS, cfg)
    sample_set(FakeBackend(), PROBLEMS, tmp_path / "samples.jsonl", cfg, progress=False)
    on_disk = list(read_records(tmp_path / "samples.jsonl", Sample))
    as_json = lambda recs: [json.loads(json.dumps(r.to_dict())) for r in recs]
    assert as_json(mem) == as_json(on_disk)
    assert [p.id for p in read_records(tmp_path / "problems.jsonl", Problem)] == [p.id for p in PROBLEMS]

    splits = _fixed_splits(mem)
    with JsonlWriter(tmp_path / "splits.jsonl") as w:
        w.write_all(splits)
    lcfg = LabelConfig(rollouts=3, max_tokens=20, first_error_search=True, early_stop=True)
    recs = label_samples(FakeBackend(), PROBLEMS, mem, splits, lcfg, judge=_judge)
    label_files(FakeBackend(), _judge, {p.id: p for p in PROBLEMS}, tmp_path / "samples.jsonl",
                tmp_path / "splits.jsonl", tmp_path / "labels.jsonl", lcfg, progress=False)
    from_file = list(read_records(tmp_path / "labels.jsonl", LabeledRecord))
    strip = lambda r: {k: v for k, v in r.to_dict().items() if k != "cost"}  # cost holds wall times
    assert all(isinstance(r, LabeledRecord) for r in recs)
    assert [strip(r) for r in recs] == [strip(r) for r in from_file]
    assert all(isinstance(x, StepRollouts) for r in from_file for x in r.rollouts)


def test_label_failures_are_error_records(tmp_path):
    mem = generate_samples(FakeBackend(), PROBLEMS[:2], SampleConfig(n=1, max_tokens=20))
    no_gold = [Problem(id=p.id, question=p.question, kind="math") for p in PROBLEMS[:1]] + PROBLEMS[1:2]
    out = label_samples(FakeBackend(), no_gold, mem, _fixed_splits(mem), LabelConfig(rollouts=1, max_tokens=8),
                        judge=_judge)
    assert isinstance(out[0], ErrorRecord) and "no gold answer" in out[0].error and out[0].stage == "label"
    assert isinstance(out[1], LabeledRecord)
    ErrorRecord.from_dict(json.loads(json.dumps(out[0].to_dict())))


def test_labelled_record_rollouts_round_trip_as_step_rollouts():
    d = {"prompt": "q", "completions": ["a", "b"], "labels": [1.0, 0.0],
         "rollouts": [{"outcomes": [1, 0], "seeds": [7], "tokens": 9, "inferred": False, "final": False},
                      {"outcomes": [], "seeds": [], "tokens": 0, "inferred": False, "final": True}]}
    r = LabeledRecord.from_dict(d)
    assert r.rollouts[0] == StepRollouts([1, 0], [7], 9, False, False) and r.rollouts[1].final
    assert r.to_dict()["rollouts"] == d["rollouts"]  # the same JSON as the dicts written before


@pytest.mark.parametrize("cls", ["ProblemSet", "SampleConfig", "LabelConfig", "TrainConfig", "SplitParams",
                                 "TVDConfig", "PolicyConfig"])
def test_every_option_dataclass_documents_every_field(cls):
    # CLI help is read from these docstrings: a field without a "name: meaning" line would have no help
    c = getattr(adaptivestep, cls)
    docs = field_help(c)
    assert {f.name for f in fields(c)} <= set(docs), set(f.name for f in fields(c)) - set(docs)
    assert all(len(v) > 5 for v in docs.values())


def _run_files(tmp_path):
    sample_set(FakeBackend(), PROBLEMS, tmp_path / "samples.jsonl", SampleConfig(n=3, max_tokens=30), progress=False)
    samples = list(read_records(tmp_path / "samples.jsonl", Sample))
    with JsonlWriter(tmp_path / "scores.jsonl") as w:
        for s in samples:
            if (s.problem_id, s.sample_index) != ("p0", 0):  # one unscored candidate
                w.write(StepScores(s.problem_id, s.sample_index, [0.5, (s.sample_index + 1) / 4]))
    return samples


def test_bon_verb_writes_bon_choice_records(tmp_path, capsys):
    samples = _run_files(tmp_path)
    out = tmp_path / "choices.jsonl"
    assert main(["bon", str(tmp_path / "samples.jsonl"), str(tmp_path / "scores.jsonl"), "--rules", "prm-last",
                 "majority", "--resamples", "5", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "1 candidate(s) have no score" in text
    choices = list(read_records(out, BonChoice))
    assert len(choices) == 2 * len(PROBLEMS)
    by = {(c.problem_id, c.rule): c for c in choices}
    assert by[("p1", "prm-last")].chosen == 2  # the highest last-step score
    assert by[("p0", "prm-last")].skipped == [0] and by[("p0", "prm-last")].chosen != 0
    assert all(c.pool_size == 3 for c in choices)
    key = {s.key: s for s in samples}
    checker = adaptivestep.get_checker("math")
    probs = {p.id: p for p in PROBLEMS}
    for c in choices:  # the verdict recorded is the chosen candidate's
        assert c.correct == checker.check(probs[c.problem_id], key[(c.problem_id, c.chosen)].text).correct
    curves = json.loads(text.strip().splitlines()[-1])
    assert set(curves) == {"prm-last", "majority"}


class _LengthScorer:
    """Prefers the candidate step with the most digits (deterministic, no model)."""

    def score_batch(self, items):
        return [[min(1.0, sum(ch.isdigit() for ch in "".join(steps)) / 10)] * max(1, len(steps))
                for _, steps in items]


def test_tvd_verb_writes_tvd_records_and_resumes(tmp_path, capsys, monkeypatch):
    import adaptivestep.cli as cli

    pfile = tmp_path / "problems.jsonl"
    with JsonlWriter(pfile) as w:
        w.write_all(PROBLEMS[:2])
    monkeypatch.setattr(cli, "_open_backend", lambda a: FakeBackend())
    monkeypatch.setattr(cli, "_load_scorer", lambda a: _LengthScorer())
    out = tmp_path / "tvd.jsonl"
    args = ["tvd", "--task", str(pfile), "--prm", "fake", "--out", str(out), "--max-tokens", "12", "--k", "3"]
    assert main(args) == 0
    first = capsys.readouterr().out
    recs = list(read_records(out, TVDRecord))
    assert [r.problem_id for r in recs] == ["p0", "p1"]
    assert all(r.threshold == 0.55 and r.k == 3 and r.prm == "fake" for r in recs)  # math: the paper's threshold
    assert all(r.boundaries[-1] == len(r.token_ids) for r in recs if r.token_ids)
    assert re.search(r"TVD: \d/2 correct this run", first)
    assert main(args) == 0  # resumes: nothing decoded again
    assert "0/0 correct this run" in capsys.readouterr().out
    assert len(list(read_records(out, TVDRecord))) == 2
