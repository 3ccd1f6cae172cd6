"""Best-of-N accuracy as a function of N, estimated from one large pool of candidates per question.

The paper evaluates Best-of-N for N = 4..64 from a pool of 256 (math) / 64 (code) candidates per question.
The accuracy at N is the expectation, over all N-subsets of a question's pool, of "the candidate the rule
picks from the subset is correct", averaged over questions.

- :func:`subsample_curve` estimates it by drawing ``resamples`` random N-subsets per question WITHOUT
  replacement (seeded: the stream of question q at size N is ``seeds.rng_for(seed, q, N)``, so a value does
  not depend on which other N or questions are asked for). When N equals a pool's size there is only one
  subset, which is evaluated once.
- :func:`exact_curve` computes the expectation exactly: in closed form for ``oracle``
  (pass@N = 1 - C(n-c, N) / C(n, N)) and for the ``prm-*`` argmax rules (the candidate ranked r-th is chosen
  in exactly C(n-1-r, N-1) subsets), and by enumerating all C(n, N) subsets for the vote rules when that
  number is at most ``max_subsets``.

N larger than a pool is an ERROR (not clamped): clamping would silently report "best of 64" for questions
that only had 30 candidates. :func:`default_ns` gives 1, 2, 4, ... up to the smallest pool size, plus that
size itself.

Confidence interval: a percentile bootstrap over QUESTIONS (``n_boot`` resamples of the questions with
replacement, seeded), of the per-question accuracies (a question's subsample mean, or its exact value). It
describes how the accuracy would vary over another draw of questions of the same kind; the subsampling
noise of a finite ``resamples`` is inside the per-question values and so inside the interval too. With one
question the interval collapses to the point.

Every selection goes through :func:`adaptivestep.search.bon.choose`, the same code as :func:`~.bon.select`,
with one difference in what is counted: a tie between answers in a vote (``majority``, and the majority
fallback of the other rules) counts at its expectation over a uniformly random tie-break
(:func:`majority_expectation`), where ``select`` takes the answer whose first holder has the lowest index. So a
vote's estimate does not depend on the order of the candidates: with N equal to the pool size and every answer
different (typical of code, where the vote key is the whole program), majority counts as the pool's mean
correctness, not as whether candidate 0 happens to be right. Other exact ties (equal PRM scores, equal
confidences, equal weighted sums, a subset where no candidate has an answer) still go to the lowest index:
with continuous scores they are rare.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from math import comb

import numpy as np

from ..seeds import rng_for
from .bon import Candidate, Pool, answer_sums, build_pool, choose, get_rule


class TooManySubsetsError(ValueError):
    """The exact computation would enumerate more subsets than allowed."""


@dataclass(frozen=True)
class CurvePoint:
    """Accuracy of a rule at one N.

    n: candidates per subset. mean: accuracy in [0, 1] (mean over questions). lo, hi: the confidence
    interval (level ``ci``) of ``mean``. n_questions: questions averaged. fallback_rate: fraction of
    selections (averaged over questions) where a PRM rule fell back to majority. method: "subsample" or
    "exact". resamples: subsets drawn per question (0 for exact).
    """

    n: int
    mean: float
    lo: float
    hi: float
    n_questions: int
    fallback_rate: float
    method: str
    resamples: int = 0


def default_ns(pool_sizes: Sequence[int]) -> list[int]:
    """Powers of two up to the smallest pool size, plus that size.

    >>> default_ns([30, 64]), default_ns([8])
    ([1, 2, 4, 8, 16, 30], [1, 2, 4, 8])
    """
    if not pool_sizes or min(pool_sizes) < 1:
        raise ValueError("default_ns: every pool needs at least one candidate")
    m = min(pool_sizes)
    ns = [1 << i for i in range(m.bit_length()) if (1 << i) <= m]
    return ns if ns[-1] == m else [*ns, m]


def pass_at_n(n: int, c: int, k: int) -> float:
    """Probability that a uniformly random k-subset of n candidates, c of them correct, holds a correct one.

    >>> pass_at_n(4, 1, 2), pass_at_n(4, 0, 4), pass_at_n(10, 3, 8)
    (0.5, 0.0, 1.0)
    """
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass_at_n needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    return 1.0 - comb(n - c, k) / comb(n, k)


def bootstrap_ci(values: Sequence[float], ci: float = 0.95, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (one value per question).

    >>> bootstrap_ci([0.5, 0.5, 0.5])
    (0.5, 0.5)
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("bootstrap_ci: no values")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    rng = rng_for(seed, 0xB007)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - ci) / 2, 1 - (1 - ci) / 2])
    return float(lo), float(hi)


def _pools(pools: Sequence[Sequence[Candidate]], rule: str, weighted_how: str) -> list[Pool]:
    how = get_rule(rule, weighted_how).how
    out = []
    for q, cands in enumerate(pools):
        if any(c.correct is None for c in cands):
            raise ValueError(f"pool #{q}: every candidate needs its correct flag to estimate accuracy")
        out.append(build_pool(cands, how))
    if not out:
        raise ValueError("no pools (questions) given")
    return out


def _check_ns(ns: Sequence[int] | None, sizes: list[int]) -> list[int]:
    if ns is None:
        return default_ns(sizes)
    ns = [int(n) for n in ns]
    for n in ns:
        if n < 1:
            raise ValueError(f"N must be >= 1, got {n}")
        too_small = [q for q, s in enumerate(sizes) if s < n]
        if too_small:
            raise ValueError(
                f"N={n} exceeds the pool size of {len(too_small)} question(s) (pool #{too_small[0]} has "
                f"{sizes[too_small[0]]} candidates); N is not clamped: lower N or give larger pools"
            )
    return ns


def random_subsets(n_pool: int, n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, n) uniform random n-subsets of range(n_pool) without replacement, rows ascending."""
    if n == n_pool:
        return np.arange(n_pool)[None, :]
    keys = rng.random((resamples, n_pool))
    return np.sort(np.argpartition(keys, n - 1, axis=1)[:, :n], axis=1)


