"""``adaptivestep bench prm-quality``: the PRM's learning curve and its baselines, on questions it never saw.

From one labelled corpus (``bench corpus``), the questions are split into ``folds`` folds. For each fold,
heads are trained on nested subsets of the other folds' questions (``sizes`` = labelled responses, a
question's responses always together) and every response of the held-out fold is scored, so each response
is predicted once per size by a PRM that never saw its question. Reported per size and scorer:

- step AUC (step scores vs the rollout labels of held-out steps);
- response AUC (aggregated score vs final correctness) for min / mean / last / prod, over all responses and
  within each question (only a question's own responses compared: what Best-of-N asks of a score);
- Best-of-N at N = pool size (the corpus' responses per question) against majority vote on the same pools,
  exact over subsets, with a paired bootstrap 95% interval of the difference.

Scorers: ``prm:<backbone>`` (head on the step labels, L2 chosen by inner cross-validation), ``orm:<backbone>``
(the same head trained on final correctness only, at each response's last step), zero-training
``confidence-mean`` / ``confidence-min`` (mean token log-prob of the response / lowest step-mean log-prob),
``prm-x-confidence:<backbone>`` (the PRM's step scores times the response's mean token probability), and
``prm-conf:<backbone>`` (the PRM's head reading the policy's own step log-prob features beside the backbone's;
backbone ``logprobs`` is a head on those features alone, no model). Backbone ``policy`` is the model that wrote
the corpus (:func:`corpus_policy`: ``default`` for the default 0.5B, else its name).
With ``--eval DIR`` (a folder of ``samples.jsonl`` + ``problems.jsonl`` of held-apart questions), heads
trained on the whole corpus score those candidates too: that table is the one to quote (it reaches the summary
JSON as ``eval_*`` keys), with each head's paired row against confidence-mean under the same rule (does the
head add anything over the policy's own confidence?).
``--eval rest`` (with ``--questions K`` on a `bench corpus` folder) holds apart the corpus' own questions after the
first K instead: train-split questions that no head was trained on, which is how the newline baseline (labelled
on a prefix of the questions) and the confidence split compare. Candidates are split the way the labels were:
by newline for ``--method newline``, else by AdaptiveStep at the corpus' tau. ``--pair A.json B.json`` then
pairs two such runs' ``--out`` files per question (:func:`pair_runs`): the confidence split's PRM minus the
newline split's on the same responses, with the labelling tokens each cost.
``--label-budget TOKENS`` trains on the longest labelled question prefix whose labels cost at most TOKENS (the
two splits at equal labelling cost), and ``--rest-after N`` makes ``--eval rest`` score the questions after the
first N, so two runs trained on different prefixes score the same held-apart questions.
``--train-modes lora`` / ``full`` adds, on the held-apart candidates only, a PRM fine-tuned by ``train`` on all
training responses (scorer ``lora:<backbone>``); ``--pair RUN RUN --pair-scorer lora:B prm:B`` pairs it with the
same run's head.
``--corpus embedded`` runs it on the corpus the package ships (its labels and samples).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from .prm_quality_items import (
    LOGPROBS,
    POLICY,
    Item,
    candidate_items,
    candidate_pools,
    corpus_items,
    corpus_policy,
    corpus_tau,
    eval_items,
    features,
    first_questions,
    is_shipped,
    policy_step_features,
    questions_within,
)
from .prm_quality_pair import candidate_records, pair_runs, print_pair, read_run

RULES = ("min", "mean", "last", "prod")


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


def _inputs(name: str, feats: Sequence[np.ndarray], items: Sequence[Item]) -> list[np.ndarray]:
    """What head ``name`` reads: the backbone's step features, plus the policy's own (``prm-conf:``)."""
    if not name.startswith("prm-conf:"):
        return list(feats)
    return [np.hstack([f, policy_step_features(i)]) for f, i in zip(feats, items)]


def fit_scorers(train: Sequence[Item], feats: Sequence[np.ndarray], backbone: str, seed: int,
                unregularised: bool = False) -> dict[str, Any]:
    """Heads trained on ``train``: the PRM (step labels) and the ORM (final correctness at the last step);
    ``prm-conf`` (the PRM reading the policy's own step log-prob features too, where the items have them);
    ``unregularised`` adds ``prm-noreg`` (the same head with a vanishing fixed L2: what memorising costs)."""
    from ..prm.head import fit_head

    last = np.stack([f[-1] for f in feats])
    out = {f"orm:{backbone}": fit_head(last, np.asarray([float(i.correct) for i in train]),
                                       [i.problem_id for i in train], seed=seed)}
    if all(i.labels for i in train):  # step labels present (a labelled corpus, not candidates only)
        x = np.concatenate(feats)
        y = np.concatenate([np.asarray(i.targets or i.labels, np.float64) for i in train])
        groups = [i.problem_id for i in train for _ in i.steps]
        out[f"prm:{backbone}"] = fit_head(x, y, groups, seed=seed)
        if backbone != LOGPROBS and all(i.step_logprobs for i in train):
            name = f"prm-conf:{backbone}"
            out[name] = fit_head(np.concatenate(_inputs(name, feats, train)), y, groups, seed=seed)
        if unregularised:
            out[f"prm-noreg:{backbone}"] = fit_head(x, y, l2=1e-6, seed=seed)
    return out


def score_items(fits: dict[str, Any], feats: Sequence[np.ndarray], items: Sequence[Item]) -> dict[str, list[list[float]]]:
    return {name: [[float(v) for v in _sigmoid(f @ fit.w + fit.b)] for f in _inputs(name, feats, items)]
            for name, fit in fits.items()}


def confidence_scores(items: Sequence[Item]) -> dict[str, list[list[float]]]:
    """Zero-training scorers from the policy's own token log-probs (as probabilities in (0, 1]); none when an
    item has no log-probs (a shipped corpus)."""
    from ..search.bon import mean_token_probability

    if not all(i.step_logprobs for i in items):
        return {}

    mean = [[mean_token_probability([x for s in i.step_logprobs for x in s]) or 0.0] * len(i.steps) for i in items]
    step_mean = [[float(np.exp(np.mean(s))) if s else 1.0 for s in i.step_logprobs] for i in items]
    return {"confidence-mean": mean, "confidence-min": step_mean}


def combined_scores(scores: dict[str, list[list[float]]], conf: dict[str, list[list[float]]]) -> dict[str, list[list[float]]]:
    """Each PRM's step scores times the response's mean token probability (``prm-x-confidence:<backbone>``):
    the PRM and the policy's own confidence as one score, with no weight to tune (a product of two
    probabilities: min, mean and last become the PRM's aggregate x the mean token probability; prod picks up
    that probability once per step). Empty without confidence scores.

    >>> combined_scores({"prm:b": [[0.5, 1.0]], "orm:b": [[0.2, 0.2]]}, {"confidence-mean": [[0.8, 0.8]]})
    {'prm-x-confidence:b': [[0.4, 0.8]]}
    """
    mean = conf.get("confidence-mean")
    if mean is None:
        return {}
    return {"prm-x-confidence:" + name.split(":", 1)[1]: [[x * c[0] for x in row] for row, c in zip(sc, mean)]
            for name, sc in scores.items() if name.startswith("prm:")}


def metrics(items: Sequence[Item], scores: list[list[float]], *, seed: int = 0, n: int | None = None,
            folds: Sequence[int] | None = None) -> dict[str, Any]:
    """Step AUC, response AUC per aggregation and Best-of-N vs majority at ``n`` (default: smallest full pool).

    ``step_auc`` pools every item's out-of-fold scores, so it also judges whether the folds' heads are
    calibrated alike; with ``folds`` (each item's fold) ``step_auc_fold_mean`` is the mean of the folds' own
    step AUCs (ranking within one head only; folds whose steps are all one class are left out)."""
    from ..prm.data import roc_auc
    from ..prm.quality import bon_vs_majority, response_auc, within_question_auc

    out: dict[str, Any] = {}
    labelled = [(s, i.labels, f) for s, i, f in zip(scores, items, folds or [0] * len(items)) if i.labels]
    if labelled:
        out["step_auc"] = roc_auc(np.concatenate([s for s, _, _ in labelled]),
                                  np.concatenate([y for _, y, _ in labelled]))
    if labelled and folds is not None:
        per_fold = []
        for f in sorted({f for _, _, f in labelled}):
            y = np.concatenate([y for _, y, g in labelled if g == f])
            if 0 < np.mean(np.asarray(y) >= 0.5) < 1:
                per_fold.append(roc_auc(np.concatenate([s for s, _, g in labelled if g == f]), y))
        out["step_auc_fold_mean"] = float(np.mean(per_fold)) if per_fold else float("nan")
    correct = [i.correct for i in items]
    for how in RULES:
        out[f"response_auc_{how}"] = response_auc(scores, correct, how)
        out[f"within_question_auc_{how}"] = within_question_auc([i.problem_id for i in items], scores, correct, how)[0]
    pools = candidate_pools(items, scores)
    sizes = [len(p) for p in pools]
    n = n or (max(set(sizes), key=sizes.count) if sizes else 0)
    for how in RULES:
        r = bon_vs_majority(pools, f"prm-{how}", n, seed=seed)
        out[f"bon_{how}"] = asdict(r)
    # the vote weighted by prm-min: the score breaks ties between answers instead of overruling the vote
    out["bon_weighted_majority"] = asdict(bon_vs_majority(pools, "weighted-majority", n, seed=seed))
    return out


def versus_confidence(items: Sequence[Item], scores: dict[str, list[list[float]]], *, n: int,
                      seed: int = 0) -> dict[str, dict[str, list[float]]]:
    """For each trained scorer, its Best-of-``n`` minus confidence-mean's under the same rule (prm-min and
    weighted-majority), paired over questions: [diff, lo, hi, questions]. Does the head add anything over the
    policy's own confidence? Empty without confidence scores."""
    from ..prm.quality import scorer_vs_scorer

    base = scores.get("confidence-mean")
    if base is None:
        return {}
    ref = candidate_pools(items, base)
    return {name: {rule: list(scorer_vs_scorer(candidate_pools(items, sc), ref, rule, n, seed=seed))
                   for rule in ("prm-min", "weighted-majority")}
            for name, sc in scores.items() if not name.startswith("confidence")}


