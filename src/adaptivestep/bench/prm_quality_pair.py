"""Two ``bench prm-quality --out`` results paired per question (``--pair``): the saved per-candidate scores
(:func:`candidate_records`), and the paired differences of two label sets or two scorers on the same responses."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .prm_quality_items import Item, pools_of


def candidate_records(items: Sequence[Item], scores: dict[str, list[list[float]]]) -> list[dict[str, Any]]:
    """One JSON-ready record per candidate: its question, index, answer, correctness and every scorer's step
    scores. Saved with the results so that held-apart tables can be pooled or re-read exactly later
    (:func:`pools_from_records` rebuilds the Best-of-N pools of one scorer)."""
    return [{"problem_id": it.problem_id, "sample_index": it.sample_index, "vote": it.vote, "correct": it.correct,
             "scores": {name: [round(float(x), 6) for x in sc[k]] for name, sc in scores.items()}}
            for k, it in enumerate(items)]


def pools_from_records(records: Sequence[dict[str, Any]], scorer: str) -> list[list[Any]]:
    """The Best-of-N pools (one per question, first-seen order) of ``scorer`` from :func:`candidate_records`."""
    return pools_of((r["problem_id"], r["sample_index"], r["vote"], r["scores"][scorer], r["correct"]) for r in records)


def read_run(path: Path) -> dict[str, Any]:
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


def print_pair(r: dict[str, Any]) -> None:
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
