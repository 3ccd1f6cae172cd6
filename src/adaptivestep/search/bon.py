"""Best-of-N selection: pick one candidate from a pool by PRM score, by vote, or by oracle.

Pure functions; no model. A :class:`Candidate` carries its ORIGINAL index in the pool, its extracted final
answer (or None) and its PRM step scores (or None when the scorer failed on it). Selection never drops or
re-orders candidates: it returns the chosen candidate's original index, so a failed candidate can never
shift which answer is reported (the defect of the paper's public scripts, method.md section 7).

Rules (registry :data:`RULES`):

- ``prm-min`` / ``prm-mean`` / ``prm-last`` / ``prm-prod``: argmax of the aggregated step scores
  (:func:`~adaptivestep.search.aggregate.aggregate`). Candidates with no scores (scorer failed), no steps or a
  NaN score are *skipped*: they cannot win, their indices are listed in ``Selection.skipped``, and everything
  else keeps its index. When every candidate is skipped the rule falls back to ``majority``
  (``Selection.fallback``). Steps are never invented for a candidate that has none.
- ``majority``: the most frequent answer key; None / blank keys do not vote. Keys are compared as given:
  they are already canonical (:func:`adaptivestep.checkers.vote_key`, the one answer normaliser), so a
  second normalisation cannot merge answers (or programs) the key keeps apart. The chosen candidate is the
  lowest-index one holding the winning answer.
- ``weighted-majority``: each candidate with an answer and valid scores votes with its aggregated score
  (aggregation ``weighted_how``, default ``min``); the answer with the largest sum wins, and the chosen
  candidate is the highest-scoring one holding it. No such voter -> fallback to ``majority``.
- ``confidence``: argmax of the policy's own mean token probability of the response
  (:func:`mean_token_probability`): the zero-training baseline a PRM has to beat. Candidates without one
  are skipped as above; none at all -> fallback to ``majority``.
- ``oracle``: the lowest-index correct candidate (pass@N: the pool is solved iff any candidate is correct);
  needs every ``correct`` flag.

Ties are broken deterministically towards the LOWEST original index: between equal PRM scores, the
lower index wins; between answers with equal votes, the answer whose first holder has the lower index wins.
When no candidate can win by the rule at all (no answers for majority, nothing correct for oracle) the
lowest-index candidate is returned and ``Selection.note`` says why. The accuracy estimators count a tie between
answers in a vote at its expectation over a random tie-break instead (:func:`~.estimate.majority_expectation`),
so a vote's reported accuracy does not depend on the candidates' order (other exact ties still go to the lowest
index).

The rules work on a whole matrix of subsets at once (:func:`choose`), so the accuracy-vs-N estimator
(:mod:`adaptivestep.search.estimate`) uses exactly this code: :func:`select` is the one-subset case.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .aggregate import AGGREGATORS, aggregate


@dataclass(frozen=True)
class Candidate:
    """One response in a Best-of-N pool.

    index: its position in the original pool (unique within a pool; what selection returns).
    answer: the vote key of its final answer (:func:`adaptivestep.checkers.vote_key`: already canonical,
        compared as is), None when none could be extracted.
    step_scores: PRM score of each step, in [0, 1]; None when scoring failed. ``[]`` (no steps) is skipped
        by PRM rules like None.
    correct: whether ``answer`` is right (needed by the ``oracle`` rule and the estimators), None = unknown.
    confidence: the policy's mean token probability of the response (the ``confidence`` rule), None = unknown.
    """

    index: int
    answer: str | None
    step_scores: Sequence[float] | None = None
    correct: bool | None = None
    confidence: float | None = None


def mean_token_probability(logprobs: Sequence[float]) -> float | None:
    """exp(mean token log-prob) of a response: its geometric-mean token probability, None when empty.

    >>> round(mean_token_probability([0.0, -2.0]), 4)
    0.3679
    """
    return float(np.exp(np.mean(logprobs))) if len(logprobs) else None


@dataclass(frozen=True)
class Selection:
    """What a rule chose.

    chosen: ORIGINAL pool index of the chosen candidate.
    rule: the rule that was asked for.
    skipped: indices of candidates a PRM rule could not score (failed / no steps / NaN), ascending.
    fallback: True when a PRM rule had no scored candidate and used ``majority`` instead.
    note: human-readable reason when the choice was not made by the rule itself ("" otherwise).
    """

    chosen: int
    rule: str
    skipped: tuple[int, ...] = ()
    fallback: bool = False
    note: str = ""


@dataclass(frozen=True)
class Pool:
    """The candidates of one question as arrays, in ascending index order (so position order = index order).

    indices: (n,) original pool indices. score: (n,) aggregated PRM score (aggregation ``how``), NaN where the
    candidate is skipped. answer: (n,) answer class id, -1 = no answer. correct: (n,) bool, False where
    unknown; ``all_flags`` tells whether every flag was known.
    """

    indices: np.ndarray
    score: np.ndarray
    answer: np.ndarray
    correct: np.ndarray
    all_flags: bool
    n_answers: int
    how: str | None
    confidence: np.ndarray  # (n,) mean token probability (the ``confidence`` rule), NaN where unknown


def build_pool(cands: Sequence[Candidate], how: str | None = "min") -> Pool:
    """Arrays of a pool for :func:`choose`; ``how`` = the step-score aggregation (None: scores unused)."""
    if len(cands) == 0:
        raise ValueError("Best-of-N: empty candidate pool")
    seen: set[int] = set()
    for c in cands:
        if isinstance(c.index, bool) or not isinstance(c.index, (int, np.integer)):
            raise TypeError(f"Best-of-N: candidate index {c.index!r} is not an integer")
        if c.index in seen:
            raise ValueError(f"Best-of-N: duplicate candidate index {c.index} in the pool")
        seen.add(int(c.index))
    ordered = sorted(cands, key=lambda c: int(c.index))
    classes: dict[str, int] = {}
    answer = np.full(len(ordered), -1, dtype=np.int64)
    score = np.full(len(ordered), np.nan)
    for i, c in enumerate(ordered):
        if c.answer is not None and c.answer.strip():
            answer[i] = classes.setdefault(c.answer, len(classes))
        if how is not None and c.step_scores is not None and len(c.step_scores) > 0:
            try:
                score[i] = aggregate(c.step_scores, how)
            except ValueError:  # a NaN / non-number score: the scorer failed on it
                score[i] = np.nan
    return Pool(
        indices=np.array([int(c.index) for c in ordered], dtype=np.int64),
        score=score,
        answer=answer,
        correct=np.array([bool(c.correct) for c in ordered], dtype=bool),
        all_flags=all(c.correct is not None for c in ordered),
        n_answers=len(classes),
        how=how,
        confidence=np.array([np.nan if c.confidence is None else float(c.confidence) for c in ordered]),
    )


@dataclass(frozen=True)
class Choice:
    """Result of :func:`choose` for B subsets: chosen position in the pool, shape (B,), and per-subset flags
    ``fallback`` (a PRM rule used majority) and ``no_winner`` (nothing could win: lowest index taken)."""

    pos: np.ndarray
    fallback: np.ndarray
    no_winner: np.ndarray


def answer_sums(pool: Pool, sub: np.ndarray, voter: np.ndarray, *weights: np.ndarray) -> list[np.ndarray]:
    """Per row of ``sub`` (B, N positions) and answer class: how many of the row's ``voter`` candidates hold it,
    then the sum of each of ``weights`` (B, N) over them; each array (B, K), float. The tally of every vote."""
    b = len(sub)
    k = max(pool.n_answers, 1)
    flat = (np.arange(b)[:, None] * k + np.where(voter, pool.answer[sub], 0))[voter]
    return [np.bincount(flat, weights=None if w is None else w[voter], minlength=b * k).reshape(b, k)
            .astype(np.float64) for w in (None, *weights)]


def _vote(pool: Pool, sub: np.ndarray, weighted: bool) -> tuple[np.ndarray, np.ndarray]:
    """Columns chosen by (weighted) vote in each row of ``sub`` (B, N), and the rows with no voter."""
    b, n = sub.shape
    k = max(pool.n_answers, 1)
    a = pool.answer[sub]  # (B, N)
    s = pool.score[sub]
    voter = a >= 0
    if weighted:
        voter &= ~np.isnan(s)
    rows = np.broadcast_to(np.arange(b)[:, None], (b, n))
    cols = np.broadcast_to(np.arange(n)[None, :], (b, n))
    count, *summed = answer_sums(pool, sub, voter, *([s] if weighted else []))
    total = summed[0] if weighted else count
    present = count > 0
    first = np.full((b, k), n, dtype=np.int64)  # column of each answer's first (lowest-index) holder
    np.minimum.at(first, (rows[voter], a[voter]), cols[voter])
    tot = np.where(present, total, -np.inf)
    best = tot.max(axis=1, keepdims=True)
    win = np.where(present & (tot == best), first, n + 1).argmin(axis=1)  # (B,)
    no_vote = np.asarray(~present.any(axis=1))
    if weighted:
        holds = voter & (a == win[:, None])
        col = np.where(holds, s, -np.inf).argmax(axis=1)
    else:
        col = first[np.arange(b), win]
    return np.where(no_vote, 0, col), no_vote


def _majority(pool: Pool, sub: np.ndarray) -> Choice:
    col, none = _vote(pool, sub, weighted=False)
    return Choice(sub[np.arange(len(sub)), col], np.zeros(len(sub), bool), none)


def _with_fallback(pool: Pool, sub: np.ndarray, col: np.ndarray, unusable: np.ndarray) -> Choice:
    col = col.copy()
    none = np.zeros(len(sub), dtype=bool)
    if unusable.any():
        fcol, fnone = _vote(pool, sub[unusable], weighted=False)
        col[unusable] = fcol
        none[unusable] = fnone
    return Choice(sub[np.arange(len(sub)), col], unusable, none)


def _prm(pool: Pool, sub: np.ndarray) -> Choice:
    s = pool.score[sub]  # (B, N)
    valid = ~np.isnan(s)
    col = np.where(valid, s, -np.inf).argmax(axis=1)  # first max = lowest index (rows are ascending)
    return _with_fallback(pool, sub, col, ~valid.any(axis=1))


def _confidence(pool: Pool, sub: np.ndarray) -> Choice:
    s = pool.confidence[sub]
    valid = ~np.isnan(s)
    col = np.where(valid, s, -np.inf).argmax(axis=1)
    return _with_fallback(pool, sub, col, ~valid.any(axis=1))


def _weighted(pool: Pool, sub: np.ndarray) -> Choice:
    col, no_voter = _vote(pool, sub, weighted=True)
    return _with_fallback(pool, sub, col, no_voter)


def _oracle(pool: Pool, sub: np.ndarray) -> Choice:
    if not pool.all_flags:
        raise ValueError("Best-of-N rule 'oracle' needs the correct flag of every candidate")
    ok = pool.correct[sub]
    return Choice(sub[np.arange(len(sub)), ok.argmax(axis=1)], np.zeros(len(sub), bool), ~ok.any(axis=1))


@dataclass(frozen=True)
class Rule:
    """A selection rule: ``how`` = the step-score aggregation it reads (None: scores unused)."""

    name: str
    how: str | None
    choose: Callable[[Pool, np.ndarray], Choice]


RULES: dict[str, Rule] = {
    **{f"prm-{h}": Rule(f"prm-{h}", h, _prm) for h in AGGREGATORS},
    "majority": Rule("majority", None, _majority),
    "weighted-majority": Rule("weighted-majority", "min", _weighted),
    "confidence": Rule("confidence", None, _confidence),
    "oracle": Rule("oracle", None, _oracle),
}


def get_rule(rule: str, weighted_how: str = "min") -> Rule:
    """The registered rule ``rule``; ``weighted_how`` sets the aggregation of ``weighted-majority``."""
    if rule not in RULES:
        raise ValueError(f"unknown Best-of-N rule {rule!r} (expected one of {sorted(RULES)})")
    r = RULES[rule]
    if rule == "weighted-majority":
        if weighted_how not in AGGREGATORS:
            raise ValueError(f"unknown weighted_how {weighted_how!r} (expected one of {sorted(AGGREGATORS)})")
        r = Rule(r.name, weighted_how, r.choose)
    return r


def choose(pool: Pool, subsets: np.ndarray, rule: str, weighted_how: str = "min") -> Choice:
    """Apply ``rule`` to B subsets of a pool at once.

    ``subsets``: (B, N) int positions into the pool (not original indices), each row strictly ascending
    (the tie-break towards the lowest index relies on it). ``pool`` must be built with the rule's ``how``.
    """
    r = get_rule(rule, weighted_how)
    if r.how != pool.how and r.how is not None:
        raise ValueError(f"rule {rule!r} needs a pool aggregated with {r.how!r}, got {pool.how!r}")
    sub = np.asarray(subsets, dtype=np.int64)
    if sub.ndim != 2 or sub.shape[1] == 0:
        raise ValueError(f"subsets must have shape (B, N) with N >= 1, got {sub.shape}")
    if sub.shape[1] > 1 and not (np.diff(sub, axis=1) > 0).all():
        raise ValueError("each subset row must be strictly ascending positions")
    return r.choose(pool, sub)


def select(
    cands: Sequence[Candidate],
    rule: str = "prm-min",
    *,
    weighted_how: str = "min",
) -> Selection:
    """Choose one candidate of a pool by ``rule`` (see the module docstring); returns its ORIGINAL index.

    >>> pool = [Candidate(0, "12", [0.2, 0.9]), Candidate(1, "7", None), Candidate(2, "7", [0.8, 0.7])]
    >>> select(pool, "prm-min")
    Selection(chosen=2, rule='prm-min', skipped=(1,), fallback=False, note='')
    >>> select(pool, "prm-last").chosen, select(pool, "majority").chosen
    (0, 1)
    >>> select([Candidate(5, "3", None), Candidate(9, "4", [])], "prm-min").chosen  # all failed: majority
    5
    """
    r = get_rule(rule, weighted_how)
    pool = build_pool(cands, r.how)
    c = r.choose(pool, np.arange(len(pool.indices))[None, :])
    unscored = pool.score if r.how is not None else pool.confidence if rule == "confidence" else None
    skipped = tuple(int(i) for i in pool.indices[np.isnan(unscored)]) if unscored is not None else ()
    note = ""
    if c.fallback[0]:
        note = f"{rule}: no candidate could be scored ({len(skipped)} skipped); used majority vote"
    if c.no_winner[0]:
        why = "no candidate is correct" if rule == "oracle" else "no candidate has an answer"
        note = (note + "; " if note else "") + f"{why}: took the lowest index"
    return Selection(int(pool.indices[c.pos[0]]), rule, skipped, bool(c.fallback[0]), note)


def pass_at_pool(cands: Sequence[Candidate]) -> bool:
    """Oracle (pass@N) of a whole pool: True iff any candidate is correct (every flag must be known)."""
    if any(c.correct is None for c in cands):
        raise ValueError("pass_at_pool: every candidate needs its correct flag")
    return any(bool(c.correct) for c in cands)