def question_folds(items: Sequence[Item], folds: int, seed: int) -> list[set[str]]:
    """The held-out question ids of each fold (every question in exactly one)."""
    from ..prm.head import group_folds

    uniq = sorted({i.problem_id for i in items})
    return [{uniq[j] for j in held} for held in group_folds(uniq, folds, seed)]


def curve_sizes(items: Sequence[Item], sizes: Sequence[int], folds: int, seed: int) -> list[int]:
    """The training sizes that every fold can reach (a fold trains on the responses of the other folds'
    questions); a note names those left out. ValueError, before any feature is computed, when there are fewer
    questions than folds or no size fits."""
    counts = Counter(it.problem_id for it in items)
    if len(counts) < folds:
        raise ValueError(f"{len(counts)} labelled questions for {folds} folds: every fold needs a held-out "
                         "question (give fewer --folds, or label more questions)")
    most = min(len(items) - sum(counts[q] for q in held) for held in question_folds(items, folds, seed))
    fit = [s for s in sizes if s <= most]
    if not fit:
        raise ValueError(f"--sizes {' '.join(map(str, sizes))}: the smallest fold trains on {most} responses "
                         f"({len(items)} labelled in all); give sizes of at most {most}")
    if len(fit) < len(sizes):
        print(f"note: sizes {[s for s in sizes if s > most]} left out: the smallest fold trains on {most} "
              "responses", flush=True)
    return fit


