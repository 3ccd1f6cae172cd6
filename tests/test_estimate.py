"""Accuracy-vs-N estimation: subsampling against exact values on small pools."""

from __future__ import annotations

from itertools import combinations
from math import comb

import numpy as np
import pytest

from adaptivestep.search.bon import Candidate, build_pool, select
from adaptivestep.search.estimate import (
    TooManySubsetsError,
    bootstrap_ci,
    default_ns,
    exact_accuracy,
    exact_curve,
    pass_at_n,
    random_subsets,
    subsample_curve,
)


def _pool(rng: np.random.Generator, n: int) -> list[Candidate]:
    out = []
    for i in range(n):
        scores = None if rng.random() < 0.2 else (rng.integers(0, 5, size=2) / 4).tolist()  # ties on purpose
        ans = str(rng.integers(0, 3)) if rng.random() > 0.15 else None
        conf = None if rng.random() < 0.2 else float(rng.integers(1, 4)) / 4  # ties again
        out.append(Candidate(i, ans, scores, ans == "0", conf))
    return out


def _brute(cands: list[Candidate], rule: str, n: int) -> float:
    """Mean correctness of select() over every n-subset (the definition), a vote's tie at its expectation."""
    hits = []
    for s in combinations(cands, n):
        sel = select(list(s), rule)
        hits.append(_vote(s) if rule == "majority" or sel.fallback else {c.index: c.correct for c in s}[sel.chosen])
    return float(np.mean(hits))


def _vote(s: tuple[Candidate, ...]) -> float:
    """Majority with a uniformly random tie-break between the top answers: the chance it picks a correct one."""
    holders: dict[str, list[bool]] = {}
    for c in s:
        if c.answer is not None and c.answer.strip():
            holders.setdefault(c.answer, []).append(bool(c.correct))
    if not holders:
        return float(bool(s[0].correct))  # nothing votes: the lowest index, as select
    top = max(map(len, holders.values()))
    return float(np.mean([np.mean(h) for h in holders.values() if len(h) == top]))


RULES = ["prm-min", "prm-last", "prm-prod", "majority", "weighted-majority", "confidence", "oracle"]


@pytest.mark.parametrize("rule", RULES)
def test_exact_equals_brute_force_definition(rule: str) -> None:
    rng = np.random.default_rng(1)
    for _ in range(4):
        cands = _pool(rng, 7)
        p = build_pool(cands, "min" if rule == "weighted-majority" else (rule[4:] if rule.startswith("prm-") else None))
        for n in (1, 2, 3, 5, 7):
            assert exact_accuracy(p, rule, n)[0] == pytest.approx(_brute(cands, rule, n), abs=1e-12)


def test_pass_at_n_closed_form() -> None:
    for n in range(1, 8):
        for c in range(n + 1):
            for k in range(1, n + 1):
                brute = np.mean([any(i < c for i in s) for s in combinations(range(n), k)])
                assert pass_at_n(n, c, k) == pytest.approx(brute)
    with pytest.raises(ValueError):
        pass_at_n(3, 4, 1)


def test_prm_closed_form_counts_fallback_subsets() -> None:
    # 2 of 5 candidates unscored: the 1 subset of size 2 made of them falls back to majority
    cands = [Candidate(0, "a", None, True), Candidate(1, "a", None, True), Candidate(2, "b", [0.9], False),
             Candidate(3, "c", [0.5], True), Candidate(4, "d", [0.1], False)]
    p = build_pool(cands, "min")
    acc, fb = exact_accuracy(p, "prm-min", 2)
    assert fb == pytest.approx(1 / comb(5, 2))
    assert acc == pytest.approx(_brute(cands, "prm-min", 2))