def _point(n: int, vals: list[float], fb: list[float], method: str, resamples: int, ci: float,
           n_boot: int, seed: int) -> CurvePoint:
    lo, hi = bootstrap_ci(vals, ci, n_boot, seed)
    return CurvePoint(n, float(np.mean(vals)), lo, hi, len(vals), float(np.mean(fb)), method, resamples)


def majority_expectation(pool: Pool, sub: np.ndarray) -> np.ndarray:
    """Per row of ``sub`` (B, N positions): the chance that a majority vote picks a correct candidate when a tie
    between the top answers is broken uniformly at random (a tied answer counts by the share of its holders that
    are correct). A row with no answer at all counts its lowest-index candidate, as :func:`~.bon.choose` does.

    >>> pool = build_pool([Candidate(i, a, None, ok) for i, (a, ok) in enumerate(
    ...     [("1", False), ("2", False), ("3", True), ("3", True), ("4", False)])], None)
    >>> majority_expectation(pool, np.array([[0, 1, 2, 3], [0, 1, 2, 4], [0, 1, 3, 4]])).tolist()
    [1.0, 0.25, 0.25]
    """
    ok = pool.correct[sub].astype(np.float64)
    votes, right = answer_sums(pool, sub, pool.answer[sub] >= 0, ok)
    tied = (votes > 0) & (votes == votes.max(axis=1, keepdims=True))
    share = np.divide(right, votes, out=np.zeros_like(right), where=votes > 0)
    n_tied = tied.sum(axis=1)
    return np.where(n_tied > 0, (share * tied).sum(axis=1) / np.maximum(n_tied, 1), ok[:, 0])


