"""ProcessBench-style evaluation: pure metrics, threshold tuning, readers, the driver with a scripted scorer."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from adaptivestep.jsonl import DataError
from adaptivestep.prm.evaluate import (
    ProcessBenchItem,
    evaluate_prm,
    first_errors_from_labels,
    format_report,
    items_from_records,
    predict_first_error,
    processbench_metrics,
    read_processbench,
    split_tune_eval,
    tune_threshold,
)
from adaptivestep.records import LabeledRecord
from adaptivestep.scoring import StepScorer


def test_predict_first_error_uses_strict_threshold():
    assert predict_first_error([0.9, 0.5, 0.1], 0.5) == 2  # 0.5 is not below 0.5
    assert predict_first_error([0.9, 0.5, 0.1], 0.51) == 1
    assert predict_first_error([0.2], 0.5) == 0
    assert predict_first_error([0.7, 0.8], 0.5) == -1
    assert predict_first_error([], 0.5) == -1


def test_processbench_metrics_hand_computed():
    gold = [2, 2, 0, 1, -1, -1, -1]
    pred = [2, 1, 0, -1, -1, 3, -1]
    m = processbench_metrics(pred, gold)
    # erroneous: 2==2 yes, 1!=2, 0==0 yes, -1!=1 -> 2/4 ; correct: -1 yes, 3 no, -1 yes -> 2/3
    assert m["n_error"] == 4 and m["n_correct"] == 3
    assert m["error_acc"] == pytest.approx(0.5)
    assert m["correct_acc"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))


def test_processbench_metrics_edge_cases():
    only_err = processbench_metrics([0, 1], [0, 0])
    assert only_err["error_acc"] == 0.5 and only_err["correct_acc"] is None and only_err["f1"] is None
    zero = processbench_metrics([0, -1], [-1, 1])
    assert zero["error_acc"] == 0.0 and zero["correct_acc"] == 0.0 and zero["f1"] == 0.0
    with pytest.raises(ValueError, match="2 predictions for 1"):
        processbench_metrics([0, 1], [0])


def test_tune_threshold_separates_a_separable_set():
    # Good steps score in [0.6, 0.95]; the first wrong step scores in [0.1, 0.35]: any t in (0.35, 0.6] is perfect.
    rng = random.Random(1)
    scores, gold = [], []
    for i in range(40):
        n = rng.randint(2, 6)
        s = [rng.uniform(0.6, 0.95) for _ in range(n)]
        if i % 2:
            k = rng.randrange(n)
            s[k] = rng.uniform(0.1, 0.35)
            gold.append(k)
        else:
            gold.append(-1)
        scores.append(s)
    lo = max(x for s, g in zip(scores, gold) if g != -1 for x in [s[g]])
    hi = min(x for s in scores for x in s if x >= 0.6)
    t = tune_threshold(scores, gold)
    assert lo < t <= hi
    m = processbench_metrics([predict_first_error(s, t) for s in scores], gold)
    assert m["f1"] == 1.0
    # At a fixed 0.9 many good steps fall below: the tuned threshold must do strictly better.
    m_bad = processbench_metrics([predict_first_error(s, 0.9) for s in scores], gold)
    assert m_bad["f1"] < 1.0


def test_tune_threshold_picks_middle_of_ties_and_checks_input():
    # Perfect for every t in (0.2, 0.8]: grid points 0.3..0.8 tie, the middle one wins.
    t = tune_threshold([[0.9, 0.2], [0.8, 0.85]], [1, -1], candidates=[0.1, 0.3, 0.5, 0.6, 0.8, 0.95])
    assert t == 0.6
    with pytest.raises(ValueError, match="no solutions"):
        tune_threshold([], [])
    with pytest.raises(ValueError, match="2 score lists for 1"):
        tune_threshold([[0.1], [0.2]], [0])


def test_split_is_stratified_seeded_and_disjoint():
    gold = [-1] * 10 + [0, 1, 2, 3, 1, 0, 2, 2, 1, 0]
    tune, rest = split_tune_eval(gold, 0.3, seed=3)
    assert set(tune).isdisjoint(rest) and sorted(tune + rest) == list(range(20))
    assert sum(gold[i] == -1 for i in tune) == 3 and sum(gold[i] != -1 for i in tune) == 3
    assert split_tune_eval(gold, 0.3, seed=3) == (tune, rest)
    assert split_tune_eval(gold, 0.3, seed=4)[0] != tune
    with pytest.raises(ValueError, match="tune_fraction"):
        split_tune_eval(gold, 1.0, seed=0)


def _rec(labels: Sequence[float], **kw) -> LabeledRecord:
    return LabeledRecord(
        prompt="q", completions=[f"s{i}" for i in range(len(labels))], labels=list(labels), **kw
    )


def test_first_errors_from_labels():
    assert first_errors_from_labels(_rec([1.0, 1.0, 0.0, 0.0])) == 2
    assert first_errors_from_labels(_rec([0.0, 1.0])) == 0
    assert first_errors_from_labels(_rec([1.0, 1.0])) == -1
    soft = _rec([0.875, 0.25, 0.0], label_type="soft")
    assert first_errors_from_labels(soft) == 1
    assert first_errors_from_labels(soft, threshold=1e-9) == 2
    both = _rec([0.875, 0.25, 0.0], hard_labels=[1.0, 1.0, 0.0])
    assert first_errors_from_labels(both, label_field="hard_labels") == 2
    with pytest.raises(ValueError, match="soft_labels has 0 values for 3 steps"):
        first_errors_from_labels(both, label_field="soft_labels")
    with pytest.raises(ValueError, match="label_field"):
        first_errors_from_labels(both, label_field="prompt")
    items = items_from_records([both, _rec([1.0])])
    assert [it.label for it in items] == [1, -1] and items[0].steps == ["s0", "s1", "s2"]


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


def test_read_processbench(tmp_path):
    p = _write_jsonl(
        tmp_path / "pb.jsonl",
        [
            {
                "id": "gsm8k-0",
                "generator": "g",
                "problem": "P0",
                "steps": ["a", "b"],
                "label": 1,
                "final_answer_correct": False,
            },
            {"problem": "P1", "steps": ["a"], "label": -1},
            {"problem": "P2", "steps": ["a", "b", "c"], "label": None},
        ],
    )
    items = read_processbench(p)
    assert [it.id for it in items] == ["gsm8k-0", "pb:2", "pb:3"]
    assert [it.label for it in items] == [1, -1, -1]
    assert items[0].steps == ["a", "b"] and items[0].meta == {"generator": "g", "final_answer_correct": False}


@pytest.mark.parametrize(
    "bad, message",
    [
        ('{"problem": "P", "steps": ["a"], "label": 1}', "step index in \\[0, 0\\]"),
        ('{"problem": "P", "steps": ["a"], "label": true}', "label"),
        ('{"problem": "P", "steps": ["a"]}', "label"),
        ('{"problem": "P", "steps": [], "label": -1}', "steps"),
        ('{"problem": 3, "steps": ["a"], "label": -1}', "problem"),
        ('{"problem": "P", "steps": ["a"], "label": -1', "malformed JSON"),
    ],
)
def test_read_processbench_bad_line_names_file_and_line(tmp_path, bad, message):
    p = _write_jsonl(tmp_path / "pb.jsonl", [{"problem": "ok", "steps": ["a"], "label": 0}, bad])
    with pytest.raises(DataError, match=rf"pb\.jsonl:2: .*{message}"):
        read_processbench(p)


class ScriptedScorer:
    """Returns fixed scores per problem text; counts calls to check batching."""

    def __init__(self, table: dict[str, list[float]]):
        self.table = table
        self.calls = 0

    def score_batch(self, items):
        self.calls += 1
        return [list(self.table[q]) for q, _ in items]


def _toy(n: int = 20) -> tuple[list[ProcessBenchItem], dict[str, list[float]]]:
    items, table = [], {}
    for i in range(n):
        label = -1 if i % 2 == 0 else i % 3
        s = [0.8, 0.75, 0.9]
        if label != -1:
            s[label] = 0.3
        items.append(ProcessBenchItem(id=f"t{i}", problem=f"P{i}", steps=["a", "b", "c"], label=label))
        table[f"P{i}"] = s
    return items, table


def test_evaluate_prm_tunes_then_reports_on_the_rest():
    items, table = _toy(20)
    scorer = ScriptedScorer(table)
    assert isinstance(scorer, StepScorer)
    out = evaluate_prm(scorer, items, tune_fraction=0.3, seed=0, batch_size=8)
    assert scorer.calls == 3  # 20 items in batches of 8
    assert out["tuned"] and 0.3 < out["threshold"] <= 0.75
    assert out["n_tune"] == 6 and out["n_eval"] == 14 and out["n_items"] == 20
    assert out["eval"]["f1"] == 1.0 and out["eval"]["n_error"] + out["eval"]["n_correct"] == 14
    parts = [p["part"] for p in out["predictions"]]
    assert parts.count("tune") == 6 and [p["id"] for p in out["predictions"]] == [it.id for it in items]
    json.dumps(out)  # JSON-ready
    text = format_report(out)
    assert "tuned on 6 solutions" in text and "eval: error acc 100.0 (n=7)" in text


def test_evaluate_prm_fixed_threshold_and_errors():
    items, table = _toy(10)
    out = evaluate_prm(ScriptedScorer(table), items, threshold=0.8)
    # 0.75 < 0.8 flags step 1 of every solution (or step 0 at its 0.3): gold 0 and 1 right, gold 2 and -1 wrong.
    gold = [it.label for it in items]
    expected = processbench_metrics([predict_first_error(table[it.problem], 0.8) for it in items], gold)
    assert out["eval"] == expected and out["eval"]["correct_acc"] == 0.0
    assert not out["tuned"] and out["n_tune"] == 0 and out["tune"] is None
    assert "(fixed)" in format_report(out)
    with pytest.raises(ValueError, match="tune part"):
        evaluate_prm(ScriptedScorer(table), items[:2], tune_fraction=0.1)

    class Short(ScriptedScorer):
        def score_batch(self, items):
            return [s[:-1] for s in super().score_batch(items)]

    with pytest.raises(ValueError, match="2 scores for 3 steps"):
        evaluate_prm(Short(table), items, threshold=0.5)