@pytest.mark.parametrize("rule", RULES)
def test_subsampling_converges_to_exact(rule: str) -> None:
    rng = np.random.default_rng(5)
    pools = [_pool(rng, 8) for _ in range(6)]
    exact = exact_curve(pools, rule, [1, 2, 4, 8])
    sub = subsample_curve(pools, rule, [1, 2, 4, 8], resamples=3000, seed=11)
    for e, s in zip(exact, sub):
        assert e.n == s.n and s.method == "subsample" and e.method == "exact"
        assert s.mean == pytest.approx(e.mean, abs=0.015)
        assert s.fallback_rate == pytest.approx(e.fallback_rate, abs=0.015)
    assert sub[-1].mean == pytest.approx(exact[-1].mean, abs=1e-12)  # N = pool size: one subset, exact
    # the error shrinks with more resamples (on average over Ns)
    few = subsample_curve(pools, rule, [2, 4], resamples=20, seed=11)
    many = subsample_curve(pools, rule, [2, 4], resamples=3000, seed=11)
    err = lambda pts: sum(abs(p.mean - e.mean) for p, e in zip(pts, exact[1:3]))
    assert err(many) <= err(few) + 1e-9


def test_subsampling_is_seeded_and_independent_of_other_ns() -> None:
    rng = np.random.default_rng(2)
    pools = [_pool(rng, 10) for _ in range(3)]
    a = subsample_curve(pools, "prm-min", [2, 4], resamples=50, seed=3)
    b = subsample_curve(pools, "prm-min", [4], resamples=50, seed=3)
    assert a[1] == b[0]
    assert subsample_curve(pools, "prm-min", [2, 4], resamples=50, seed=3) == a


def test_random_subsets_are_uniform_without_replacement() -> None:
    sub = random_subsets(6, 3, 20000, np.random.default_rng(0))
    assert sub.shape == (20000, 3)
    assert (np.diff(sub, axis=1) > 0).all()  # no repeats, ascending
    freq = np.bincount(sub.ravel(), minlength=6) / sub.size
    assert np.allclose(freq, 1 / 6, atol=0.01)


def test_ns_larger_than_pool_is_an_error_and_default_ns() -> None:
    pools = [[Candidate(i, "1", [0.5], True) for i in range(5)], [Candidate(i, "1", [0.5], True) for i in range(8)]]
    with pytest.raises(ValueError, match="N=8 exceeds the pool size"):
        subsample_curve(pools, "majority", [8])
    assert [p.n for p in subsample_curve(pools, "majority", resamples=5)] == [1, 2, 4, 5]
    assert default_ns([256]) == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    with pytest.raises(ValueError, match="correct flag"):
        subsample_curve([[Candidate(0, "1", [0.5])]], "majority", [1])


def test_confidence_interval() -> None:
    lo, hi = bootstrap_ci([0.0, 1.0] * 50, n_boot=2000)
    assert lo < 0.5 < hi and hi - lo < 0.3
    rng = np.random.default_rng(4)
    pools = [_pool(rng, 8) for _ in range(20)]
    for p in exact_curve(pools, "prm-min", [1, 4]):
        assert p.lo <= p.mean <= p.hi and p.n_questions == 20


def test_too_many_subsets() -> None:
    cands = [Candidate(i, str(i % 3), [0.5], i % 2 == 0) for i in range(30)]
    with pytest.raises(TooManySubsetsError):
        exact_curve([cands], "majority", [15], max_subsets=1000)
    # closed forms need no enumeration
    assert exact_curve([cands], "prm-min", [15])[0].mean == pytest.approx(_closed_prm_tie_case())
    assert exact_curve([cands], "oracle", [15])[0].mean == pytest.approx(pass_at_n(30, 15, 15))


def _closed_prm_tie_case() -> float:
    # all scores equal: the lowest index in the subset wins; P(index i is the lowest) = C(29-i, 14)/C(30, 15)
    return sum(comb(29 - i, 14) for i in range(0, 30, 2)) / comb(30, 15)


def test_majority_curve_keeps_programs_that_differ_in_indentation_apart() -> None:
    """Code vote keys are programs: two that differ only in indentation are different answers."""
    from adaptivestep.checkers import vote_key

    right = "```python\nfor x in xs:\n    total += x\nprint(total)\n```"
    wrong = "```python\nfor x in xs:\n    total += x\n    print(total)\n```"
    other = "```python\nprint(0)\n```"
    texts = [(wrong, False), (right, True), (right, True), (other, False)]
    pool = [Candidate(i, vote_key("code", t), None, ok) for i, (t, ok) in enumerate(texts)]
    assert len({c.answer for c in pool}) == 3
    (point,) = subsample_curve([pool], "majority", [4], resamples=1)
    assert point.mean == 1.0  # "right" has two votes; merged with "wrong" the first holder (wrong) would win