def choice_accuracy(pool: Pool, sub: np.ndarray, rule: str, weighted_how: str = "min") -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``sub``: the (expected) correctness of what ``rule`` picks, and whether it fell back to
    majority. Votes count ties at their expectation (:func:`majority_expectation`)."""
    if rule == "majority":
        return majority_expectation(pool, sub), np.zeros(len(sub), dtype=bool)
    c = choose(pool, sub, rule, weighted_how)
    acc = pool.correct[c.pos].astype(np.float64)
    if c.fallback.any():  # every rule falls back to majority
        acc[c.fallback] = majority_expectation(pool, sub[c.fallback])
    return acc, c.fallback


def subsample_curve(
    pools: Sequence[Sequence[Candidate]],
    rule: str,
    ns: Sequence[int] | None = None,
    *,
    resamples: int = 100,
    seed: int = 0,
    weighted_how: str = "min",
    ci: float = 0.95,
    n_boot: int = 1000,
) -> list[CurvePoint]:
    """Accuracy of ``rule`` at each N by subsampling each question's pool (see the module docstring).

    ``pools``: one list of candidates per question, every ``correct`` flag set.
    """
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    ps = _pools(pools, rule, weighted_how)
    out = []
    for n in _check_ns(ns, [len(p.indices) for p in ps]):
        vals, fbs = [], []
        for q, p in enumerate(ps):
            sub = random_subsets(len(p.indices), n, resamples, rng_for(seed, q, n))
            acc, fb = choice_accuracy(p, sub, rule, weighted_how)
            vals.append(float(acc.mean()))
            fbs.append(float(fb.mean()))
        out.append(_point(n, vals, fbs, "subsample", resamples, ci, n_boot, seed))
    return out


def _exact_prm(pool: Pool, rule: str, n: int, max_subsets: int) -> tuple[float, float]:
    total = comb(len(pool.indices), n)
    valid = np.flatnonzero(~np.isnan(pool.score))
    # rank: best score first, lower index first among equals (the tie-break of choose)
    ranked = valid[np.lexsort((valid, -pool.score[valid]))]
    size = len(pool.indices)
    acc = sum(comb(size - 1 - r, n - 1) for r, pos in enumerate(ranked) if pool.correct[pos])
    skipped = np.flatnonzero(np.isnan(pool.score))
    n_fallback = comb(len(skipped), n)
    if n_fallback:  # subsets made only of skipped candidates fall back to majority: enumerate them
        if n_fallback > max_subsets:
            raise TooManySubsetsError(f"{n_fallback} all-skipped subsets exceed max_subsets={max_subsets}")
        sub = np.array(list(combinations(skipped.tolist(), n)), dtype=np.int64)
        acc += float(majority_expectation(pool, sub).sum())
    return acc / total, n_fallback / total


def exact_accuracy(pool: Pool, rule: str, n: int, *, weighted_how: str = "min",
                   max_subsets: int = 200_000) -> tuple[float, float]:
    """Exact expected accuracy of ``rule`` over all n-subsets of one question's pool, and the fallback rate.

    Closed form for ``oracle`` and ``prm-*``; enumeration of all C(size, n) subsets otherwise (raises
    :class:`TooManySubsetsError` above ``max_subsets``). ``pool`` from :func:`~.bon.build_pool` with the
    rule's aggregation.
    """
    size = len(pool.indices)
    if not 1 <= n <= size:
        raise ValueError(f"N={n} must be in [1, pool size {size}]")
    if rule == "oracle":
        return pass_at_n(size, int(pool.correct.sum()), n), 0.0
    if rule.startswith("prm-"):
        return _exact_prm(pool, rule, n, max_subsets)
    total = comb(size, n)
    if total > max_subsets:
        raise TooManySubsetsError(
            f"exact {rule!r} at N={n} needs C({size}, {n}) = {total} subsets > max_subsets={max_subsets}; "
            "use subsample_curve"
        )
    sub = np.array(list(combinations(range(size), n)), dtype=np.int64)
    acc, fb = choice_accuracy(pool, sub, rule, weighted_how)
    return float(acc.mean()), float(fb.mean())


def exact_curve(
    pools: Sequence[Sequence[Candidate]],
    rule: str,
    ns: Sequence[int] | None = None,
    *,
    weighted_how: str = "min",
    max_subsets: int = 200_000,
    ci: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
) -> list[CurvePoint]:
    """Exact accuracy of ``rule`` at each N (see :func:`exact_accuracy`), with a bootstrap CI over questions."""
    ps = _pools(pools, rule, weighted_how)
    out = []
    for n in _check_ns(ns, [len(p.indices) for p in ps]):
        res = [exact_accuracy(p, rule, n, weighted_how=weighted_how, max_subsets=max_subsets) for p in ps]
        out.append(_point(n, [r[0] for r in res], [r[1] for r in res], "exact", 0, ci, n_boot, seed))
    return out


def format_curve(points: Sequence[CurvePoint], rule: str = "") -> str:
    """A plain-text table of a curve (accuracy in percent)."""
    head = f"{'rule':<18} {'N':>5} {'acc%':>7} {'95% CI':>16} {'fallback%':>9} {'method':>9}"
    rows = [
        f"{rule:<18} {p.n:>5} {100 * p.mean:>7.2f} {f'[{100 * p.lo:.2f}, {100 * p.hi:.2f}]':>16} "
        f"{100 * p.fallback_rate:>9.2f} {p.method:>9}"
        for p in points
    ]
    return "\n".join([head, *rows])