def learning_curve(items: list[Item], feats: dict[str, list[np.ndarray]], sizes: Sequence[int], folds: int,
                   seed: int, tokens: dict[int, list[int]] | None = None,
                   unregularised: bool = False) -> dict[int, dict[str, list[list[float]]]]:
    """Out-of-fold step scores of every item, per training size and scorer. ``tokens`` (filled when given):
    per size, the rollout tokens that each fold's training subset cost to label."""
    from ..prm.quality import learning_curve_subsets

    per_q = Counter(it.problem_id for it in items)
    uniq = sorted(per_q)
    preds: dict[int, dict[str, list[list[float] | None]]] = {}
    for f, test_q in enumerate(question_folds(items, folds, seed)):
        train_q = [q for q in uniq if q not in test_q]
        test_i = [k for k, it in enumerate(items) if it.problem_id in test_q]
        for size, groups in learning_curve_subsets(train_q, per_q, sizes, seed=seed + f).items():
            gs = set(groups)
            tr = [k for k, it in enumerate(items) if it.problem_id in gs]
            if tokens is not None:
                tokens.setdefault(size, []).append(sum(items[k].label_tokens for k in tr))
            row = preds.setdefault(size, {})
            for bb, fe in feats.items():
                fits = fit_scorers([items[k] for k in tr], [fe[k] for k in tr], bb, seed, unregularised)
                for name, sc in score_items(fits, [fe[k] for k in test_i], [items[k] for k in test_i]).items():
                    col = row.setdefault(name, [None] * len(items))
                    for k, s in zip(test_i, sc):
                        col[k] = s
            print(f"  fold {f + 1}/{folds}: size {size} ({len(gs)} questions) done", flush=True)
    # keep a size only where every fold reached it (else its items would be scored by fewer folds)
    return {s: {n: c for n, c in row.items()} for s, row in preds.items()
            if all(x is not None for c in row.values() for x in c)}  # type: ignore[misc]


