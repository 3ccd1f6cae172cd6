"""ProcessBench-style PRM evaluation: can the PRM find the earliest wrong step of a solution?

A solution is erroneous when it has a wrong step (``label`` = index of the earliest one, 0-based) and correct
when ``label == -1``. The PRM predicts the first step whose score is below a threshold (-1 if none).
Reported, as in ProcessBench (Zheng et al., 2024): accuracy on erroneous solutions (predicted index == gold
index), accuracy on correct solutions (predicted -1) and their harmonic mean, F1. The threshold is tuned on a
held-out part of the items (stratified by correct / erroneous, seeded) and the metrics are reported on the rest.

ProcessBench's own JSONL (fields ``id``, ``problem``, ``steps``, ``label``) is read by
:func:`read_processbench`; our labelled records become items with :func:`items_from_records`.
Everything here is plain Python; the PRM comes in through the :class:`~adaptivestep.scoring.StepScorer` Protocol.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..jsonl import DataError, iter_json
from ..records import LabeledRecord
from ..scoring import StepScorer

# Default threshold grid: 0.00, 0.01, ..., 1.00 (scores are probabilities).
DEFAULT_GRID: tuple[float, ...] = tuple(round(i / 100, 2) for i in range(101))


@dataclass
class ProcessBenchItem:
    """One solution to judge: ``label`` = index of its earliest wrong step, -1 when every step is right."""

    id: str
    problem: str
    steps: list[str]
    label: int
    meta: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------- inputs
def read_processbench(path: str | Path) -> list[ProcessBenchItem]:
    """Read ProcessBench JSONL: ``problem`` (str), ``steps`` (non-empty list of str), ``label`` (int,
    -1 or null for a correct solution, else the earliest wrong step, ``< len(steps)``), optional ``id``
    (default ``"<file stem>:<line>"``). Other fields (``generator``, ``final_answer_correct``) go to ``meta``.
    A bad line raises ``DataError`` naming ``file:line``.
    """
    path = Path(path)
    items: list[ProcessBenchItem] = []
    for line, obj in iter_json(path):
        where = f"{path}:{line}"
        problem, steps, label = obj.get("problem"), obj.get("steps"), obj.get("label", "missing")
        if not isinstance(problem, str):
            raise DataError(f"{where}: field 'problem' must be a string")
        if not isinstance(steps, list) or not steps or not all(isinstance(s, str) for s in steps):
            raise DataError(f"{where}: field 'steps' must be a non-empty list of strings")
        if label is None:
            label = -1
        if isinstance(label, bool) or not isinstance(label, int) or not -1 <= label < len(steps):
            raise DataError(
                f"{where}: field 'label' must be -1 (no error) or a step index in [0, {len(steps) - 1}], "
                f"got {label!r}"
            )
        meta = {k: v for k, v in obj.items() if k not in ("id", "problem", "steps", "label")}
        items.append(ProcessBenchItem(str(obj.get("id", f"{path.stem}:{line}")), problem, steps, label, meta))
    return items


def first_errors_from_labels(
    record: LabeledRecord, threshold: float = 0.5, *, label_field: str = "labels"
) -> int:
    """Index of the first step whose hard label is 0 (its ``label_field`` value ``< threshold``); -1 if none.

    ``label_field`` picks ``labels`` (default), ``hard_labels`` or ``soft_labels``. With soft labels (fraction of
    rollouts that reached the right answer) 0.5 marks a step bad when most rollouts fail; pass a small
    threshold (1e-9) to follow the hard-label rule "bad = no rollout succeeded".

    >>> first_errors_from_labels(LabeledRecord(prompt="q", completions=["a", "b", "c"], labels=[1.0, 0.0, 0.0]))
    1
    >>> first_errors_from_labels(LabeledRecord(prompt="q", completions=["a"], labels=[0.75]))
    -1
    """
    if label_field not in ("labels", "hard_labels", "soft_labels"):
        raise ValueError(f"label_field must be labels, hard_labels or soft_labels, got {label_field!r}")
    values = getattr(record, label_field)
    if len(values) != len(record.completions):
        raise ValueError(
            f"record {record.problem_id!r}#{record.sample_index}: {label_field} has {len(values)} values for "
            f"{len(record.completions)} steps"
        )
    return next((k for k, v in enumerate(values) if v < threshold), -1)


def items_from_records(
    records: Iterable[LabeledRecord], threshold: float = 0.5, *, label_field: str = "labels"
) -> list[ProcessBenchItem]:
    """Our labelled records as evaluation items (gold = :func:`first_errors_from_labels`)."""
    return [
        ProcessBenchItem(
            id=f"{r.problem_id}#{r.sample_index}",
            problem=r.prompt,
            steps=list(r.completions),
            label=first_errors_from_labels(r, threshold, label_field=label_field),
            meta={"method": r.method},
        )
        for r in records
    ]


# --------------------------------------------------------------------------------------------- pure metric
def predict_first_error(scores: Sequence[float], threshold: float) -> int:
    """Index of the first step with ``score < threshold``; -1 if every step scores at least ``threshold``.

    >>> predict_first_error([0.9, 0.4, 0.2], 0.5)
    1
    >>> predict_first_error([0.9, 0.8], 0.5)
    -1
    """
    return next((k for k, s in enumerate(scores) if s < threshold), -1)


def processbench_metrics(pred: Sequence[int], gold: Sequence[int]) -> dict[str, Any]:
    """ProcessBench metrics of predicted vs gold earliest-error indices (-1 = no error).

    Returns fractions in [0, 1]: ``error_acc`` (share of erroneous solutions, gold != -1, whose predicted index
    equals the gold one), ``correct_acc`` (share of correct solutions predicted -1), ``f1`` (their harmonic
    mean, 0 when both are 0), with counts ``n_error`` / ``n_correct``. A metric with no item to measure is None.

    >>> m = processbench_metrics([1, -1, 0, -1], [1, 2, -1, -1])
    >>> m["error_acc"], m["correct_acc"], round(m["f1"], 3)
    (0.5, 0.5, 0.5)
    """
    if len(pred) != len(gold):
        raise ValueError(f"{len(pred)} predictions for {len(gold)} gold labels")
    err = [p == g for p, g in zip(pred, gold) if g != -1]
    ok = [p == -1 for p, g in zip(pred, gold) if g == -1]
    error_acc = sum(err) / len(err) if err else None
    correct_acc = sum(ok) / len(ok) if ok else None
    f1: float | None = None
    if error_acc is not None and correct_acc is not None:
        total = error_acc + correct_acc
        f1 = 2 * error_acc * correct_acc / total if total > 0 else 0.0
    return {
        "error_acc": error_acc,
        "correct_acc": correct_acc,
        "f1": f1,
        "n_error": len(err),
        "n_correct": len(ok),
    }


def _objective(m: dict[str, Any]) -> float:
    """F1, or the one accuracy that is defined when a part has only one kind of solution."""
    if m["f1"] is not None:
        return float(m["f1"])
    return float(m["error_acc"] if m["error_acc"] is not None else (m["correct_acc"] or 0.0))


def tune_threshold(
    scores_list: Sequence[Sequence[float]],
    gold_first_errors: Sequence[int],
    candidates: Sequence[float] = DEFAULT_GRID,
) -> float:
    """The candidate threshold with the best F1 (:func:`processbench_metrics`) on these solutions.

    Ties go to the middle one of the tied candidates (in sorted order), which sits inside a separating gap
    rather than on its edge.

    >>> tune_threshold([[0.9, 0.2], [0.8, 0.7]], [1, -1], candidates=[0.1, 0.3, 0.5, 0.75, 0.9])
    0.5
    """
    if len(scores_list) != len(gold_first_errors):
        raise ValueError(f"{len(scores_list)} score lists for {len(gold_first_errors)} gold labels")
    if not scores_list:
        raise ValueError("no solutions to tune the threshold on")
    grid = sorted({float(c) for c in candidates})
    if not grid:
        raise ValueError("no candidate thresholds")
    values = [
        _objective(processbench_metrics([predict_first_error(s, t) for s in scores_list], gold_first_errors))
        for t in grid
    ]
    best = max(values)
    tied = [t for t, v in zip(grid, values) if v == best]
    return tied[len(tied) // 2]


# --------------------------------------------------------------------------------------------- driver
def split_tune_eval(gold: Sequence[int], tune_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of the tune part and the eval part, stratified by correct / erroneous, seeded, sorted.

    Each kind contributes ``tune_fraction * count`` items, rounded half up, to the tune part.

    >>> tune, rest = split_tune_eval([-1, -1, -1, -1, 0, 2], 0.5, seed=0)
    >>> len(tune), len(rest)
    (3, 3)
    """
    if not 0.0 <= tune_fraction < 1.0:
        raise ValueError(f"tune_fraction must be in [0, 1), got {tune_fraction}")
    rng = random.Random(seed)
    tune: list[int] = []
    for group in ([i for i, g in enumerate(gold) if g == -1], [i for i, g in enumerate(gold) if g != -1]):
        rng.shuffle(group)
        tune.extend(group[: math.floor(tune_fraction * len(group) + 0.5)])
    chosen = set(tune)
    return sorted(tune), [i for i in range(len(gold)) if i not in chosen]


