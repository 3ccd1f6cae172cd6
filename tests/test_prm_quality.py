"""PRM quality measures (pure functions): learning-curve subsets, response AUC, Best-of-N vs majority."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from adaptivestep.bench.corpus import select_questions, solution_lines
from adaptivestep.prm.quality import (
    bon_vs_majority,
    learning_curve_subsets,
    paired_bootstrap,
    response_auc,
    within_question_auc,
)
from adaptivestep.records import Problem
from adaptivestep.search.bon import Candidate


def test_learning_curve_subsets_are_nested_whole_questions_from_the_train_side() -> None:
    rng = np.random.default_rng(0)
    groups = [f"q{i}" for i in range(30)]
    per = {g: int(rng.integers(1, 5)) for g in groups}
    train, test = groups[:24], set(groups[24:])
    subs = learning_curve_subsets(train, per, [5, 10, 20, 40, 10_000], seed=3)
    assert 10_000 not in subs  # larger than the training side: left out, not clamped
    prev: list[str] = []
    for size in sorted(subs):
        s = subs[size]
        assert not set(s) & test and len(set(s)) == len(s)
        assert sum(per[g] for g in s) >= size and sum(per[g] for g in s[:-1]) < size
        assert s[: len(prev)] == prev  # nested
        prev = s


def test_response_auc_and_bon_vs_majority() -> None:
    # the PRM ranks the right answer first in every pool, while the vote goes to a wrong answer or a tie
    pools = [
        [Candidate(0, "7", [0.9, 0.8], True), Candidate(1, "5", [0.3], False), Candidate(2, "5", [0.4], False),
         Candidate(3, "6", [0.2], False)],
        [Candidate(0, "2", [0.1], False), Candidate(1, "3", [0.95], True), Candidate(2, "2", [0.2], False),
         Candidate(3, "3", [0.7], True)],
    ]
    flat = [c for p in pools for c in p]
    assert response_auc([c.step_scores for c in flat], [c.correct for c in flat], "min") == 1.0
    r = bon_vs_majority(pools, "prm-min", 4)
    assert (r.acc, r.questions) == (1.0, 2)
    # pool 2 ties "2" and "3" two votes each: the tie counts at its expectation, 0.5 (not the lowest index's 0)
    assert r.majority == 0.25
    assert r.diff == 0.75 and r.lo <= r.diff <= r.hi
    # every answer distinct (code: the vote key is the program): majority is the pool's mean correctness,
    # whatever the order of the candidates
    for order in ([False, True, False, True], [True, False, True, False]):  # lowest index: 0.0, then 1.0
        distinct = [Candidate(i, f"prog{i}", [0.5], ok) for i, ok in enumerate(order)]
        assert bon_vs_majority([distinct], "prm-min", 4).majority == 0.5
    r2 = bon_vs_majority(pools, "prm-min", 2)
    assert 0.0 <= r2.majority <= r2.acc <= r2.oracle <= 1.0
    assert bon_vs_majority(pools, "prm-min", 5).questions == 0  # no pool that large


def test_weighted_majority_gets_a_paired_row_against_majority() -> None:
    from adaptivestep.pipeline import paired_rules

    # prm-min trusts the one high score ("4"); the score-weighted vote sums the two "9"s and is right
    pool = [Candidate(0, "9", [0.6], True), Candidate(1, "9", [0.5], True), Candidate(2, "4", [0.7], False),
            Candidate(3, "1", [0.1], False)]
    assert bon_vs_majority([pool], "prm-min", 4).acc == 0.0
    w = bon_vs_majority([pool], "weighted-majority", 4)
    assert (w.acc, w.majority, w.diff, w.questions) == (1.0, 1.0, 0.0, 1)
    assert paired_rules(["majority", "prm-min", "weighted-majority", "oracle"]) == ["prm-min", "weighted-majority"]


def test_paired_bootstrap_interval_brackets_the_mean() -> None:
    rng = np.random.default_rng(1)
    a = rng.random(200)
    b = a - 0.1 + 0.05 * rng.standard_normal(200)
    d, lo, hi = paired_bootstrap(a, b)
    assert d == pytest.approx(0.1, abs=0.02) and lo < d < hi and lo > 0


def test_select_questions_filters_by_reference_length_and_is_nested() -> None:
    ps = [Problem(id=f"p{i}", question="q", kind="math", meta={"solution": "x\n" * (1 + i % 5) + "#### 3"})
          for i in range(100)]
    a = select_questions(ps, 10, seed=4, max_solution_lines=2)
    b = select_questions(ps, 20, seed=4, max_solution_lines=2)
    assert [p.id for p in b[:10]] == [p.id for p in a]
    assert all(solution_lines(p) <= 2 for p in b)
    assert len(select_questions(ps, 10, seed=4)) == 10


def _synthetic(n_q: int, per_q: int, rng: np.random.Generator) -> tuple[list, list[np.ndarray]]:
    """Items whose step labels a linear head can read from their features (plus noise)."""
    from adaptivestep.bench.prm_quality_items import Item

    items, feats = [], []
    for q in range(n_q):
        for j in range(per_q):
            k = int(rng.integers(1, 4))
            y = (rng.random(k) < 0.5).astype(float)
            f = rng.standard_normal((k, 8)) + 2.0 * y[:, None] * np.eye(8)[0]
            items.append(Item(f"q{q}", j, "question", ["s"] * k, list(y), bool(y[-1]), str(int(y[-1])),
                              [[-0.1]] * k, label_tokens=10 * k))
            feats.append(f)
    return items, feats


def test_learning_curve_scores_every_item_out_of_fold_and_learns() -> None:
    from adaptivestep.bench.prm_quality import learning_curve, metrics

    items, feats = _synthetic(20, 3, np.random.default_rng(0))
    spent: dict[int, list[int]] = {}
    curve = learning_curve(items, {"bb": feats}, [6, 24, 10_000], folds=2, seed=0, tokens=spent)
    assert sorted(curve) == [6, 24]  # 10_000 exceeds every fold's training side: dropped, not clamped
    assert len(spent[6]) == 2 and all(t > 0 for t in spent[6]) and np.mean(spent[24]) > np.mean(spent[6])
    for row in curve.values():
        assert set(row) == {"prm:bb", "orm:bb", "prm-conf:bb"}  # the items have log-probs: prm-conf too
        assert all(len(s) == len(i.steps) for s, i in zip(row["prm:bb"], items))  # every item, once
    assert metrics(items, curve[24]["prm:bb"])["step_auc"] > 0.85  # the signal is learnt on held-out questions


def test_prm_conf_reads_the_policy_log_probs_that_the_backbone_lacks(tmp_path: Path) -> None:
    """Labels carried by the steps' token log-probs only: the backbone head stays near chance, prm-conf and
    the model-free 'logprobs' head learn them on held-out questions; 'logprobs' has no prm-conf twin."""
    from adaptivestep.bench.prm_quality import learning_curve, metrics
    from adaptivestep.bench.prm_quality_items import Item, features

    rng = np.random.default_rng(1)
    items, feats = [], []
    for q in range(30):
        for j in range(3):
            k = int(rng.integers(1, 4))
            y = (rng.random(k) < 0.5).astype(float)
            lps = [list(rng.normal(-0.2 if v else -2.0, 0.3, size=int(rng.integers(2, 6)))) for v in y]
            items.append(Item(f"q{q}", j, "question", ["s"] * k, list(y), bool(y[-1]), str(int(y[-1])), lps))
            feats.append(rng.standard_normal((k, 8)))
    lp = features(items, "logprobs", tmp_path)
    assert all(f.shape == (len(i.steps), 4) for f, i in zip(lp, items)) and not any(tmp_path.iterdir())
    curve = learning_curve(items, {"bb": feats, "logprobs": lp}, [60], folds=3, seed=0)[60]
    assert "prm-conf:logprobs" not in curve and {"prm-conf:bb", "prm:logprobs"} <= set(curve)
    auc = {name: metrics(items, sc)["step_auc"] for name, sc in curve.items() if name.startswith("prm")}
    assert auc["prm:bb"] < 0.65 and auc["prm-conf:bb"] > 0.85 and auc["prm:logprobs"] > 0.85


def test_feature_cache_computes_only_the_responses_it_has_not_seen(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A grown corpus reuses the cached features of its old responses: the backbone runs on the new ones only,
    and every response gets back its own (K, H) rows whatever the order."""
    from adaptivestep.bench import prm_quality_items as pq
    from adaptivestep.prm import model

    seen: list[int] = []  # the question lengths the backbone ran on

    class Backbone:
        @staticmethod
        def from_backbone(name: str, **_: object) -> "Backbone":
            return Backbone()

        def features_batch(self, items, progress=False):  # noqa: ANN001, ANN201
            seen.extend(len(q) for q, _ in items)
            return [np.array([[float(len(q)), float(j)] for j, _ in enumerate(steps)], dtype=np.float32).reshape(-1, 2)
                    for q, steps in items]

    monkeypatch.setattr(model, "PRM", Backbone)
    items = [pq.Item(f"q{n}", 0, "x" * n, ["s"] * (n % 3), [1.0] * (n % 3), True, None, [])
             for n in range(1, 7)]
    first = pq.features(items[:4], "bb", tmp_path)
    assert seen == [1, 2, 3, 4] and [f.shape for f in first] == [(1, 2), (2, 2), (0, 2), (1, 2)]
    grown = pq.features(items[::-1], "bb", tmp_path)  # two new responses, the rest cached, order reversed
    assert seen[4:] == [6, 5] and len(list(tmp_path.glob("features-bb-*.npz"))) == 1
    for f, i in zip(grown, items[::-1]):
        assert f.shape == (len(i.steps), 2) and np.all(f[:, 0] == len(i.question))
    assert pq.features(items, "bb", tmp_path, max_length=64) and len(seen) == 12  # another length: its own store
    store = pq.load_feature_store(next(tmp_path.glob("features-bb-1024.npz")))
    assert len(store) == 6 and len({id(v.base) for v in store.values()}) == 1  # views of one array read once
    assert not list(tmp_path.glob("*.tmp"))  # no temporary file left behind