def _fmt(m: dict[str, Any]) -> str:
    b = m["bon_min"]
    return (f"step AUC {m.get('step_auc', float('nan')):.3f} (per fold {m.get('step_auc_fold_mean', float('nan')):.3f}) | response AUC min {m['response_auc_min']:.3f} "
            f"last {m['response_auc_last']:.3f} mean {m['response_auc_mean']:.3f} (within a question: min "
            f"{m['within_question_auc_min']:.3f} prod {m['within_question_auc_prod']:.3f}) | BoN@{b['n']} min "
            f"{100 * b['acc']:.1f}% vs majority {100 * b['majority']:.1f}% (diff {100 * b['diff']:+.1f} "
            f"[{100 * b['lo']:+.1f}, {100 * b['hi']:+.1f}], {b['questions']} q; oracle {100 * b['oracle']:.1f}%)"
            + (f" | weighted-majority {100 * w['diff']:+.1f} [{100 * w['lo']:+.1f}, {100 * w['hi']:+.1f}]"
               if (w := m.get("bon_weighted_majority")) and w["questions"] else ""))


def run(corpus: Path, backbones: Sequence[str], sizes: Sequence[int], folds: int, seed: int,
        eval_dir: Path | None, method: str = "confidence", questions: int | None = None,
        saver: str = "early-stop", unregularised: bool = False, cache: Path | None = None,
        label_budget: int | None = None, rest_after: int | None = None, train_modes: Sequence[str] = (),
        train_epochs: int | None = None, train_lr: float | None = None, labels_type: str = "hard") -> dict[str, Any]:
    """The learning curve on ``corpus`` (a `bench corpus` folder or a shipped one); features are cached in
    ``cache`` (default: the corpus' ``features/``, or ``runs/prm-quality-features`` for a shipped corpus).
    ``label_budget``: train on the corpus' longest question prefix whose labels cost at most that many rollout
    tokens (instead of ``questions``); ``rest_after``: with ``eval_dir`` ``rest``, hold apart the questions after
    the first ``rest_after`` (default: the training questions), so runs of different sizes score the same ones.
    ``train_modes`` (``lora``, ``full``): with ``eval_dir``, also fine-tune a PRM on all items over the first model
    backbone (:func:`trained_scores`, ``train_epochs`` epochs at ``train_lr``) and score the held-apart candidates
    with it. ``labels_type`` ``soft``: the heads train on soft labels (:func:`corpus_items`)."""
    t0 = time.perf_counter()
    shipped = is_shipped(corpus, method)
    if shipped and (method == "outcome" or questions or label_budget):
        raise ValueError(f"{corpus}: a shipped corpus has no problems file, so neither --method outcome "
                         "nor --questions / --label-budget; build the folder with `bench corpus`")
    if method == "outcome":  # every sampled response, final correctness only (no rollout labels needed)
        items = candidate_items(corpus, corpus_tau(corpus))
    else:
        items = corpus_items(corpus, method, saver, labels_type)
    if label_budget is not None:
        questions = questions_within(items, corpus, label_budget)
        if not questions:
            raise ValueError(f"--label-budget {label_budget}: the corpus' first question alone costs more")
        print(f"--label-budget {label_budget:,}: the first {questions} questions", flush=True)
    if rest_after is not None and not questions:
        raise ValueError(f"--rest-after {rest_after} holds apart the questions after a training prefix: give "
                         "--questions or --label-budget")
    if rest_after is not None and questions and rest_after < questions:
        raise ValueError(f"--rest-after {rest_after}: must be at least the {questions} training questions, "
                         "or a held-apart question would be trained on")
    if questions:
        items = first_questions(items, corpus, questions)
    if not items:
        raise ValueError(f"{corpus}: no labelled records in labels-{method}.jsonl")
    sizes = curve_sizes(items, sizes, folds, seed)
    cache = cache or (Path("runs/prm-quality-features") if shipped else corpus / "features")
    policy = corpus_policy(corpus) if {POLICY, "default"} & set(backbones) else "default"
    if POLICY in backbones:
        print(f"backbone {POLICY!r}: the corpus' policy, {policy}", flush=True)
    elif "default" in backbones and policy != "default":
        print(f"note: backbone 'default' is the default model, not this corpus' policy ({policy}); "
              f"'{POLICY}' reads the policy's own hidden states", flush=True)
    backbones = list(dict.fromkeys(policy if b == POLICY else b for b in backbones))
    feats = {bb: features(items, bb, cache) for bb in backbones}
    print(f"corpus {corpus}: {len(items)} labelled responses, {len({i.problem_id for i in items})} questions, "
          f"{sum(len(i.steps) for i in items)} steps ({np.mean([x for i in items for x in i.labels] or [np.nan]):.2f} positive), "
          f"pass rate {np.mean([i.correct for i in items]):.2f}", flush=True)
    res: dict[str, Any] = {"corpus": str(corpus), "method": method, "saver": saver, "labels": labels_type,
                           "responses": len(items),
                           "questions": questions, "curve": {}}
    spent: dict[int, list[int]] = {}
    curve = learning_curve(items, feats, sizes, folds, seed, spent, unregularised)
    conf = confidence_scores(items)
    res["label_tokens"] = sum(i.label_tokens for i in items)
    res["train_label_tokens"] = {}
    fold_of = {q: f for f, qs in enumerate(question_folds(items, folds, seed)) for q in qs}
    item_folds = [fold_of[i.problem_id] for i in items]
    for size, row in sorted(curve.items()):
        res["curve"][size] = {name: metrics(items, sc, seed=seed, folds=item_folds)
                              for name, sc in {**row, **combined_scores(row, conf), **conf}.items()}
        res["train_label_tokens"][size] = float(np.mean(spent[size]))
    if curve:  # the top size's out-of-fold scores per response, so two label sets can be paired (--pair-on curve)
        top = curve[max(curve)]
        res["curve_candidates"] = candidate_records(items, {**top, **combined_scores(top, conf), **conf})
    print(f"\nlearning curve ({folds}-fold over questions; each response scored by heads that never saw its question)")
    for size, row in res["curve"].items():
        print(f"  {size:4d} responses: their labels cost {res['train_label_tokens'][size]:,.0f} rollout tokens "
              f"(mean over folds)")
        for name, m in row.items():
            if size == min(res["curve"]) or not name.startswith("confidence"):
                print(f"  {size:4d} responses  {name:28s} {_fmt(m)}")
    if eval_dir is not None:
        ev, ecache = eval_items(corpus, eval_dir, method, rest_after or questions, cache)
        scores = eval_scores(items, feats, ev, ecache, seed)
        model_bb = next((b for b in backbones if b != LOGPROBS), None)
        if train_modes and model_bb is None:
            raise ValueError("--train-modes fine-tunes a model backbone: give one in --backbones")
        for mode in train_modes:
            scores[f"{mode}:{model_bb}"] = trained_scores(items, ev, mode, str(model_bb), cache, seed, train_epochs,
                                                          train_lr)
        res["eval"] = {name: {n: metrics(ev, sc, seed=seed, n=n) for n in (4, 8)} for name, sc in scores.items()}
        res["eval_candidates"] = candidate_records(ev, scores)
        print(f"\nheld-apart questions {eval_dir}: {len({i.problem_id for i in ev})} questions, {len(ev)} candidates")
        for name, by_n in res["eval"].items():
            for n, m in by_n.items():
                if m["bon_min"]["questions"]:
                    print(f"  {name:28s} N={n}: {_fmt(m)}")
        res["eval_vs_confidence"] = {n: versus_confidence(ev, scores, n=n, seed=seed) for n in (4, 8)}
        for n, rows in res["eval_vs_confidence"].items():
            for name, by_rule in rows.items():
                if by_rule["prm-min"][3]:
                    print(f"  {name:28s} N={n} minus confidence-mean, same rule: " + "; ".join(
                        f"{r} {100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]" for r, (d, lo, hi, _) in by_rule.items()))
    res["wall_s"] = time.perf_counter() - t0
    return res


