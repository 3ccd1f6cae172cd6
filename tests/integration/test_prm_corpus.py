"""`bench corpus --quick` builds a real labelled corpus (the 0.5B policy, GSM8K train) and `bench prm-quality
--quick` measures a PRM on it end to end: the path that builds and judges the shipped corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("llama_cpp")

from adaptivestep.cli import main
from adaptivestep.embedded_models import ModelError, embedded_model_path
from adaptivestep.jsonl import read_records
from adaptivestep.records import LabeledRecord, Problem

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_corpus_then_prm_quality(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("qwen2.5-coder-0.5b", "smollm2-135m"):
        try:
            embedded_model_path(name)
        except ModelError as e:
            pytest.skip(str(e))
    if not (DATA / "gsm8k" / "train.jsonl").is_file():
        pytest.skip("../shared/data is not there")
    out = tmp_path / "corpus"
    assert main(["bench", "corpus", "--quick", "--data-dir", str(DATA), "--out-dir", str(out), "--threads", "2",
                 "--no-label"]) == 0  # a sampling-only run first: its cost stays in the card's history
    pool = _last_json(capsys.readouterr().out)
    assert pool["responses"] == 4 and "labels_confidence" not in pool and len(pool["builds"]) == 1
    assert main(["bench", "corpus", "--quick", "--data-dir", str(DATA), "--out-dir", str(out), "--threads", "2",
                 "--newline-questions", "1"]) == 0
    card = _last_json(capsys.readouterr().out)
    assert card["this_run"]["sample_new_tokens"] == 0 and len(card["builds"]) == 2
    assert card["questions"] == 2 and card["responses"] == 4 and 0 < card["tau"] < 1
    assert card["labels_confidence"]["responses"] == 4 and card["labels_confidence"]["rollouts"] > 0
    first = next(iter(read_records(out / "problems.jsonl", Problem))).id  # the baseline labels a prefix of questions
    assert {r.problem_id for r in read_records(out / "labels-newline.jsonl", LabeledRecord)} == {first}
    assert card["labels_newline"]["responses"] == 2
    problems = {p.id for p in read_records(out / "problems.jsonl", Problem)}
    assert all(p.startswith("gsm8k/train/") for p in problems)  # never an evaluation question
    recs = list(read_records(out / "labels-confidence.jsonl", LabeledRecord))
    assert {r.problem_id for r in recs} == problems
    # a second run resumes: nothing new sampled
    assert main(["bench", "corpus", "--quick", "--data-dir", str(DATA), "--out-dir", str(out), "--threads", "2"]) == 0
    assert _last_json(capsys.readouterr().out)["this_run"]["sample_new_tokens"] == 0
    assert main(["bench", "prm-quality", "--quick", "--corpus", str(out)]) == 0
    res = _last_json(capsys.readouterr().out)
    assert res["responses"] == 4
    assert main(["bench", "prm-quality", "--quick", "--corpus", str(out), "--saver", "first-error",
                 "--unregularised"]) == 0
    fes = _last_json(capsys.readouterr().out)
    assert fes["responses"] == 4 and fes["label_tokens"] <= res["label_tokens"]  # a replay never costs more
    # --ship: the folder the package ships, from the same corpus (resumed: nothing rebuilt)
    ship, quality = tmp_path / "ship", tmp_path / "quality.json"
    assert main(["bench", "prm-quality", "--quick", "--corpus", str(out), "--out", str(quality)]) == 0
    capsys.readouterr()
    assert main(["bench", "corpus", "--quick", "--data-dir", str(DATA), "--out-dir", str(out), "--threads", "2",
                 "--ship", str(ship), "--ship-quality", str(quality)]) == 0
    shipped = json.loads((ship / "card.json").read_text())
    assert shipped["head"]["train_steps"] == sum(len(r.labels) for r in recs) and "--ship" in shipped["head"]["command"]
    assert shipped["quality"]["responses"] == 4
    assert not (ship / "head" / "tokenizer.json").exists()  # an embedded backbone's tokenizer is not copied
    assert [r.labels for r in read_records(ship / "labels.jsonl.gz", LabeledRecord)] == [r.labels for r in recs]
    from adaptivestep.prm.model import PRM

    scores = PRM.load(ship / "head").score(recs[0].prompt, recs[0].completions)
    assert len(scores) == len(recs[0].completions) and all(0.0 < x < 1.0 for x in scores)
    auc = res["confidence_mean_response_auc_min"]
    assert auc is None or auc != auc or 0.0 <= auc <= 1.0  # nan when the 4 responses share one outcome
    # the shipped layout (labels + samples) runs too: the same labels, rollout cost and confidence rows
    cache = tmp_path / "cache"
    assert main(["bench", "prm-quality", "--quick", "--corpus", str(ship), "--cache", str(cache)]) == 0
    from_ship = _last_json(capsys.readouterr().out)
    assert from_ship["responses"] == 4 and from_ship["label_tokens"] == res["label_tokens"]
    assert from_ship["confidence_mean_response_auc_min"] == res["confidence_mean_response_auc_min"]  # the same log-probs
    assert any(cache.glob("features-*.npz"))
    # a corpus seeded from the shipped folder resumes it: nothing re-sampled, nothing re-labelled
    seeded = tmp_path / "seeded"
    assert main(["bench", "corpus", "--quick", "--data-dir", str(DATA), "--out-dir", str(seeded), "--threads", "2",
                 "--seed-from", str(ship)]) == 0
    again = _last_json(capsys.readouterr().out)
    assert again["this_run"]["sample_new_tokens"] == 0 and again["tau"] == card["tau"]
    assert again["labels_confidence"]["responses"] == 4
    assert (seeded / "split-confidence.jsonl").read_bytes() == (out / "split-confidence.jsonl").read_bytes()


def test_shipped_prm_loads_and_scores() -> None:
    from adaptivestep.prm.model import PRM
    from adaptivestep.prm.shipped import SHIPPED, corpus_dir

    if not any(d is not None and (d / "head").is_dir() for d in map(corpus_dir, SHIPPED)):
        pytest.skip("this checkout ships no trained PRM yet")
    try:
        embedded_model_path("smollm2-135m")
    except ModelError as e:
        pytest.skip(str(e))
    prm = PRM.load("embedded")
    good = ["Tom has 3 apples and buys 2 more.", " 3 + 2 = 5. The answer is 5."]
    (scores,) = prm.score_batch([("Tom has 3 apples and buys 2. How many?", good)])
    assert len(scores) == 2 and all(0.0 < s < 1.0 for s in scores)
