"""Best-of-N selection and score aggregation: pure functions, no model."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from adaptivestep.search.aggregate import AGGREGATORS, EmptyScoresError, aggregate
from adaptivestep.search.bon import (
    RULES,
    Candidate,
    build_pool,
    choose,
    pass_at_pool,
    select,
)

# ------------------------------------------------------------------------------------------- aggregate


@pytest.mark.parametrize("seed", range(5))
def test_aggregate_matches_numpy(seed: int) -> None:
    s = np.random.default_rng(seed).random(7)
    assert aggregate(s.tolist(), "min") == pytest.approx(s.min())
    assert aggregate(s.tolist(), "mean") == pytest.approx(s.mean())
    assert aggregate(s.tolist(), "last") == pytest.approx(s[-1])
    assert aggregate(s.tolist(), "prod") == pytest.approx(np.prod(s))


def test_aggregate_errors() -> None:
    assert set(AGGREGATORS) == {"min", "mean", "last", "prod"}
    for how in AGGREGATORS:
        with pytest.raises(EmptyScoresError):
            aggregate([], how)
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate([0.5], "max")
    with pytest.raises(ValueError, match="not a number"):
        aggregate([0.5, float("nan")], "min")


# ---------------------------------------------------------------------------------------------- select


def test_prm_rules_pick_argmax_of_their_aggregate() -> None:
    pool = [
        Candidate(0, "1", [0.9, 0.1, 0.9]),  # min 0.1, mean .633, last .9, prod .081
        Candidate(1, "2", [0.6, 0.6, 0.6]),  # min .6, mean .6, last .6, prod .216
        Candidate(2, "3", [0.3, 0.95]),  # min .3, mean .625, last .95, prod .285
    ]
    for how in AGGREGATORS:
        want = max(range(3), key=lambda i: (aggregate(pool[i].step_scores, how), -i))
        got = select(pool, f"prm-{how}")
        assert got.chosen == want and got.rule == f"prm-{how}" and not got.fallback
    assert select(pool, "prm-min").chosen == 1
    assert select(pool, "prm-last").chosen == 2


def test_ties_go_to_lowest_index_whatever_the_list_order() -> None:
    pool = [Candidate(7, "a", [0.5]), Candidate(3, "b", [0.5]), Candidate(5, "c", [0.4])]
    assert select(pool, "prm-min").chosen == 3
    assert select(list(reversed(pool)), "prm-min").chosen == 3
    # equal votes: the answer whose first holder has the lowest index wins
    votes = [Candidate(4, "x"), Candidate(1, "y"), Candidate(9, "x"), Candidate(2, "y")]
    assert select(votes, "majority").chosen == 1


def test_failed_and_stepless_candidates_are_skipped_not_dropped() -> None:
    pool = [
        Candidate(0, "10", [0.2]),
        Candidate(1, "11", None),  # scorer failed
        Candidate(2, "12", []),  # no steps
        Candidate(3, "13", [0.7, float("nan")]),  # NaN from the scorer
        Candidate(4, "14", [0.6]),
    ]
    sel = select(pool, "prm-min")
    assert sel.skipped == (1, 2, 3)
    assert sel.chosen == 4 and not sel.fallback
    assert {c.index: c.answer for c in pool}[sel.chosen] == "14"  # the index still names the right answer
    # a failed candidate with a huge vote share still cannot win a PRM rule
    many = pool + [Candidate(10 + i, "11", None) for i in range(5)]
    assert select(many, "prm-mean").chosen == 4
    assert select(many, "majority").chosen == 1 and select(many, "majority").skipped == ()


def test_all_failed_falls_back_to_majority_and_says_so() -> None:
    pool = [Candidate(0, "5", None), Candidate(1, "6", []), Candidate(2, "6", None)]
    for rule in ("prm-min", "prm-last", "weighted-majority"):
        sel = select(pool, rule)
        assert sel.fallback and sel.chosen == 1 and sel.skipped == (0, 1, 2)
        assert "majority" in sel.note


def test_majority_votes_on_vote_keys_and_ignores_missing_answers() -> None:
    from adaptivestep.checkers import vote_key

    texts = [None, None, None, "so 1,000", "7", r"\boxed{1000.0}", "$1000$.", "7"]
    pool = [Candidate(i, None if t is None else vote_key("math", t)) for i, t in enumerate(texts)]
    assert select(pool, "majority").chosen == 3  # three ways of writing 1000 vote together
    nothing = select([Candidate(2, None), Candidate(1, "  ")], "majority")
    assert nothing.chosen == 1 and "no candidate has an answer" in nothing.note


def test_majority_compares_keys_as_given() -> None:
    """Keys are already canonical: Best-of-N must not normalise them again (code keys keep indentation)."""
    a = "def f(x):\n    if x:\n        return 1\n    return 2"
    b = "def f(x):\n    if x:\n        return 1\n        return 2"  # another program: only the indentation differs
    pool = [Candidate(0, a), Candidate(1, b), Candidate(2, b), Candidate(3, "X=1"), Candidate(4, "x=1")]
    assert select(pool, "majority").chosen == 1
    assert build_pool(pool, None).n_answers == 4


def test_weighted_majority_sums_scores_per_answer() -> None:
    pool = [
        Candidate(0, "A", [0.25]),
        Candidate(1, "A", [0.25]),
        Candidate(2, "B", [0.875]),
        Candidate(3, "A", None),  # skipped: does not vote
        Candidate(4, "B", [0.5]),
    ]
    assert select(pool, "majority").chosen == 0  # A has 3 votes
    sel = select(pool, "weighted-majority")  # A: 0.5, B: 1.375
    assert sel.chosen == 2 and sel.skipped == (3,)
    # the weight aggregation is configurable
    pool2 = [Candidate(0, "A", [0.9, 0.1]), Candidate(1, "B", [0.5, 0.5])]
    assert select(pool2, "weighted-majority", weighted_how="min").chosen == 1
    assert select(pool2, "weighted-majority", weighted_how="mean").chosen == 0


def test_oracle_and_pass_at_pool() -> None:
    pool = [Candidate(0, "1", [0.9], False), Candidate(5, "2", [0.1], True), Candidate(6, "2", [0.1], True)]
    assert select(pool, "oracle").chosen == 5 and pass_at_pool(pool)
    wrong = [Candidate(3, "1", None, False), Candidate(1, "2", None, False)]
    assert not pass_at_pool(wrong)
    assert select(wrong, "oracle").chosen == 1
    with pytest.raises(ValueError, match="correct flag"):
        select([Candidate(0, "1"), Candidate(1, "2", None, True)], "oracle")


def test_bad_pools_raise() -> None:
    with pytest.raises(ValueError, match="empty"):
        select([], "majority")
    with pytest.raises(ValueError, match="duplicate candidate index 2"):
        select([Candidate(2, "a"), Candidate(2, "b")], "majority")
    with pytest.raises(ValueError, match="unknown Best-of-N rule"):
        select([Candidate(0, "a")], "prm-max")


# ------------------------------------------------------------------- never lose / re-order, vs reference


def _key(c: Candidate) -> str | None:
    return c.answer if c.answer is not None and c.answer.strip() else None


def _reference(cands: list[Candidate], rule: str) -> int:
    """A straightforward, loop-based statement of the rules (independent of the vectorised code)."""
    by_index = sorted(cands, key=lambda c: c.index)

    def valid(c: Candidate, how: str) -> float | None:
        if not c.step_scores or any(math.isnan(x) for x in c.step_scores):
            return None
        return aggregate(c.step_scores, how)

    def majority(cs: list[Candidate]) -> int:
        keys = [(c, _key(c)) for c in cs]
        cnt = Counter(k for _, k in keys if k is not None)
        if not cnt:
            return cs[0].index
        first = {}
        for c, k in keys:
            if k is not None:
                first.setdefault(k, c.index)
        win = max(cnt, key=lambda k: (cnt[k], -first[k]))
        return first[win]

    if rule == "majority":
        return majority(by_index)
    if rule.startswith("prm-"):
        how = rule[4:]
        scored = [(valid(c, how), c.index) for c in by_index]
        scored = [(s, i) for s, i in scored if s is not None]
        if not scored:
            return majority(by_index)
        return max(scored, key=lambda t: (t[0], -t[1]))[1]
    assert rule == "weighted-majority"
    tot: dict[str, float] = {}
    best: dict[str, tuple[float, int]] = {}
    first: dict[str, int] = {}
    for c in by_index:
        s, k = valid(c, "min"), _key(c)
        if s is None or k is None:
            continue
        tot[k] = tot.get(k, 0.0) + s
        first.setdefault(k, c.index)
        if k not in best or s > best[k][0]:
            best[k] = (s, c.index)
    if not tot:
        return majority(by_index)
    win = max(tot, key=lambda k: (tot[k], -first[k]))
    return best[win][1]


def _random_pool(rng: np.random.Generator, n: int) -> list[Candidate]:
    idx = rng.choice(100, size=n, replace=False)
    out = []
    for i in idx:
        r = rng.random()
        if r < 0.15:
            scores = None
        elif r < 0.2:
            scores = []
        else:  # multiples of 1/8 make float sums exact, so ties are real ties
            scores = (rng.integers(0, 9, size=rng.integers(1, 4)) / 8).tolist()
        ans = None if rng.random() < 0.2 else str(rng.integers(0, 4))
        out.append(Candidate(int(i), ans, scores, bool(rng.random() < 0.4)))
    return out


@pytest.mark.parametrize("rule", ["prm-min", "prm-mean", "prm-last", "prm-prod", "majority", "weighted-majority"])
def test_select_matches_reference_and_ignores_list_order(rule: str) -> None:
    rng = np.random.default_rng(123)
    for _ in range(150):
        pool = _random_pool(rng, int(rng.integers(1, 9)))
        want = _reference(pool, rule)
        assert select(pool, rule).chosen == want
        shuffled = [pool[i] for i in rng.permutation(len(pool))]
        assert select(shuffled, rule).chosen == want
        assert want in {c.index for c in pool}


def test_choose_on_many_subsets_equals_select_on_each() -> None:
    rng = np.random.default_rng(7)
    pool = _random_pool(rng, 9)
    for rule in RULES:
        how = "min" if rule == "weighted-majority" else RULES[rule].how
        p = build_pool(pool, how)
        ordered = sorted(pool, key=lambda c: c.index)
        subs = np.array([np.sort(rng.choice(9, size=4, replace=False)) for _ in range(30)])
        got = choose(p, subs, rule)
        for row, pos in zip(subs, got.pos):
            assert pos in row
            assert p.indices[pos] == select([ordered[j] for j in row], rule).chosen


# ------------------------------------------------------------------------------------------- confidence


def test_confidence_rule_picks_the_most_confident_and_skips_the_unknown() -> None:
    from adaptivestep.search.bon import mean_token_probability

    pool = [Candidate(0, "1", [0.9], False, 0.4), Candidate(3, "2", [0.1], True, 0.7),
            Candidate(5, "2", [0.2], True, None)]
    sel = select(pool, "confidence")
    assert sel.chosen == 3 and sel.skipped == (5,) and not sel.fallback
    assert select(pool, "prm-min").chosen == 0  # the step scores play no part in it
    tie = [Candidate(2, "1", None, True, 0.5), Candidate(1, "2", None, False, 0.5)]
    assert select(tie, "confidence").chosen == 1  # equal confidence: the lower index
    none = [Candidate(0, "1", confidence=None), Candidate(1, "4", confidence=None), Candidate(2, "4")]
    sel = select(none, "confidence")
    assert sel.fallback and sel.chosen == 1  # nothing to rank: majority vote
    assert mean_token_probability([]) is None
    assert mean_token_probability([-1.0, -1.0]) == pytest.approx(math.exp(-1.0))