def test_feature_store_keeps_what_a_stopped_run_computed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The store is written after every few questions: a run stopped midway (here the backbone fails on its
    third batch) keeps the batches it finished, and the rerun computes only the rest. A question's responses
    always go in one batch (they share the prompt's forward pass)."""
    from adaptivestep.bench import prm_quality_items as pq
    from adaptivestep.prm import model

    batches: list[list[str]] = []

    class Backbone:
        @staticmethod
        def from_backbone(name: str, **_: object) -> "Backbone":
            return Backbone()

        def features_batch(self, items, progress=False):  # noqa: ANN001, ANN201
            if len(batches) == 2 and not fixed:
                raise KeyboardInterrupt
            batches.append([q for q, _ in items])
            return [np.ones((len(steps), 3), np.float32) for _, steps in items]

    monkeypatch.setattr(model, "PRM", Backbone)
    items = [pq.Item(f"q{q}", j, f"question {q}", ["a", f"b{j}"], [1.0, 1.0], True, None, [])
             for q in range(5) for j in range(2 if q != 1 else 3)]
    fixed = False
    with pytest.raises(KeyboardInterrupt):
        pq.features(items, "bb", tmp_path, save_every=4)
    assert batches == [["question 0"] * 2 + ["question 1"] * 3, ["question 2"] * 2 + ["question 3"] * 2]
    assert len(pq.load_feature_store(tmp_path / "features-bb-1024.npz")) == 9  # both finished batches kept
    assert "bb features: 9 of 11 new responses computed and saved" in capsys.readouterr().out
    fixed = True
    got = pq.features(items, "bb", tmp_path, save_every=4)
    assert batches[2:] == [["question 4"] * 2] and len(got) == len(items)


def test_first_error_replay_costs_at_most_the_corpus_and_keeps_monotone_labels() -> None:
    from adaptivestep.bench.prm_quality_items import replay_first_error

    rng = np.random.default_rng(2)
    for _ in range(200):
        k = int(rng.integers(1, 8))
        hard = list((rng.random(k) < 0.6).astype(float))
        toks = [int(t) for t in rng.integers(1, 50, k)]
        toks[-1] = 0  # the last step is the response itself: no rollouts
        labels, spent = replay_first_error(hard, bool(hard[-1]), toks)
        assert len(labels) == k and spent <= sum(toks)
        assert labels == sorted(labels, reverse=True)  # 1s then 0s
        if hard == sorted(hard, reverse=True):  # monotone truth: the search finds it exactly
            assert labels == hard


def test_fold_mean_step_auc_ranks_within_each_head_only() -> None:
    """Two folds, each ranked perfectly by its own head but calibrated apart: pooled AUC < 1, fold mean = 1."""
    from adaptivestep.bench.prm_quality import metrics
    from adaptivestep.bench.prm_quality_items import Item

    items, scores, folds = [], [], []
    for f, shift in ((0, 0.0), (1, 0.5)):
        for j, y in enumerate([0.0, 1.0, 0.0, 1.0]):
            items.append(Item(f"q{f}", j, "q", ["s"], [y], bool(y), str(y), [[-1.0]]))
            scores.append([0.1 + 0.3 * y + shift])
            folds.append(f)
    m = metrics(items, scores, folds=folds)
    assert m["step_auc_fold_mean"] == 1.0 and m["step_auc"] < 1.0
    assert "step_auc_fold_mean" not in metrics(items, scores)


def test_within_question_auc_ignores_what_separates_questions() -> None:
    # a score that only knows which question is easy: pooled it looks useful, inside a question it is a coin
    groups = ["easy"] * 4 + ["hard"] * 4
    scores = [[0.9]] * 4 + [[0.1]] * 4
    correct = [True, True, True, False, True, False, False, False]
    assert response_auc(scores, correct, "min") == 0.75
    assert within_question_auc(groups, scores, correct, "min") == (0.5, 2)
    # and one that ranks the wrong response first in the easy question
    scores[3] = [0.95]
    assert within_question_auc(groups, scores, correct, "min") == ((0.0 + 0.5) / 2, 2)
    # a question whose responses are all right (or all wrong) says nothing about ranking and is left out
    assert within_question_auc(["a", "a"], [[0.1], [0.9]], [True, True], "min") != within_question_auc(
        ["a", "a"], [[0.1], [0.9]], [True, False], "min")
    assert within_question_auc(["a", "a"], [[0.1], [0.9]], [True, True], "min")[1] == 0


def test_bench_metrics_give_weighted_majority_a_paired_row() -> None:
    """Two wrong answers agree, one right answer scores high: the vote is wrong, the weighted vote is right."""
    from adaptivestep.bench.prm_quality import metrics
    from adaptivestep.bench.prm_quality_items import Item

    items = [Item("q", 0, "q", ["s"], [], True, "7", [[-1.0]]),
             Item("q", 1, "q", ["s"], [], False, "3", [[-1.0]]),
             Item("q", 2, "q", ["s"], [], False, "3", [[-1.0]])]
    m = metrics(items, [[0.95], [0.2], [0.3]], n=3)
    w = m["bon_weighted_majority"]
    assert (w["acc"], w["majority"], w["diff"], w["questions"]) == (1.0, 0.0, 1.0, 1)
    tied = metrics(items, [[0.95], [0.9], [0.9]], n=3)["bon_weighted_majority"]
    assert tied["acc"] == 0.0  # 1.8 > 0.95: agreement still wins when the scores do not disagree enough


def test_saved_candidate_records_rebuild_the_same_best_of_n_table() -> None:
    """The per-candidate records a held-apart run saves give back its Best-of-N figures exactly, per scorer."""
    import json

    from adaptivestep.bench.prm_quality import metrics
    from adaptivestep.bench.prm_quality_items import Item, candidate_pools
    from adaptivestep.bench.prm_quality_pair import candidate_records, pools_from_records
    from adaptivestep.prm.quality import bon_vs_majority

    items = [Item(f"q{q}", j, "q", ["a", "b"], [], (q + j) % 3 == 0, str((q * j) % 2), [[-1.0], [-2.0]])
             for q in range(6) for j in range(4)]
    # "one" ranks the right candidates first, "two" the wrong ones; both vary inside a question
    scores = {"one": [[0.5 + 0.1 * j, 0.9 if it.correct else 0.2] for j, it in zip(list(range(4)) * 6, items)],
              "two": [[0.5, 0.05 * (q + j) + (0.0 if items[4 * q + j].correct else 0.5)]
                      for q in range(6) for j in range(4)]}
    recs = json.loads(json.dumps(candidate_records(items, scores)))  # through JSON, as saved
    assert len(recs) == 24 and recs[5]["scores"]["two"] == [0.5, 0.6]
    for name, sc in scores.items():
        saved = pools_from_records(recs, name)
        assert [[c.index for c in p] for p in saved] == [[c.index for c in p] for p in candidate_pools(items, sc)]
        for rule, key in (("prm-min", "bon_min"), ("weighted-majority", "bon_weighted_majority")):
            assert bon_vs_majority(saved, rule, 4).diff == metrics(items, sc, n=4)[key]["diff"]
    assert bon_vs_majority(pools_from_records(recs, "one"), "prm-min", 4).acc != bon_vs_majority(
        pools_from_records(recs, "two"), "prm-min", 4).acc  # the two scorers really pick differently


def _copy_of(src: Path, dest: Path, *names: str) -> Path:
    """A folder ``dest`` holding copies of ``src``'s files ``names``."""
    import shutil

    dest.mkdir()
    for name in names:
        shutil.copy(src / name, dest / name)
    return dest


def test_the_shipped_corpus_reads_as_items_with_its_samples_log_probs(tmp_path: Path) -> None:
    from adaptivestep.bench.prm_quality import combined_scores, confidence_scores
    from adaptivestep.bench.prm_quality_items import corpus_items, corpus_tau, is_shipped
    from adaptivestep.prm.shipped import corpus_dir, shipped_tau

    d = corpus_dir("gsm8k")
    assert d is not None and is_shipped(d)
    items = corpus_items(d)
    assert len({i.problem_id for i in items}) >= 10 and all(i.problem_id.startswith("gsm8k/train/") for i in items)
    assert all(len(i.labels) == len(i.steps) == len(i.step_logprobs) > 0 for i in items)
    assert all(all(x <= 0 for s in i.step_logprobs for x in s) and all(i.step_logprobs) for i in items)
    assert sum(i.vote is not None for i in items) > 0.8 * len(items)  # the vote key is read from the text
    assert any(i.correct for i in items) and not all(i.correct for i in items)
    conf = confidence_scores(items)
    assert set(conf) == {"confidence-mean", "confidence-min"}
    assert set(combined_scores({"prm:x": [[0.5] * len(i.steps) for i in items]}, conf)) == {"prm-x-confidence:x"}
    assert corpus_tau(d) == shipped_tau("embedded", "gsm8k", 0.02)
    replayed = corpus_items(d, saver="first-error")
    assert sum(i.label_tokens for i in replayed) <= sum(i.label_tokens for i in items)
    with pytest.raises(ValueError, match="unknown saver"):
        corpus_items(d, saver="exhaustive")
    # a corpus shipped with its labels only reads too, with no log-probs: no confidence rows rather than fake ones
    labels_only = _copy_of(d, tmp_path / "labels-only", "labels.jsonl.gz", "card.json")
    bare = corpus_items(labels_only)
    assert [i.labels for i in bare] == [i.labels for i in items] and all(i.step_logprobs == [] for i in bare)
    assert [i.vote for i in bare] == [i.vote for i in items]  # the joined steps are the response's text
    assert confidence_scores(bare) == {} and combined_scores({"prm:x": []}, {}) == {}


def test_a_corpus_seeded_from_the_shipped_one_has_its_samples_labels_and_tau(tmp_path: Path) -> None:
    from adaptivestep.bench.corpus import read_tau, seed_from
    from adaptivestep.jsonl import read_records
    from adaptivestep.prm.shipped import corpus_dir
    from adaptivestep.records import LabeledRecord, Sample

    d = corpus_dir("gsm8k")
    assert d is not None
    out = tmp_path / "corpus"
    assert seed_from(d, out) == ["samples.jsonl", "labels-confidence.jsonl", "tau.json", "card.json"]
    card = json.loads((d / "card.json").read_text())
    assert read_tau(out) == card["tau"] and json.loads((out / "card.json").read_text())["builds"] == card["builds"]
    labels = {(r.problem_id, r.sample_index) for r in read_records(out / "labels-confidence.jsonl", LabeledRecord)}
    assert {s.key for s in read_records(out / "samples.jsonl", Sample)} == labels
    assert len(labels) == card["labels_confidence"]["responses"]
    (out / "tau.json").write_text('{"tau": 0.5}')
    assert seed_from(d, out) == [] and read_tau(out) == 0.5  # never overwrites what is there
    with pytest.raises(ValueError, match="no samples.jsonl.gz"):
        seed_from(tmp_path, tmp_path / "x")
    from adaptivestep.bench.corpus import CorpusSpec

    same = CorpusSpec(**{**card["spec"], "out_dir": str(tmp_path / "y"), "questions": 80, "data_dir": "elsewhere"})
    assert "tau.json" in seed_from(d, tmp_path / "y", same)  # a larger corpus of the same spec
    with pytest.raises(ValueError, match="max_tokens 256 .shipped: 512."):
        seed_from(d, tmp_path / "z", CorpusSpec(**{**card["spec"], "max_tokens": 256}))
    # a setting newer than the shipped card counts as its default: another policy is refused, the default is not
    assert "model" not in card["spec"]
    with pytest.raises(ValueError, match="model 'qwen2.5-coder-1.5b' .shipped: 'default'."):
        seed_from(d, tmp_path / "m", CorpusSpec(**{**card["spec"], "model": "qwen2.5-coder-1.5b"}))


def test_bench_corpus_seed_from_embedded_refuses_a_differing_spec_before_building(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from adaptivestep.bench.corpus import main

    out = tmp_path / "c"
    with pytest.raises(SystemExit):
        main(["--seed-from", "embedded", "--out-dir", str(out), "--max-tokens", "256"])
    err = capsys.readouterr().err
    assert "--seed-from" in err and "gsm8k-easy" in err and "max_tokens 256 (shipped: 512)" in err
    assert not out.exists()  # refused before anything was written


def test_prm_quality_names_the_task_when_no_corpus_is_shipped_for_it(capsys: pytest.CaptureFixture[str]) -> None:
    from adaptivestep.bench.prm_quality import main

    with pytest.raises(SystemExit):
        main(["--corpus", "embedded:nosuch", "--quick"])
    assert "ships no corpus for task 'nosuch'" in capsys.readouterr().err


def test_ship_takes_only_the_fully_labelled_question_prefix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A build stopped part way (question 3 of 4 half labelled, question 4 labelled) ships questions 1-2 only,
    and its card counts and rebuilds exactly those."""
    import gzip

    from tiny_models import save_tiny_qwen2

    from adaptivestep.bench.corpus import CorpusSpec, ship
    from adaptivestep.jsonl import JsonlWriter
    from adaptivestep.records import LabeledRecord, Sample

    out = tmp_path / "corpus"
    out.mkdir()
    qs = [Problem(id=f"q{k}", question=f"What is {k} + {k}?", kind="math", answer=str(2 * k)) for k in range(4)]
    labelled = {("q0", 0), ("q0", 1), ("q1", 0), ("q1", 1), ("q2", 0), ("q3", 0), ("q3", 1)}
    with JsonlWriter(out / "problems.jsonl") as wp, JsonlWriter(out / "samples.jsonl") as ws, \
            JsonlWriter(out / "labels-confidence.jsonl") as wl:
        for p in qs:
            wp.write(p)
            for i in range(2):
                ans = p.answer if i == 0 else "7"
                text = f"{p.question[8:-1]} makes {ans}.\nThe answer is {ans}."
                ws.write(Sample(problem_id=p.id, sample_index=i, prompt=p.question, prompt_ids=[1], token_ids=[2, 3],
                                logprobs=[-0.1, -2.0], token_end_chars=[len(text) // 2, len(text)], text=text,
                                finish_reason="stop", model="m", backend="fake", sampling={}, seed=0))
                if (p.id, i) in labelled:
                    wl.write(LabeledRecord(prompt=p.question, completions=text.split("\n"), labels=[float(i == 0)] * 2,
                                           problem_id=p.id, sample_index=i, method="confidence",
                                           cost={"rollouts": 3, "generated_tokens": 10}))
    (out / "tau.json").write_text('{"tau": 0.1}')
    backbone = save_tiny_qwen2(tmp_path / "tiny", [p.question for p in qs] * 20)
    dest = tmp_path / "shipped"
    card = ship(CorpusSpec(out_dir=str(out), questions=4), dest, backbone=str(backbone))
    assert "the first 2 of 4 questions" in capsys.readouterr().out
    keys = {(json.loads(ln)["problem_id"], json.loads(ln)["sample_index"])
            for ln in gzip.decompress((dest / "labels.jsonl.gz").read_bytes()).splitlines()}
    assert keys == {("q0", 0), ("q0", 1), ("q1", 0), ("q1", 1)}
    samples = gzip.decompress((dest / "samples.jsonl.gz").read_bytes()).splitlines()
    assert {(json.loads(ln)["problem_id"], json.loads(ln)["sample_index"]) for ln in samples} == keys
    assert card["questions"] == 2 and card["responses"] == 4 and card["labels_confidence"]["responses"] == 4
    assert card["response_pass_rate"] == 0.5 and "--questions 2" in card["head"]["command"]
    assert json.loads((dest / "card.json").read_text())["spec"]["questions"] == 2


def test_bench_prm_quality_runs_the_logprobs_backbone_on_the_shipped_corpus(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--backbones logprobs` needs no model: the CLI runs end to end on the shipped corpus' samples and its
    last line is the summary JSON with the model-free head's rows (and no prm-conf twin)."""
    from adaptivestep.bench.prm_quality import main

    out = tmp_path / "q.json"
    assert main(["--corpus", "embedded", "--backbones", "logprobs", "--sizes", "40", "--folds", "2",
                 "--cache", str(tmp_path / "cache"), "--out", str(out)]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["top_size"] == 40 and 0.0 <= last["prm_logprobs_step_auc"] <= 1.0
    assert "prm_conf_logprobs_step_auc" not in last and "orm_logprobs_step_auc" in last
    assert not (tmp_path / "cache").exists()  # no backbone features were computed or cached
    assert set(json.loads(out.read_text())["curve"]["40"]) >= {"prm:logprobs", "confidence-mean"}


def test_scorer_vs_scorer_pairs_two_scorers_of_the_same_candidates() -> None:
    """Both rank the right answer first on q2; only a does on q1: a - b is +1/2 per question."""
    from adaptivestep.prm.quality import per_question_accuracy, scorer_vs_scorer

    def pool(right: float, wrong: float) -> list[Candidate]:
        return [Candidate(0, "1", [right], True), Candidate(1, "2", [wrong], False)]

    a, b = [pool(0.9, 0.1), pool(0.8, 0.2)], [pool(0.1, 0.9), pool(0.8, 0.2)]
    assert per_question_accuracy(a, "prm-min", 2) == [1.0, 1.0] and per_question_accuracy(b, "prm-min", 2) == [0.0, 1.0]
    d, lo, hi, q = scorer_vs_scorer(a, b, "prm-min", 2)
    assert (d, q) == (0.5, 2) and lo <= d <= hi
    assert scorer_vs_scorer(a, a, "weighted-majority", 2)[:3] == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="same candidates"):
        scorer_vs_scorer(a, [pool(0.5, 0.5)], "prm-min", 2)
    assert per_question_accuracy([pool(0.9, 0.1)], "prm-min", 3) == []  # a pool smaller than N is left out


def test_bench_prm_quality_eval_rows_reach_the_summary_with_a_row_against_confidence(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--eval on a folder of candidates (here: 3 shipped questions' samples, only as plumbing): the summary
    JSON carries the held-apart rows, and each head gets its paired row against confidence-mean."""
    from adaptivestep.bench.prm_quality import main
    from adaptivestep.jsonl import read_records, write_atomic
    from adaptivestep.prm.shipped import corpus_dir
    from adaptivestep.records import LabeledRecord, Sample

    d = corpus_dir("gsm8k")
    assert d is not None
    gold = {r.problem_id: (r.prompt, r.meta["gold"]) for r in read_records(d / "labels.jsonl.gz", LabeledRecord)}
    keep = sorted(gold)[:3]
    ev = tmp_path / "eval"
    ev.mkdir()
    write_atomic(ev / "samples.jsonl", [s for s in read_records(d / "samples.jsonl.gz", Sample)
                                        if s.problem_id in keep and s.sample_index < 4])
    write_atomic(ev / "problems.jsonl", [Problem(q, gold[q][0], "math", str(gold[q][1])) for q in keep])
    out = tmp_path / "q.json"
    assert main(["--corpus", "embedded", "--backbones", "logprobs", "--sizes", "40", "--folds", "2",
                 "--eval", str(ev), "--out", str(out)]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["eval_questions"] == 3
    assert -1.0 <= last["eval_prm_logprobs_n4_bon_min_minus_majority"] <= 1.0
    assert last["eval_prm_logprobs_n4_bon_min_minus_majority_lo"] <= last["eval_prm_logprobs_n4_bon_min_minus_majority"]
    saved = json.loads(out.read_text())
    vs = saved["eval_vs_confidence"]["4"]
    assert set(vs) >= {"prm:logprobs", "prm-x-confidence:logprobs", "orm:logprobs"} and "confidence-min" not in vs
    assert all(row[3] == 3 for by_rule in vs.values() for row in by_rule.values())
    # every held-apart candidate is saved with every scorer's step scores, and they give back the table
    from adaptivestep.bench.prm_quality_pair import pools_from_records
    from adaptivestep.prm.quality import bon_vs_majority

    recs = saved["eval_candidates"]
    assert len(recs) == 12 and {r["problem_id"] for r in recs} == set(keep)
    assert set(recs[0]["scores"]) == set(saved["eval"])
    assert bon_vs_majority(pools_from_records(recs, "prm:logprobs"), "prm-min", 4).diff == pytest.approx(
        last["eval_prm_logprobs_n4_bon_min_minus_majority"])


def _newline_corpus(tmp_path: Path) -> Path:
    """Six questions x 4 responses (even = right, sure; odd = wrong, unsure), three lines each; the first 4
    questions newline-labelled at 10 rollout tokens per response (40 per question)."""
    from adaptivestep.jsonl import JsonlWriter
    from adaptivestep.records import LabeledRecord, Sample

    out = tmp_path / "corpus"
    out.mkdir()
    qs = [Problem(id=f"q{k}", question=f"What is {k} + {k}?", kind="math", answer=str(2 * k)) for k in range(6)]
    with JsonlWriter(out / "problems.jsonl") as wp, JsonlWriter(out / "samples.jsonl") as ws, \
            JsonlWriter(out / "labels-newline.jsonl") as wl:
        for k, p in enumerate(qs):
            wp.write(p)
            for i in range(4):
                ans = p.answer if i % 2 == 0 else "7"
                lines = [f"{k} and {k}.\n", f"Together {ans}.\n", f"The answer is {ans}."]
                text = "".join(lines)
                ends = [len("".join(lines[: j + 1])) for j in range(3)]
                lp = [-0.1, -0.2, -0.1] if i % 2 == 0 else [-2.0, -1.5, -3.0]
                ws.write(Sample(problem_id=p.id, sample_index=i, prompt=p.question, prompt_ids=[1],
                                token_ids=[2, 3, 4], logprobs=lp, token_end_chars=ends, text=text,
                                finish_reason="stop", model="m", backend="fake", sampling={}, seed=0))
                if k < 4:
                    wl.write(LabeledRecord(prompt=p.question, completions=lines, labels=[float(i % 2 == 0)] * 3,
                                           problem_id=p.id, sample_index=i, method="newline",
                                           step_token_ends=[1, 2, 3], cost={"rollouts": 3, "generated_tokens": 10}))
    (out / "tau.json").write_text('{"tau": 0.5}')
    return out


def test_eval_rest_holds_apart_the_corpus_questions_after_the_first_k_split_as_the_labels(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--method newline --questions 4 --eval rest: heads train on the first 4 questions' newline labels and
    score questions 5-6, split at line breaks (3 steps each, not AdaptiveStep's); without --questions it refuses."""
    from adaptivestep.bench.prm_quality import main

    out = _newline_corpus(tmp_path)
    res = tmp_path / "q.json"
    assert main(["--corpus", str(out), "--method", "newline", "--questions", "4", "--eval", "rest",
                 "--backbones", "logprobs", "--sizes", "8", "--folds", "2", "--out", str(res)]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["eval_questions"] == 2 and last["responses"] == 16
    saved = json.loads(res.read_text())
    ev = saved["eval"]["prm:logprobs"]["4"]
    assert ev["bon_min"]["questions"] == 2 and ev["bon_min"]["oracle"] == 1.0
    # the curve's out-of-fold scores of the 16 labelled responses are saved too, and pair with themselves to 0
    assert len(saved["curve_candidates"]) == 16 and "prm:logprobs" in saved["curve_candidates"][0]["scores"]
    from adaptivestep.bench.prm_quality_pair import pair_runs

    same = pair_runs(saved, saved, "prm:logprobs", on="curve")
    assert same["questions"] == 4 and same["prm_min_a_minus_b"][0] == 0.0
    from adaptivestep.bench.prm_quality_items import eval_items

    items, _ = eval_items(out, Path("rest"), "newline", 4, tmp_path)
    assert {i.problem_id for i in items} == {"q4", "q5"} and {len(i.steps) for i in items} == {3}
    conf, _ = eval_items(out, Path("rest"), "confidence", 4, tmp_path)  # AdaptiveStep cuts only unsure tokens
    assert sorted({len(i.steps) for i in conf}) == [1, 3]
    with pytest.raises(ValueError, match="--questions"):
        eval_items(out, Path("rest"), "newline", None, tmp_path)
    with pytest.raises(SystemExit):
        main(["--corpus", str(out), "--method", "newline", "--eval", "rest", "--backbones", "logprobs"])
    assert "give --questions" in capsys.readouterr().err


def test_label_budget_and_rest_after_compare_two_prefixes_on_the_same_held_apart_questions(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--label-budget 85 takes the longest question prefix whose labels cost <= 85 tokens (2 questions at 40
    each); --rest-after 3 then scores questions 4-6 whatever the prefix, and refuses a smaller N than it."""
    from adaptivestep.bench.prm_quality import main
    from adaptivestep.bench.prm_quality_items import corpus_items, questions_within

    out = _newline_corpus(tmp_path)
    items = corpus_items(out, "newline")
    assert [questions_within(items, out, b) for b in (39, 40, 85, 120, 10**6)] == [0, 1, 2, 3, 4]  # stops at unlabelled q4
    assert main(["--corpus", str(out), "--method", "newline", "--label-budget", "85", "--eval", "rest",
                 "--rest-after", "3", "--backbones", "logprobs", "--sizes", "4", "--folds", "2"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["responses"] == 8 and last["eval_questions"] == 3
    with pytest.raises(ValueError, match="--rest-after 1"):
        main(["--corpus", str(out), "--method", "newline", "--label-budget", "85", "--eval", "rest",
              "--rest-after", "1", "--backbones", "logprobs", "--sizes", "4", "--folds", "2"])
    with pytest.raises(SystemExit):
        main(["--corpus", str(out), "--method", "newline", "--questions", "2", "--label-budget", "85"])
    assert "not both" in capsys.readouterr().err
    from adaptivestep.bench.prm_quality import run

    with pytest.raises(ValueError, match="give --questions or --label-budget"):  # from Python: no prefix given
        run(out, ["logprobs"], [4], 2, 0, Path("rest"), "newline", rest_after=3)


def test_pair_runs_pairs_two_methods_on_the_same_responses_per_question(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--pair: a scorer that ranks each question's right answers first (run a) against one that ranks them last
    (run b): within-question AUC 1 vs 0, and a beats b under prm-min; runs on other responses are refused."""
    from adaptivestep.bench.prm_quality import main
    from adaptivestep.bench.prm_quality_pair import pair_runs

    def run(method: str, good: float, bad: float) -> dict:
        recs = []
        for q in range(3):
            for i in range(4):
                ok = i == 3 or (q == 0 and i == 2)  # right answers are the minority: majority picks wrong
                recs.append({"problem_id": f"q{q}", "sample_index": i, "correct": ok, "vote": "1" if ok else "2",
                             "scores": {"prm:b": [0.5, good if ok else bad]}})
        return {"method": method, "label_tokens": 100 if method == "confidence" else 250, "eval_candidates": recs}

    a, b = run("confidence", 0.9, 0.1), run("newline", 0.1, 0.9)
    r = pair_runs(a, b, "prm:b")
    assert r["questions"] == 3 and r["mixed_questions"] == 3 and r["label_tokens"] == [100, 250]
    assert r["within_question_auc_min"] == [1.0, 0.0] and r["within_question_auc_min_a_minus_b"][0] == 1.0
    assert r["prm_min_a_minus_b"][0] == 1.0  # a always picks a right answer, b never
    assert r["prm_min_minus_majority"][0][0] > 0 >= r["prm_min_minus_majority"][1][0]
    b["eval_candidates"][0]["sample_index"] = 9
    with pytest.raises(ValueError, match="same responses"):
        pair_runs(a, b, "prm:b")
    with pytest.raises(ValueError, match="no scorer"):
        pair_runs(a, a, "prm:other")
    # on the curve's out-of-fold scores, each side's cost is what its top size trained on, not the whole corpus
    full, half = ({**run("confidence", 0.9, 0.1), "train_label_tokens": sizes} for sizes in
                  ({"8": 40.0, "16": 90.0}, {"8": 40.0}))
    for x in (full, half):
        x["curve_candidates"] = x.pop("eval_candidates")
    on_curve = pair_runs(full, half, "prm:b", on="curve")
    assert on_curve["label_tokens"] == [90.0, 40.0] and on_curve["label_tokens_of"][0].startswith("16 training")
    for x in (full, half):  # on the held-apart candidates: the whole corpus', which trained the scoring head
        x["eval_candidates"] = x["curve_candidates"]
    assert pair_runs(full, half, "prm:b")["label_tokens"] == [100, 100]
    fa, fb = tmp_path / "a.json", tmp_path / "b.json.gz"  # either may be gzipped, as docs/results keeps them
    fa.write_text(json.dumps(a))
    fb.write_bytes(gzip.compress(json.dumps(run("newline", 0.1, 0.9)).encode()))
    assert main(["--pair", str(fa), str(fb), "--pair-scorer", "prm:b"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert "confidence (a) vs newline (b)" in out[0]
    assert json.loads(out[-1])["within_question_auc_min_a_minus_b"][0] == 1.0
    torn = tmp_path / "torn.json.gz"
    torn.write_bytes(gzip.compress(b'{"method": "newline"')[:-4])
    for bad in (tmp_path / "missing.json", torn):  # a usage error naming the file, not a traceback
        with pytest.raises(SystemExit) as e:
            main(["--pair", str(fa), str(bad)])
        assert e.value.code == 2 and str(bad) in capsys.readouterr().err


def test_train_modes_adds_a_fine_tuned_prm_row_on_the_held_apart_questions_and_reuses_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """--train-modes lora fine-tunes a PRM (tiny random Qwen2) on the 16 training responses and scores the 8
    held-apart ones (scorer lora:BACKBONE, one score per step); a rerun reuses the trained PRM instead of
    training again; --pair-scorer A B pairs it with the same run's frozen-backbone head."""
    from tiny_models import save_tiny_qwen2

    from adaptivestep.bench.prm_quality import main
    from adaptivestep.bench.prm_quality_pair import pair_runs

    out = _newline_corpus(tmp_path)
    bb = save_tiny_qwen2(tmp_path / "tiny", [f"What is {k} + {k}? {k} and {k}. Together {2 * k}. The answer is 7."
                                             for k in range(40)])
    res = tmp_path / "q.json"
    args = ["--corpus", str(out), "--method", "newline", "--questions", "4", "--eval", "rest", "--backbones", str(bb),
            "--sizes", "8", "--folds", "2", "--train-modes", "lora", "--train-epochs", "2", "--train-lr", "1e-3",
            "--out", str(res)]
    assert main(args) == 0
    name = f"lora:{bb}"
    saved = json.loads(res.read_text())
    recs = saved["eval_candidates"]
    assert len(recs) == 8 and all(len(r["scores"][name]) == 3 for r in recs)
    assert all(0.0 <= x <= 1.0 for r in recs for x in r["scores"][name])
    assert len(list((out / "features").glob("trained-lora-*/prm"))) == 1
    (metrics,) = (out / "features").glob("trained-lora-*/prm/train_metrics.json")
    assert json.loads(metrics.read_text())["history"][-1]["epoch"] == 2.0  # --train-epochs 2 reached train
    capsys.readouterr()

    def no_training(*a: object, **k: object) -> None:
        raise AssertionError("trained again")

    monkeypatch.setattr("adaptivestep.prm.train.train", no_training)
    assert main(args) == 0
    again = json.loads(res.read_text())["eval_candidates"]
    assert [r["scores"][name] for r in again] == [r["scores"][name] for r in recs]
    pr = pair_runs(saved, saved, name, scorer_b=f"prm:{bb}")
    assert pr["scorer_b"] == f"prm:{bb}" and pr["questions"] == 2
    with pytest.raises(SystemExit):
        main(["--corpus", str(out), "--method", "newline", "--questions", "4", "--backbones", "logprobs",
              "--train-modes", "lora"])
    assert "give --eval" in capsys.readouterr().err


def test_soft_labels_train_the_heads_and_are_refused_for_saver_labelled_records(tmp_path: Path) -> None:
    """--labels soft: the heads fit the fraction of correct rollouts (targets) while the metrics keep the hard
    labels; a corpus labelled with early stop / first-error search has no unbiased fraction and is refused."""
    import dataclasses

    from adaptivestep.bench.prm_quality import fit_scorers, main
    from adaptivestep.bench.prm_quality_items import Item, corpus_items
    from adaptivestep.prm.shipped import corpus_dir

    d = corpus_dir("gsm8k")
    assert d is not None
    with pytest.raises(ValueError, match="not labelled exhaustively"):
        corpus_items(d, labels_type="soft")
    # the same records as if labelled without savers, with made-up fractions
    ex = _copy_of(d, tmp_path / "exhaustive", "card.json", "samples.jsonl.gz")
    with gzip.open(d / "labels.jsonl.gz", "rt") as f:
        recs = [json.loads(line) for line in f][:8]
    for r in recs:
        r["meta"]["label_config"].update(early_stop=False, first_error_search=False)
        r["soft_labels"] = [0.25 * (k % 5) for k in range(len(r["labels"]))]
    with gzip.open(ex / "labels.jsonl.gz", "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in recs)
    soft, hard = corpus_items(ex, labels_type="soft"), corpus_items(ex)
    assert [i.targets for i in soft] == [r["soft_labels"] for r in recs] and all(i.targets == [] for i in hard)
    assert [i.labels for i in soft] == [i.labels for i in hard]  # the metrics still read hard labels
    with pytest.raises(ValueError, match="unknown labels"):
        corpus_items(ex, labels_type="fraction")
    with pytest.raises(ValueError, match="not with a replayed --saver"):
        corpus_items(ex, saver="first-error", labels_type="soft")
    # the CLI option reaches the run: its saved figures say what the heads trained on
    res = tmp_path / "soft.json"
    assert main(["--corpus", str(ex), "--labels", "soft", "--backbones", "logprobs", "--sizes", "4", "--folds", "2",
                 "--out", str(res)]) == 0
    assert json.loads(res.read_text())["labels"] == "soft"
    # a head follows its targets: on one feature that tracks the hard labels, reversed targets flip its sign
    rng = np.random.default_rng(0)
    items = [Item(f"q{q}", 0, "q", ["a", "b", "c"], [1.0, 1.0, 0.0] if q % 2 else [1.0, 0.0, 0.0], bool(q % 2),
                  None, []) for q in range(12)]
    feats = [np.asarray(i.labels)[:, None] + 0.1 * rng.standard_normal((3, 1)) for i in items]
    flipped = [dataclasses.replace(i, targets=[1.0 - x for x in i.labels]) for i in items]
    w_hard = fit_scorers(items, feats, "b", 0)["prm:b"].w[0]
    w_soft = fit_scorers(flipped, feats, "b", 0)["prm:b"].w[0]
    assert w_hard > 0 > w_soft


def test_bench_prm_quality_reads_a_code_corpus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A `bench corpus` folder of code questions (tests, not answers) gives its curve like a math one: votes
    come from the code itself (two spellings of one program are one vote), correctness from the labels."""
    from adaptivestep.bench.prm_quality import main
    from adaptivestep.bench.prm_quality_items import corpus_items

    out = tmp_path / "code-corpus"
    _write_code_corpus(out)
    items = corpus_items(out)
    assert len(items) == 24 and sum(i.correct for i in items) == 12
    c0 = [i.vote for i in items if i.problem_id == "c0"]
    assert c0[0] == c0[2] == "def f(x):\n    return x + 0" != c0[1]  # the program is the vote; blank lines and
    # trailing spaces do not make another one
    res = tmp_path / "q.json"
    assert main(["--corpus", str(out), "--backbones", "logprobs", "--sizes", "8", "--folds", "2",
                 "--out", str(res)]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["responses"] == 24 and last["top_size"] == 8
    assert last["prm_logprobs_step_auc"] > 0.9  # the sure steps are the right ones here


def _write_code_corpus(out: Path) -> None:
    """A `bench corpus` folder of 6 code questions x 4 responses (2 right, 2 wrong each), labelled."""
    from adaptivestep.jsonl import JsonlWriter
    from adaptivestep.records import LabeledRecord, Sample

    out.mkdir(parents=True, exist_ok=True)
    with JsonlWriter(out / "problems.jsonl") as wp, JsonlWriter(out / "samples.jsonl") as ws, \
            JsonlWriter(out / "labels-confidence.jsonl") as wl:
        for k in range(6):
            p = Problem(id=f"c{k}", question=f"Write f(x) returning x + {k}.", kind="code",
                        tests=f"assert f(1) == {1 + k}", entry_point="f")
            wp.write(p)
            for i in range(4):
                body = f"x + {k}" if i % 2 == 0 else f"x - {k + 1}"
                steps = ["```python\ndef f(x):\n", f"{chr(10) if i == 2 else ''}    return {body}   \n```"]
                text = "".join(steps)
                lp = [-0.1, -0.2] if i % 2 == 0 else [-2.0, -2.5]
                ws.write(Sample(problem_id=p.id, sample_index=i, prompt=p.question, prompt_ids=[1], token_ids=[2, 3],
                                logprobs=lp, token_end_chars=[len(steps[0]), len(text)], text=text,
                                finish_reason="stop", model="m", backend="fake", sampling={}, seed=0,
                                task_kind="code"))
                ok = i % 2 == 0
                wl.write(LabeledRecord(prompt=p.question, completions=steps, labels=[1.0, float(ok)], problem_id=p.id,
                                       sample_index=i, method="confidence", step_token_ends=[1, 2],
                                       final_correct=ok, cost={"rollouts": 4, "generated_tokens": 20}))
    (out / "tau.json").write_text('{"tau": 0.5}')


def test_backbone_policy_is_the_model_that_wrote_the_corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """'policy' (the default backbone) reads the hidden states of the model named by the corpus' card, not
    the default 0.5B: a corpus sampled by the 1.5B gets the 1.5B's features, under scorers named after it."""
    from adaptivestep.bench import prm_quality as pq

    out = tmp_path / "corpus"
    _write_code_corpus(out)
    (out / "card.json").write_text(json.dumps({"spec": {"model": "qwen2.5-coder-1.5b"}}))
    asked: list[str] = []

    def fake_features(items, backbone, cache, **kw):  # no model here: the log-prob features stand in
        asked.append(backbone)
        return [pq.policy_step_features(i) for i in items]

    monkeypatch.setattr(pq, "features", fake_features)
    assert pq.main(["--corpus", str(out), "--sizes", "8", "--folds", "2"]) == 0  # default: smollm2-135m policy
    text = capsys.readouterr().out
    assert asked == ["smollm2-135m", "qwen2.5-coder-1.5b"]
    assert "backbone 'policy': the corpus' policy, qwen2.5-coder-1.5b" in text
    assert "prm:qwen2.5-coder-1.5b" in text
    asked.clear()
    assert pq.main(["--corpus", str(out), "--backbones", "default", "--sizes", "8", "--folds", "2"]) == 0
    assert asked == ["default"] and "is the default model, not this corpus' policy" in capsys.readouterr().out


def test_a_code_corpus_in_the_shipped_layout_votes_on_programs(tmp_path: Path) -> None:
    """The shipped layout has no problems file: the task kind comes from the shipped samples (it used to be
    math for every record with a ``gold`` key, and a code record has ``gold: None``)."""
    import gzip

    from adaptivestep.bench.prm_quality_items import corpus_items

    src, ship = tmp_path / "folder", tmp_path / "ship"
    _write_code_corpus(src)
    ship.mkdir()
    for name, to in (("labels-confidence.jsonl", "labels.jsonl.gz"), ("samples.jsonl", "samples.jsonl.gz")):
        (ship / to).write_bytes(gzip.compress((src / name).read_bytes()))
    (ship / "card.json").write_text('{"tau": 0.5}')
    votes = [i.vote for i in corpus_items(ship) if i.problem_id == "c1"]
    assert votes[0] == "def f(x):\n    return x + 1" and votes[1] == "def f(x):\n    return x - 2"
    (ship / "samples.jsonl.gz").unlink()  # no samples, no gold answer: the kind is unknown
    with pytest.raises(ValueError, match="task kind is unknown"):
        corpus_items(ship)


def test_curve_sizes_refuses_what_no_fold_can_train(tmp_path: Path) -> None:
    """Sizes above what the smallest fold trains on are left out with a note; none left, or fewer questions
    than folds, is an error before any feature is computed (it used to print an empty curve)."""
    from adaptivestep.bench.prm_quality import curve_sizes
    from adaptivestep.bench.prm_quality_items import corpus_items

    _write_code_corpus(tmp_path)
    items = corpus_items(tmp_path)  # 6 questions x 4 responses
    assert curve_sizes(items, [4, 8, 100], 2, 0) == [4, 8]
    with pytest.raises(ValueError, match="give sizes of at most 12"):
        curve_sizes(items, [25, 50], 2, 0)
    with pytest.raises(ValueError, match="6 labelled questions for 7 folds"):
        curve_sizes(items, [4], 7, 0)


def test_bench_corpus_model_option_reaches_the_spec_and_its_help(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from adaptivestep.bench.corpus import main

    with pytest.raises(SystemExit):  # another policy cannot extend the shipped (0.5B) corpus: refused, nothing built
        main(["--seed-from", "embedded", "--out-dir", str(tmp_path / "c"), "--model", "qwen2.5-coder-1.5b"])
    assert "model 'qwen2.5-coder-1.5b' (shipped: 'default')" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "model: the policy: ``default`` (the embedded 0.5B)" in capsys.readouterr().out