def score_items(
    scorer: StepScorer, items: Sequence[ProcessBenchItem], batch_size: int = 16
) -> list[list[float]]:
    """Step scores of every item, ``batch_size`` items per ``score_batch`` call; checks the lengths."""
    scores: list[list[float]] = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        out = scorer.score_batch([(it.problem, it.steps) for it in chunk])
        if len(out) != len(chunk):
            raise ValueError(f"scorer returned {len(out)} score lists for {len(chunk)} items")
        for it, s in zip(chunk, out):
            if len(s) != len(it.steps):
                raise ValueError(f"item {it.id!r}: scorer returned {len(s)} scores for {len(it.steps)} steps")
        scores.extend([float(x) for x in s] for s in out)
    return scores


def evaluate_prm(
    scorer: StepScorer,
    items: Sequence[ProcessBenchItem],
    tune_fraction: float = 0.3,
    seed: int = 0,
    *,
    threshold: float | None = None,
    candidates: Sequence[float] = DEFAULT_GRID,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Score all items, tune the threshold on a ``tune_fraction`` part, report ProcessBench metrics on the rest.

    With ``threshold`` given, nothing is tuned and every item is evaluated at it. Returns a JSON-ready dict:
    ``threshold``, ``tuned``, ``seed``, ``tune_fraction``, ``n_items``, ``n_tune``, ``n_eval``, ``tune`` and
    ``eval`` (each :func:`processbench_metrics` at the threshold; ``tune`` is None without tuning) and
    ``predictions`` (per item: ``id``, ``part`` "tune"/"eval", ``gold``, ``pred``).
    """
    if not items:
        raise ValueError("no items to evaluate")
    scores = score_items(scorer, items, batch_size)
    gold = [it.label for it in items]
    if threshold is None:
        tune_idx, eval_idx = split_tune_eval(gold, tune_fraction, seed)
        if not tune_idx or not eval_idx:
            raise ValueError(
                f"{len(items)} items with tune_fraction={tune_fraction} leave the tune part ({len(tune_idx)}) or "
                f"the eval part ({len(eval_idx)}) empty; give more items, another tune_fraction or a threshold"
            )
        thr = tune_threshold([scores[i] for i in tune_idx], [gold[i] for i in tune_idx], candidates)
    else:
        tune_idx, eval_idx, thr = [], list(range(len(items))), float(threshold)
    pred = [predict_first_error(s, thr) for s in scores]

    def part(idx: list[int]) -> dict[str, Any]:
        return processbench_metrics([pred[i] for i in idx], [gold[i] for i in idx])

    in_tune = set(tune_idx)
    return {
        "threshold": thr,
        "tuned": threshold is None,
        "seed": seed,
        "tune_fraction": tune_fraction if threshold is None else 0.0,
        "n_items": len(items),
        "n_tune": len(tune_idx),
        "n_eval": len(eval_idx),
        "tune": part(tune_idx) if tune_idx else None,
        "eval": part(eval_idx),
        "predictions": [
            {"id": it.id, "part": "tune" if i in in_tune else "eval", "gold": gold[i], "pred": pred[i]}
            for i, it in enumerate(items)
        ],
    }


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def format_report(metrics: dict[str, Any]) -> str:
    """A few human-readable lines from :func:`evaluate_prm`'s dict (percentages, as ProcessBench prints).

    >>> m = {"threshold": 0.5, "tuned": False, "n_eval": 4,
    ...      "eval": processbench_metrics([1, -1, 0, -1], [1, 2, -1, -1])}
    >>> print(format_report(m))
    threshold 0.50 (fixed), evaluated on 4 solutions
    eval: error acc 50.0 (n=2)  correct acc 50.0 (n=2)  F1 50.0
    """
    if metrics.get("tuned"):
        how = f"tuned on {metrics['n_tune']} solutions, seed {metrics.get('seed', 0)}"
    else:
        how = "fixed"
    lines = [f"threshold {metrics['threshold']:.2f} ({how}), evaluated on {metrics['n_eval']} solutions"]
    for name in ("eval", "tune"):
        m = metrics.get(name)
        if m:
            lines.append(
                f"{name}: error acc {_pct(m['error_acc'])} (n={m['n_error']})  correct acc "
                f"{_pct(m['correct_acc'])} (n={m['n_correct']})  F1 {_pct(m['f1'])}"
            )
    return "\n".join(lines)
