"""How good a PRM is, measured the way a user of it cares about: pure functions, no model.

- :func:`response_auc`: aggregated step scores vs final correctness (does the PRM rank right answers higher?);
- :func:`within_question_auc`: the same, but only candidates of one question compared with each other (what
  Best-of-N asks of a score; a pooled AUC also rewards knowing which *questions* are easy);
  :func:`within_question_aucs` gives each question's, to pair two scorers on;
- :func:`bon_vs_majority`: Best-of-N accuracy of a scoring rule and of majority vote on the same pools, per
  question (exact expectation over all N-subsets of each pool), and their paired difference with a
  bootstrap interval over questions; :func:`scorer_vs_scorer`: the same paired difference between two
  scorers of the same candidates under one rule;
- :func:`learning_curve_subsets`: nested training subsets of growing size in *responses*, whole questions
  only, drawn from the training side of a question split, so no question is ever on both sides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..search.aggregate import aggregate
from ..search.bon import Candidate, get_rule
from ..search.estimate import build_pool, exact_accuracy
from .data import roc_auc


def response_auc(step_scores: Sequence[Sequence[float]], correct: Sequence[bool], how: str = "min") -> float:
    """AUC of the aggregated score of each response against its final correctness (nan with one class).

    >>> response_auc([[0.9, 0.8], [0.2, 0.9], [0.7]], [True, False, True], "min")
    1.0
    """
    keep = [i for i, s in enumerate(step_scores) if len(s)]
    agg = [aggregate(list(step_scores[i]), how) for i in keep]
    return roc_auc(np.asarray(agg), np.asarray([float(correct[i]) for i in keep]))


def within_question_auc(groups: Sequence[str], step_scores: Sequence[Sequence[float]], correct: Sequence[bool],
                        how: str = "min") -> tuple[float, int]:
    """Mean over questions of the AUC among one question's own responses (aggregated score vs correctness),
    and how many questions it averages: only those with both a right and a wrong scored response. Ties count
    one half, as in a random tie-break. (nan, 0) when no question is mixed.

    >>> within_question_auc(["a", "a", "b", "b", "b"], [[0.2], [0.1], [0.9], [0.8], [0.7]],
    ...                     [True, False, True, False, True])
    (0.75, 2)
    """
    aucs = list(within_question_aucs(groups, step_scores, correct, how).values())
    return (float(np.mean(aucs)), len(aucs)) if aucs else (float("nan"), 0)


def within_question_aucs(groups: Sequence[str], step_scores: Sequence[Sequence[float]], correct: Sequence[bool],
                         how: str = "min") -> dict[str, float]:
    """Each mixed question's own AUC (see :func:`within_question_auc`), by question, in first-seen order: what
    two scorers of the same responses are paired on.

    >>> within_question_aucs(["a", "a", "b", "b", "b"], [[0.2], [0.1], [0.9], [0.8], [0.7]],
    ...                      [True, False, True, False, True])
    {'a': 1.0, 'b': 0.5}
    """
    by: dict[str, list[tuple[float, bool]]] = {}
    for g, sc, ok in zip(groups, step_scores, correct):
        if len(sc):
            by.setdefault(g, []).append((aggregate(list(sc), how), bool(ok)))
    out = {}
    for g, rows in by.items():
        pos = [v for v, ok in rows if ok]
        neg = [v for v, ok in rows if not ok]
        if pos and neg:
            out[g] = float(np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg]))
    return out


def paired_bootstrap(a: Sequence[float], b: Sequence[float], n_boot: int = 2000, seed: int = 0,
                     ci: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``a - b`` (one pair per question) and its percentile bootstrap interval over questions.

    >>> paired_bootstrap([1.0, 0.5, 1.0], [0.5, 0.5, 0.5])[0]
    0.3333333333333333
    """
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    if d.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng([seed, 0xD1FF])
    means = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - ci) / 2, 1 - (1 - ci) / 2])
    return float(d.mean()), float(lo), float(hi)


@dataclass
class BoNResult:
    """Best-of-N of one rule against majority vote on the same pools, at one N.

    acc / majority / oracle: mean per-question accuracy; diff, lo, hi: paired difference rule - majority
    with its 95% bootstrap interval; questions: pools used (those with at least N candidates).
    """

    n: int
    acc: float
    majority: float
    oracle: float
    diff: float
    lo: float
    hi: float
    questions: int


