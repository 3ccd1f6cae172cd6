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
import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

RULES = ("min", "mean", "last", "prod")
LOGPROBS = "logprobs"
"""The pseudo-backbone whose step features are the policy's own token log-probs (no model forward pass)."""
POLICY = "policy"
"""The backbone alias for the model that wrote the corpus' responses (:func:`corpus_policy`): the policy's own
hidden states."""


@dataclass
class Item:
    """One response with what every scorer and metric needs."""

    problem_id: str
    sample_index: int
    question: str
    steps: list[str]
    labels: list[float]  # rollout labels (hard); empty for eval candidates
    correct: bool
    vote: str | None
    step_logprobs: list[list[float]]  # token log-probs of each step
    label_tokens: int = 0  # rollout tokens its labels cost (0 for eval candidates)
    targets: list[float] = field(default_factory=list)  # what the heads train on when not ``labels`` (soft labels)


def _step_logprobs(sample: Any, ends: Sequence[int]) -> list[list[float]]:
    starts = [0, *ends[:-1]]
    return [list(sample.logprobs[a:b]) for a, b in zip(starts, ends)]


def replay_first_error(hard: Sequence[float], final_correct: bool, step_tokens: Sequence[int]) -> tuple[list[float], int]:
    """What first-error search would have labelled, and the rollout tokens it would have spent, replayed from
    a response's per-step hard labels (each step's rollouts are the same seeded ones whichever saver asks).

    >>> replay_first_error([1, 1, 0, 1, 0], False, [10, 10, 10, 10, 0])  # probes step 2, then 1
    ([1.0, 1.0, 0.0, 0.0, 0.0], 20)
    >>> replay_first_error([1, 0, 1], True, [5, 5, 0])  # a correct response: no probe at all
    ([1.0, 1.0, 1.0], 0)
    """
    from ..label.rules import first_error_search

    gen = first_error_search(len(hard), 1.0 if final_correct else 0.0)
    spent = 0
    try:
        k = next(gen)
        while True:
            spent += int(step_tokens[k])
            k = gen.send(float(hard[k]))
    except StopIteration as stop:
        return list(stop.value), spent


