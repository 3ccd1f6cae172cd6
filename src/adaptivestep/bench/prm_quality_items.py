"""Labelled responses as ``bench prm-quality`` reads them (:class:`Item`): from a `bench corpus` folder, a
shipped corpus or a folder of candidates; each response's step features (a backbone's hidden states, cached
per response, or the policy's own token log-probs); and the Best-of-N pools they form."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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


def features(items: Sequence[Item], backbone: str, cache_dir: Path, *, max_length: int = 1024,
             save_every: int = 8) -> list[np.ndarray]:
    """Step-end hidden states (K_i, H) of each item under ``backbone``, cached in ``cache_dir`` one entry per
    response (keyed by its question and steps), so a grown corpus computes only its new responses; backbone
    ``logprobs`` is no model: the policy's own step log-prob features (:func:`policy_step_features`).
    The store is written after every ``save_every`` or more new responses (whole questions, so that a question's
    responses still share their prompt's forward pass): a run stopped midway keeps what it computed (a 1.5B
    backbone takes about half a minute per response on our 2 CPU cores)."""
    if backbone == LOGPROBS:
        return [policy_step_features(i) for i in items]
    path = cache_dir / f"features-{backbone.replace('/', '_')}-{max_length}.npz"
    keys = [item_key(i) for i in items]
    have = load_feature_store(path)
    todo = {k: i for k, i in zip(keys, items) if k not in have}
    if todo:
        from ..prm.model import PRM

        prm = PRM.from_backbone(backbone, mode="head", max_length=max_length)
        by_q: dict[str, list[str]] = {}
        for k, i in todo.items():
            by_q.setdefault(i.problem_id, []).append(k)
        batch: list[str] = []
        done = 0
        for n, ks in enumerate(by_q.values()):
            batch += ks
            if len(batch) >= save_every or n == len(by_q) - 1:
                got = prm.features_batch([(todo[k].question, todo[k].steps) for k in batch], progress=True)
                have.update(zip(batch, got))
                save_feature_store(path, have)
                done += len(batch)
                print(f"{backbone} features: {done} of {len(todo)} new responses computed and saved", flush=True)
                batch = []
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


def candidate_pools(items: Sequence[Item], scores: list[list[float]]) -> list[list[Any]]:
    """Best-of-N pools, one per question in first-seen order, of the items scored by ``scores``."""
    return pools_of((it.problem_id, it.sample_index, it.vote, sc, it.correct) for it, sc in zip(items, scores))


def pools_of(rows: Iterable[tuple[str, int, str | None, list[float], bool]]) -> list[list[Any]]:
    """Group (problem_id, index, vote, step scores, correct) rows into Best-of-N pools, first-seen order."""
    from ..search.bon import Candidate

    pools: dict[str, list[Candidate]] = {}
    for pid, index, vote, sc, correct in rows:
        pools.setdefault(pid, []).append(Candidate(index, vote, sc, correct))
    return list(pools.values())