def bon_vs_majority(pools: Sequence[Sequence[Candidate]], rule: str, n: int, *, seed: int = 0) -> BoNResult:
    """Exact Best-of-``n`` accuracy of ``rule`` (e.g. ``prm-min``) vs ``majority`` on each pool of >= n.

    >>> good = [Candidate(0, "1", [0.9], True), Candidate(1, "2", [0.1], False), Candidate(2, "2", [0.2], False)]
    >>> r = bon_vs_majority([good], "prm-min", 3)
    >>> r.acc, r.majority, r.diff
    (1.0, 0.0, 1.0)
    """
    acc = per_question_accuracy(pools, rule, n)
    maj = per_question_accuracy(pools, "majority", n)
    orc = per_question_accuracy(pools, "oracle", n)
    if not acc:
        nan = float("nan")
        return BoNResult(n, nan, nan, nan, nan, nan, nan, 0)
    d, lo, hi = paired_bootstrap(acc, maj, seed=seed)
    return BoNResult(n, float(np.mean(acc)), float(np.mean(maj)), float(np.mean(orc)), d, lo, hi, len(acc))


def per_question_accuracy(pools: Sequence[Sequence[Candidate]], rule: str, n: int) -> list[float]:
    """Exact Best-of-``n`` accuracy of ``rule`` on each pool of at least ``n`` candidates, in pool order.

    >>> per_question_accuracy([[Candidate(0, "1", [0.9], True), Candidate(1, "2", [0.1], False)]], "prm-min", 2)
    [1.0]
    """
    how = get_rule(rule).how  # None for majority / oracle: they read answers, not scores
    return [exact_accuracy(build_pool(c, how), rule, n)[0] for c in pools if len(c) >= n]


def scorer_vs_scorer(pools_a: Sequence[Sequence[Candidate]], pools_b: Sequence[Sequence[Candidate]], rule: str,
                     n: int, *, seed: int = 0) -> tuple[float, float, float, int]:
    """Paired difference of one rule's Best-of-``n`` accuracy under two scorers of the *same* candidates
    (pools_a[q] and pools_b[q] hold question q's candidates, scored by a and by b): mean a - b per question,
    its bootstrap 95% interval, and the questions used. Asks whether scorer a adds anything over scorer b
    (e.g. a PRM's weighted vote over the policy's own confidence as the weight).

    >>> c = lambda s: [Candidate(0, "1", [s], True), Candidate(1, "2", [0.5], False)]
    >>> scorer_vs_scorer([c(0.9)], [c(0.1)], "prm-min", 2)[0]
    1.0
    """
    if len(pools_a) != len(pools_b) or any(
            [x.index for x in a] != [x.index for x in b] for a, b in zip(pools_a, pools_b)):
        raise ValueError("scorer_vs_scorer: the two scorers must score the same candidates, pool for pool")
    a, b = per_question_accuracy(pools_a, rule, n), per_question_accuracy(pools_b, rule, n)
    d, lo, hi = paired_bootstrap(a, b, seed=seed)
    return d, lo, hi, len(a)


def learning_curve_subsets(train_groups: Sequence[str], responses_per_group: dict[str, int],
                           sizes: Sequence[int], seed: int = 0) -> dict[int, list[str]]:
    """For each size, the groups (questions) of a nested training subset holding >= size responses.

    Groups are taken whole in one seeded order, so each subset is a prefix of the next; a size larger than
    all the training responses is left out (not silently clamped).

    >>> subs = learning_curve_subsets(["a", "b", "c", "d"], {"a": 2, "b": 2, "c": 2, "d": 2}, [3, 4, 9], seed=1)
    >>> sorted(subs), len(subs[3]), set(subs[3]) <= set(subs[4])
    ([3, 4], 2, True)
    """
    order = [train_groups[i] for i in np.random.default_rng([seed, 0x5E7]).permutation(len(train_groups))]
    total = sum(responses_per_group[g] for g in order)
    out: dict[int, list[str]] = {}
    for size in sorted(set(sizes)):
        if size > total:
            continue
        taken, count = [], 0
        for g in order:
            if count >= size:
                break
            taken.append(g)
            count += responses_per_group[g]
        out[size] = taken
    return out