def corpus_items(corpus: Path, method: str = "confidence", saver: str = "early-stop",
                 labels_type: str = "hard") -> list[Item]:
    """Items of a corpus folder: its labelled records joined with their samples (for log-probs).

    A corpus in the shipped layout (:func:`is_shipped`: ``labels.jsonl.gz`` and ``card.json``, no problems)
    takes its token log-probs and task kind from ``samples.jsonl.gz`` where it ships one (a corpus shipped
    without it gives items without log-probs, so no confidence scorers, and must be math: its records carry a
    ``gold`` answer, checked); the vote is :func:`~adaptivestep.checkers.vote_key` of that kind.

    saver: ``early-stop`` = the corpus' labels as built; ``first-error`` = the labels and cost that first-error
    search would have given on the same rollouts (:func:`replay_first_error`).
    labels_type: ``soft`` = the heads train on each step's fraction of correct rollouts (``targets``); the
    metrics still read the hard labels. Only for labels made without savers: early stop and first-error search
    leave a step fewer rollouts than M, or none, so its fraction is biased or unknown.
    """
    from ..checkers import vote_key
    from ..jsonl import read_records
    from ..records import LabeledRecord, Problem, Sample

    if saver not in ("early-stop", "first-error"):
        raise ValueError(f"unknown saver {saver!r} (early-stop | first-error)")
    if labels_type not in ("hard", "soft"):
        raise ValueError(f"unknown labels {labels_type!r} (hard | soft)")
    if labels_type == "soft" and saver != "early-stop":
        raise ValueError("--labels soft trains on the labels as built: not with a replayed --saver")
    shipped = is_shipped(corpus, method)
    samples: dict[tuple[str, int], Sample] = {}
    if shipped:
        records = [r for r in read_records(corpus / "labels.jsonl.gz", LabeledRecord) if r.method == method]
        if (corpus / "samples.jsonl.gz").exists():  # shipped with its samples: token log-probs, so confidence rows
            samples = {s.key: s for s in read_records(corpus / "samples.jsonl.gz", Sample)}
    else:
        problems = {p.id: p for p in read_records(corpus / "problems.jsonl", Problem)}
        samples = {s.key: s for s in read_records(corpus / "samples.jsonl", Sample, tolerate_torn_tail=True)}
        records = list(read_records(corpus / f"labels-{method}.jsonl", LabeledRecord, tolerate_torn_tail=True))
    out = []
    for r in records:
        labels, tokens = list(r.hard_labels or r.labels), int(r.cost.get("generated_tokens", 0))
        if saver == "first-error":
            labels, tokens = replay_first_error(labels, bool(r.final_correct), [x.tokens for x in r.rollouts])
        targets: list[float] = []
        if labels_type == "soft":
            cfg = r.meta.get("label_config", {})
            if cfg.get("early_stop") or cfg.get("first_error_search") or not r.soft_labels:
                raise ValueError(f"--labels soft: record {r.problem_id}#{r.sample_index} was not labelled "
                                 "exhaustively (early stop or first-error search leave a step fewer than M "
                                 "rollouts); label without savers, or train on hard labels")
            targets = list(r.soft_labels)
        if shipped:  # no problems file: the task kind is the sample's, or math where the record has a gold answer
            s = samples.get((r.problem_id, r.sample_index))
            kind = s.task_kind if s is not None else ("math" if r.meta.get("gold") else None)
            if kind is None:
                raise ValueError(f"{corpus}: record {r.problem_id}#{r.sample_index} has neither a sample nor a gold "
                                 "answer, so its task kind is unknown (ship samples.jsonl.gz with it, or build the "
                                 "folder with `bench corpus`)")
            vote = vote_key(kind, s.text if s is not None else "".join(r.completions))
            logprobs = _step_logprobs(s, r.step_token_ends) if s is not None else []
        else:
            s = samples[(r.problem_id, r.sample_index)]
            vote, logprobs = vote_key(problems[r.problem_id].kind, s.text), _step_logprobs(s, r.step_token_ends)
        out.append(Item(r.problem_id, r.sample_index, r.prompt, list(r.completions), labels, bool(r.final_correct),
                        vote, logprobs, tokens, targets))
    return out


def corpus_policy(corpus: Path) -> str:
    """The model that wrote a corpus' responses, as a backbone name: the card's ``spec.model``, else the model
    its samples name, else ``default``; the file of an embedded model, named either way, gives that model's
    name. The default policy is called ``default``, so its scorers keep their names (``prm:default``).

    >>> import tempfile; d = Path(tempfile.mkdtemp())
    >>> _ = (d / "card.json").write_text('{"spec": {"model": "qwen2.5-coder-1.5b"}}'); corpus_policy(d)
    'qwen2.5-coder-1.5b'
    >>> _ = (d / "card.json").write_text('{"spec": {}}')
    >>> _ = (d / "samples.jsonl").write_text('{"model": "/c/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"}\\n')
    >>> corpus_policy(d)
    'default'
    >>> _ = (d / "card.json").write_text('{"spec": {"model": "/m/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"}}')
    >>> corpus_policy(d), corpus_policy(d.parent / "no-such-corpus")
    ('qwen2.5-coder-1.5b', 'default')
    """
    from ..embedded_models import DEFAULT_MODEL, EMBEDDED, is_embedded
    from ..jsonl import iter_json

    model = None
    if (corpus / "card.json").exists():
        model = (json.loads((corpus / "card.json").read_text()).get("spec") or {}).get("model")
    for name in ("samples.jsonl", "samples.jsonl.gz"):
        if not model and (corpus / name).exists():  # a bad first line: DataError naming the file and line
            model = next((obj.get("model") for _, obj in iter_json(corpus / name)), None)
    if model and not is_embedded(model):  # a model file of an embedded model: that model's name
        model = next((m.name for m in EMBEDDED.values() if Path(model).name == m.filename), model)
    return "default" if model in (None, "", "default", DEFAULT_MODEL) else str(model)