def eval_scores(items: Sequence[Item], feats: dict[str, list[np.ndarray]], ev: Sequence[Item], ecache: Path,
                seed: int) -> dict[str, list[list[float]]]:
    """Step scores of the held-apart candidates ``ev`` by every scorer: heads trained on all of ``items``
    (one set per backbone of ``feats``), the zero-training confidences, and their products."""
    scores = dict(confidence_scores(ev))
    for bb, fe in feats.items():
        scores.update(score_items(fit_scorers(items, fe, bb, seed), features(ev, bb, ecache), ev))
    scores.update(combined_scores(scores, scores))
    return scores


def trained_scores(items: Sequence[Item], ev: Sequence[Item], mode: str, backbone: str, cache: Path, seed: int,
                   epochs: int | None = None, lr: float | None = None) -> list[list[float]]:
    """Step scores of ``ev`` by a PRM that :func:`adaptivestep.prm.train.train` fits in ``mode`` (``lora`` /
    ``full``: the backbone itself is trained) on all of ``items``' labels, no held-out split: the fine-tuning row
    beside the frozen-backbone heads. The PRM is kept in ``cache`` under a key of its data and settings, so a
    rerun scores without training again (a fit is minutes to hours on a CPU)."""
    from ..jsonl import write_atomic
    from ..prm.model import PRM
    from ..prm.train import METRICS_FILE, TrainConfig, train
    from ..records import LabeledRecord

    recs = [LabeledRecord(prompt=i.question, completions=i.steps, labels=i.targets or i.labels, problem_id=i.problem_id,
                          sample_index=i.sample_index, final_correct=i.correct) for i in items]
    key = hashlib.sha256(json.dumps([mode, backbone, seed, epochs, lr, [asdict(r) for r in recs]],
                                    sort_keys=True, default=str).encode()).hexdigest()[:16]
    out = cache / f"trained-{mode}-{backbone.replace('/', '_')}-{key}"
    if not (out / "prm" / METRICS_FILE).exists():  # train writes it last, after the PRM itself
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / "train.jsonl", recs)
        m = train(TrainConfig(mode=mode, epochs=epochs, lr=lr, eval_fraction=0.0, seed=seed,
                              output_dir=str(out / "prm")), out / "train.jsonl", backbone)
        print(f"  {mode}:{backbone} trained on {len(recs)} responses in {m['total_seconds']:.0f} s", flush=True)
    return PRM.load(out / "prm").score_batch([(i.question, i.steps) for i in ev])