def is_shipped(corpus: Path, method: str = "confidence") -> bool:
    """Whether ``corpus`` is in the shipped layout (labels.jsonl.gz) rather than a `bench corpus` folder."""
    return not (corpus / f"labels-{method}.jsonl").exists() and (corpus / "labels.jsonl.gz").exists()


def corpus_tau(corpus: Path) -> float:
    """The tau a corpus was split at: ``tau.json`` of a `bench corpus` folder, else the shipped ``card.json``."""
    f = corpus / "tau.json"
    return float(json.loads((f if f.exists() else corpus / "card.json").read_text())["tau"])


def first_questions(items: list[Item], corpus: Path, count: int) -> list[Item]:
    """The items of the corpus' first ``count`` questions (``problems.jsonl`` order: the corpus' own order, in
    which its newline baseline labels a prefix), so two label sets compare on the same questions."""
    from ..jsonl import read_records
    from ..records import Problem

    keep = {p.id for p in list(read_records(corpus / "problems.jsonl", Problem))[:count]}
    return [i for i in items if i.problem_id in keep]


def questions_within(items: list[Item], corpus: Path, budget: int) -> int:
    """The largest K whose first K corpus questions are labelled and cost at most ``budget`` rollout tokens, so that two
    label sets (e.g. confidence vs newline) can be compared at equal labelling cost rather than on equal questions."""
    from ..jsonl import read_records
    from ..records import Problem

    cost: dict[str, int] = {}
    for i in items:
        cost[i.problem_id] = cost.get(i.problem_id, 0) + i.label_tokens
    spent, k = 0, 0
    for p in read_records(corpus / "problems.jsonl", Problem):  # the labelled prefix only
        spent += cost.get(p.id, budget + 1)
        if spent > budget:
            break
        k += 1
    return k


def candidate_items(folder: Path, tau: float, split: str = "confidence") -> list[Item]:
    """Items of a folder of candidates (``samples.jsonl``, or a main job's ``candidates.jsonl``, + ``problems.jsonl``),
    split by AdaptiveStep at ``tau`` (``split="newline"``: at line breaks, ``tau`` unused)."""
    from ..checkers import check_samples, vote_key
    from ..jsonl import read_records
    from ..records import Problem, Sample
    from ..split import SplitParams, split_samples, step_texts

    problems = {p.id: p for p in read_records(folder / "problems.jsonl", Problem)}
    name = "samples.jsonl" if (folder / "samples.jsonl").exists() else "candidates.jsonl"
    samples = list(read_records(folder / name, Sample, tolerate_torn_tail=True))
    splits = split_samples(samples, split, SplitParams(tau=tau) if split == "confidence" else SplitParams())
    out = []
    for s, sp, ok in zip(samples, splits, check_samples(problems, samples)):
        p = problems[s.problem_id]
        out.append(Item(s.problem_id, s.sample_index, p.question, step_texts(s, sp), [], ok,
                        vote_key(p.kind, s.text), _step_logprobs(s, sp.boundaries)))
    return out


def features(items: Sequence[Item], backbone: str, cache_dir: Path, *, max_length: int = 1024) -> list[np.ndarray]:
    """Step-end hidden states (K_i, H) of each item under ``backbone``, cached in ``cache_dir`` one entry per
    response (keyed by its question and steps), so a grown corpus computes only its new responses; backbone
    ``logprobs`` is no model: the policy's own step log-prob features (:func:`policy_step_features`)."""
    if backbone == LOGPROBS:
        return [policy_step_features(i) for i in items]
    path = cache_dir / f"features-{backbone.replace('/', '_')}-{max_length}.npz"
    keys = [item_key(i) for i in items]
    have = load_feature_store(path)
    todo = {k: i for k, i in zip(keys, items) if k not in have}
    if todo:
        from ..prm.model import PRM

        prm = PRM.from_backbone(backbone, mode="head", max_length=max_length)
        got = prm.features_batch([(i.question, i.steps) for i in todo.values()], progress=True)
        have.update(zip(todo, got))
        save_feature_store(path, have)
    return [have[k] for k in keys]


def item_key(item: Item) -> str:
    """What a response's backbone features depend on: its question and step texts."""
    return hashlib.sha256(json.dumps([item.question, item.steps]).encode()).hexdigest()


def load_feature_store(path: Path) -> dict[str, np.ndarray]:
    """The cached (K, H) features by :func:`item_key`; empty if ``path`` does not exist."""
    if not path.exists():
        return {}
    with np.load(path) as d:  # each array read once (an NpzFile re-reads an array at every access)
        keys, counts, flat = d["keys"], d["counts"], d["features"]
    offs = np.concatenate([[0], np.cumsum(counts)])
    return {str(k): flat[offs[j]: offs[j + 1]] for j, k in enumerate(keys)}


def save_feature_store(path: Path, store: dict[str, np.ndarray]) -> None:
    """Write ``store`` atomically, through a temporary file of this writer's own: two runs writing at once
    leave one of their stores whole (the other's new entries are computed again next time)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = list(store.values())
    width = next((a.shape[1] for a in arrays if a.ndim == 2), 0)
    flat = np.concatenate([a.reshape(-1, width) for a in arrays]) if arrays else np.zeros((0, width))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # as a plain write would leave it (mkstemp makes it private)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, keys=np.asarray(list(store), dtype=str), counts=np.asarray([len(a) for a in arrays]),
                     features=flat.astype(np.float32))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


def policy_step_features(item: Item) -> np.ndarray:
    """(K, 4) features of each step from the policy's own token log-probs, causal (a step's row uses only the
    response up to its end, so a step score can use it mid-decoding): the step's mean and min token log-prob,
    the mean log-prob of the response so far, and log(1 + tokens so far). Empty (K, 0) without log-probs.

    >>> policy_step_features(Item("q", 0, "", ["a", "b"], [], True, None, [[-1.0, -3.0], [-0.5]])).round(3).tolist()
    [[-2.0, -3.0, -2.0, 1.099], [-0.5, -0.5, -1.5, 1.386]]
    """
    if not item.step_logprobs:
        return np.zeros((len(item.steps), 0))
    rows, seen = [], []
    for lp in item.step_logprobs:
        seen.extend(lp)
        rows.append([float(np.mean(lp)) if lp else 0.0, float(np.min(lp)) if lp else 0.0,
                     float(np.mean(seen)) if seen else 0.0, float(np.log1p(len(seen)))])
    return np.asarray(rows, np.float64)


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


def candidate_pools(items: Sequence[Item], scores: list[list[float]]) -> list[list[Any]]:
    """Best-of-N pools, one per question in first-seen order, of the items scored by ``scores``."""
    return _pools((it.problem_id, it.sample_index, it.vote, sc, it.correct) for it, sc in zip(items, scores))


def _pools(rows: Iterable[tuple[str, int, str | None, list[float], bool]]) -> list[list[Any]]:
    """Group (problem_id, index, vote, step scores, correct) rows into Best-of-N pools, first-seen order."""
    from ..search.bon import Candidate

    pools: dict[str, list[Candidate]] = {}
    for pid, index, vote, sc, correct in rows:
        pools.setdefault(pid, []).append(Candidate(index, vote, sc, correct))
    return list(pools.values())


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


def candidate_records(items: Sequence[Item], scores: dict[str, list[list[float]]]) -> list[dict[str, Any]]:
    """One JSON-ready record per candidate: its question, index, answer, correctness and every scorer's step
    scores. Saved with the results so that held-apart tables can be pooled or re-read exactly later
    (:func:`pools_from_records` rebuilds the Best-of-N pools of one scorer)."""
    return [{"problem_id": it.problem_id, "sample_index": it.sample_index, "vote": it.vote, "correct": it.correct,
             "scores": {name: [round(float(x), 6) for x in sc[k]] for name, sc in scores.items()}}
            for k, it in enumerate(items)]


def pools_from_records(records: Sequence[dict[str, Any]], scorer: str) -> list[list[Any]]:
    """The Best-of-N pools (one per question, first-seen order) of ``scorer`` from :func:`candidate_records`."""
    return _pools((r["problem_id"], r["sample_index"], r["vote"], r["scores"][scorer], r["correct"]) for r in records)


def _read_run(path: Path) -> dict[str, Any]:
    """A `--out` file, plain or gzipped (as the results under docs/results are kept); ValueError naming the file
    when it cannot be read as one JSON object."""
    import gzip
    import zlib

    try:
        with (gzip.open(path, "rt") if path.suffix == ".gz" else path.open()) as f:
            run = json.load(f)
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"--pair {path}: not a readable `bench prm-quality --out` file ({e})") from None
    if not isinstance(run, dict):
        raise ValueError(f"--pair {path}: expected a JSON object, got {type(run).__name__}")
    return run


def pair_runs(a: dict[str, Any], b: dict[str, Any], scorer: str, *, on: str = "eval", n: int = 4,
              seed: int = 0, scorer_b: str | None = None) -> dict[str, Any]:
    """Two `bench prm-quality --out` results on the *same* responses (e.g. the PRM trained on confidence-split
    labels and the one trained on newline-split labels, each scoring the responses split its own way), paired
    per question under ``scorer``: within-question AUC (min) of each and a - b, Best-of-N (prm-min,
    weighted-majority) of each against majority and a - b under the same rule, each with its bootstrap 95%
    interval as ``[diff, lo, hi]``, and the rollout tokens each side's labels cost. ``on``: ``eval`` = the
    held-apart candidates (``--eval``), ``curve`` = the corpus' own responses scored out of fold at the
    curve's top size. Step AUCs are not paired: the two sides' steps differ. ``scorer_b``: run b's scorer when it
    is another one (e.g. one run's ``lora:smollm2-135m`` against its own ``prm:smollm2-135m``)."""
    from ..prm.quality import bon_vs_majority, paired_bootstrap, scorer_vs_scorer, within_question_aucs

    recs = []
    names = (scorer, scorer_b or scorer)
    for name, r, sc in (("a", a, names[0]), ("b", b, names[1])):
        got = r.get(f"{on}_candidates")
        if not got:
            raise ValueError(f"--pair: run {name} has no {on}_candidates (run bench prm-quality with --out"
                             + (" and --eval)" if on == "eval" else ")"))
        if sc not in got[0]["scores"]:
            raise ValueError(f"--pair: run {name} has no scorer {sc!r} (it has {sorted(got[0]['scores'])})")
        recs.append(sorted(got, key=lambda x: (x["problem_id"], x["sample_index"])))
    ka = [(x["problem_id"], x["sample_index"], x["correct"]) for x in recs[0]]
    if ka != [(x["problem_id"], x["sample_index"], x["correct"]) for x in recs[1]]:
        raise ValueError("--pair: the two runs did not score the same responses (or disagree on their correctness)")
    aucs = [within_question_aucs([x["problem_id"] for x in rs], [x["scores"][sc] for x in rs],
                                 [x["correct"] for x in rs], "min") for rs, sc in zip(recs, names)]
    qs = list(aucs[0])
    pools = [pools_from_records(rs, sc) for rs, sc in zip(recs, names)]
    costs = [_scored_label_tokens(r, on) for r in (a, b)]
    out: dict[str, Any] = {
        "scorer": scorer, "scorer_b": names[1], "on": on, "n": n, "methods": [a.get("method"), b.get("method")],
        "questions": len({k[0] for k in ka}), "mixed_questions": len(qs),
        "label_tokens": [cost for cost, _ in costs],
        "label_tokens_of": [of for _, of in costs],
        "within_question_auc_min": [float(np.mean([x[q] for q in qs])) if qs else float("nan") for x in aucs],
        "within_question_auc_min_a_minus_b": list(paired_bootstrap([aucs[0][q] for q in qs], [aucs[1][q] for q in qs],
                                                                   seed=seed)),
    }
    for rule in ("prm-min", "weighted-majority"):
        key = rule.replace("-", "_")
        out[f"{key}_minus_majority"] = [[r.diff, r.lo, r.hi] for r in
                                        (bon_vs_majority(p, rule, n, seed=seed) for p in pools)]
        out[f"{key}_a_minus_b"] = list(scorer_vs_scorer(pools[0], pools[1], rule, n, seed=seed)[:3])
    return out


def _scored_label_tokens(run: dict[str, Any], on: str) -> tuple[float | None, str]:
    """The rollout tokens of the labels behind a run's scored candidates, and what they are: on ``curve``, the
    mean over folds of the top size's training labels (what its out-of-fold scores were trained on), else (or
    for a run saved without them) the whole corpus'."""
    per_size = run.get("train_label_tokens") or {}
    if on == "curve" and per_size:
        top = max(per_size, key=int)
        return float(per_size[top]), f"{top} training responses, mean over folds"
    return run.get("label_tokens"), "the whole corpus"


def _print_pair(r: dict[str, Any]) -> None:
    a, b = (m or "?" for m in r["methods"])
    iv = lambda x, k=100: f"{k * x[0]:+.1f} [{k * x[1]:+.1f}, {k * x[2]:+.1f}]"  # noqa: E731
    sc = r["scorer"] if r.get("scorer_b", r["scorer"]) == r["scorer"] else f"{r['scorer']} (a) vs {r['scorer_b']} (b)"
    print(f"{sc}, {a} (a) vs {b} (b), on the {r['on']} responses: {r['questions']} questions, "
          f"{r['mixed_questions']} mixed, N = {r['n']}")
    (ta, tb), (oa, ob) = r["label_tokens"], r.get("label_tokens_of", ["", ""])
    print(f"  training labels cost: a {ta:,.0f} ({oa}) / b {tb:,.0f} ({ob}) rollout tokens")
    wa, wb = r["within_question_auc_min"]
    d = r["within_question_auc_min_a_minus_b"]
    print(f"  within-question AUC (min): a {wa:.3f}, b {wb:.3f}, a - b {d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]")
    for rule in ("prm_min", "weighted_majority"):
        ma, mb = r[f"{rule}_minus_majority"]
        print(f"  {rule.replace('_', '-')}: a - majority {iv(ma)}, b - majority {iv(mb)}, a - b {iv(r[f'{rule}_a_minus_b'])}")


def eval_items(corpus: Path, eval_dir: Path, method: str, questions: int | None,
               cache: Path) -> tuple[list[Item], Path]:
    """The held-apart candidates (split as ``method``'s labels were) and where their features are cached:
    ``eval_dir``'s, or with ``eval_dir`` ``rest`` the corpus' own questions after its first ``questions``."""
    split = "newline" if method == "newline" else "confidence"
    if str(eval_dir) != "rest":
        return candidate_items(eval_dir, corpus_tau(corpus), split), eval_dir / "features"
    if not questions or is_shipped(corpus, method):
        raise ValueError("--eval rest holds apart the questions after --questions K of a `bench corpus` folder: "
                         "give --questions and a corpus folder with problems.jsonl")
    every = candidate_items(corpus, corpus_tau(corpus), split)
    trained_on = {i.problem_id for i in first_questions(every, corpus, questions)}
    rest = [i for i in every if i.problem_id not in trained_on]
    if not rest:
        raise ValueError(f"--eval rest: {corpus} has no questions after its first {questions}")
    return rest, cache


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
            runs = [_read_run(Path(f)) for f in a.pair]
            if len(a.pair_scorer) > 2:
                raise ValueError("--pair-scorer: one scorer, or two (run a's, run b's)")
            pr = pair_runs(runs[0], runs[1], a.pair_scorer[0], on=a.pair_on, seed=a.seed,
                           scorer_b=a.pair_scorer[-1])
        except ValueError as e:
            p.error(str(e))
        _print_pair(pr)
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