def _json_key(name: str) -> str:
    """A scorer name as a summary JSON key prefix (``prm-x-confidence:smollm2-135m`` -> ``prm_x_confidence_smollm2_135m``)."""
    return name.replace(":", "_").replace("-", "_").replace(".", "_")


def _summary(res: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"responses": res["responses"], "wall_s": res["wall_s"], "label_tokens": res["label_tokens"]}
    if res["curve"]:
        top = res["curve"][max(res["curve"])]
        out["top_size"] = max(res["curve"])
        out["top_size_label_tokens"] = res["train_label_tokens"][max(res["curve"])]
        for name, m in top.items():
            key = _json_key(name)
            out[f"{key}_step_auc"] = m.get("step_auc")
            out[f"{key}_step_auc_fold_mean"] = m.get("step_auc_fold_mean")
            out[f"{key}_response_auc_min"] = m["response_auc_min"]
            out[f"{key}_within_question_auc_min"] = m["within_question_auc_min"]
            out[f"{key}_bon_min_minus_majority"] = m["bon_min"]["diff"]
            out[f"{key}_bon_weighted_majority_minus_majority"] = m["bon_weighted_majority"]["diff"]
    for name, by_n in res.get("eval", {}).items():  # the held-apart table: the one to quote
        key = "eval_" + _json_key(name)
        for n, m in by_n.items():
            if m["bon_min"]["questions"]:
                out[f"{key}_n{n}_within_question_auc_min"] = m["within_question_auc_min"]
                for rule in ("min", "weighted_majority"):
                    b = m[f"bon_{rule}"]
                    out[f"{key}_n{n}_bon_{rule}_minus_majority"] = b["diff"]
                    out[f"{key}_n{n}_bon_{rule}_minus_majority_lo"] = b["lo"]
    if res.get("eval"):
        out["eval_questions"] = max(m["bon_min"]["questions"] for by_n in res["eval"].values() for m in by_n.values())
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="adaptivestep bench prm-quality", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--corpus", default="runs/corpus",
                   help="corpus folder from `adaptivestep bench corpus`; 'embedded' = the one the package ships "
                   "for gsm8k, 'embedded:TASK' = its corpus for TASK")
    p.add_argument("--cache", default=None, help="feature cache folder (default: CORPUS/features; "
                   "runs/prm-quality-features for a shipped corpus)")
    p.add_argument("--method", default="confidence",
                   help="which labels: labels-METHOD.jsonl; 'outcome' = every sampled response, final correctness only")
    p.add_argument("--backbones", nargs="+", default=["smollm2-135m", POLICY],
                   help="feature sources: 'policy' = the model that wrote the corpus' responses (its card's; "
                   "scorers named after it, 'default' for the default Qwen2.5-Coder-0.5B), 'default', "
                   "smollm2-135m, qwen2.5-coder-1.5b, a GGUF file or HF directory; 'logprobs' = no model, the "
                   "policy's own step log-prob features")
    p.add_argument("--sizes", nargs="+", type=int, default=[25, 50, 100, 200, 400], help="training responses")
    p.add_argument("--folds", type=int, default=5, help="question folds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--saver", default="early-stop", choices=["early-stop", "first-error"],
                   help="labels as built, or those first-error search would have given (replayed, with its cost)")
    p.add_argument("--labels", default="hard", choices=["hard", "soft"],
                   help="what the heads train on: hard step labels, or soft (fraction of correct rollouts; needs "
                   "labels made without savers); metrics always use the hard labels")
    p.add_argument("--unregularised", action="store_true", help="add the head without L2 (prm-noreg)")
    p.add_argument("--questions", type=int, default=None,
                   help="only the corpus' first this many questions (e.g. those its newline baseline labelled)")
    p.add_argument("--label-budget", type=int, default=None, metavar="TOKENS",
                   help="instead of --questions: the corpus' longest question prefix whose labels cost at most "
                   "TOKENS rollout tokens (compare two splits at equal labelling cost)")
    p.add_argument("--eval", default=None, help="folder of held-apart candidates (samples.jsonl + problems.jsonl); "
                   "'rest' = the corpus' own questions after --questions K")
    p.add_argument("--rest-after", type=int, default=None, metavar="N",
                   help="with --eval rest: hold apart the questions after the first N (N >= the training "
                   "questions), so two runs trained on different prefixes score the same questions")
    p.add_argument("--train-modes", nargs="+", default=[], choices=["lora", "full"],
                   help="with --eval: also fine-tune a PRM this way (`train --mode`) on all training responses over "
                   "the first model backbone and score the held-apart candidates with it (scorer MODE:BACKBONE; "
                   "no learning curve: a fit is minutes to hours on a CPU)")
    p.add_argument("--train-epochs", type=int, default=None, help="epochs of --train-modes (default: train's, 1)")
    p.add_argument("--train-lr", type=float, default=None,
                   help="peak learning rate of --train-modes (default: train's, lora 1e-4, full 1e-5)")
    p.add_argument("--out", default=None, help="write all figures as JSON here")
    p.add_argument("--quick", action="store_true", help="smollm2-135m only, 2 folds, size 2 (a smoke run)")
    p.add_argument("--pair", nargs=2, default=None, metavar=("A_JSON", "B_JSON"),
                   help="no training: pair two --eval runs' --out files (plain or .gz) scored on the same responses (e.g. "
                   "--method confidence vs newline) per question under --pair-scorer")
    p.add_argument("--pair-scorer", nargs="+", default=["prm:smollm2-135m"], metavar="SCORER",
                   help="the scorer --pair compares; a second one is run b's (two scorers of one run: give its "
                   "file twice)")
    p.add_argument("--pair-on", default="eval", choices=["eval", "curve"],
                   help="--pair on the held-apart candidates, or on the corpus' responses scored out of fold")
    a = p.parse_args(argv)
    if a.pair:
        try:
            runs = [read_run(Path(f)) for f in a.pair]
            if len(a.pair_scorer) > 2:
                raise ValueError("--pair-scorer: one scorer, or two (run a's, run b's)")
            pr = pair_runs(runs[0], runs[1], a.pair_scorer[0], on=a.pair_on, seed=a.seed,
                           scorer_b=a.pair_scorer[-1])
        except ValueError as e:
            p.error(str(e))
        print_pair(pr)
        print(json.dumps({k: (None if isinstance(v, float) and v != v else v) for k, v in pr.items()}))
        return 0
    if a.quick:
        a.backbones, a.folds, a.sizes = ["smollm2-135m"], 2, [2]
    if a.questions and a.label_budget is not None:
        p.error("give --questions or --label-budget, not both")
    if a.eval == "rest" and not (a.questions or a.label_budget is not None):
        p.error("--eval rest holds apart the corpus' questions after --questions K: give --questions "
                "(or --label-budget)")
    if a.rest_after is not None and a.eval != "rest":
        p.error("--rest-after goes with --eval rest")
    if a.train_modes and not a.eval:
        p.error("--train-modes scores the held-apart candidates: give --eval")
    corpus = Path(a.corpus)
    if a.corpus == "embedded" or a.corpus.startswith("embedded:"):
        from ..prm.shipped import SHIPPED, corpus_dir, spec_task

        found = corpus_dir(spec_task(a.corpus))
        if found is None:
            p.error(f"--corpus {a.corpus}: the package ships no corpus for task {spec_task(a.corpus)!r} "
                    f"(shipped: {sorted(SHIPPED)})")
        corpus = found
    res = run(corpus, a.backbones, a.sizes, a.folds, a.seed, Path(a.eval) if a.eval else None, a.method,
              a.questions, a.saver, a.unregularised, Path(a.cache) if a.cache else None,
              a.label_budget, a.rest_after, a.train_modes, a.train_epochs, a.train_lr, a.labels)
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1, default=float) + "\n")
    summary = {k: (None if isinstance(v, float) and v != v else v) for k, v in _summary(res).items()}
    print(json.dumps(summary, default=float))  # strict JSON: an undefined AUC (one class only) is null
    return 0
