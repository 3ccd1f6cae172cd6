"""Step scores -> one solution score: the shared aggregation every search uses (min, mean, last, prod).

A step score is a probability in [0, 1] (see :class:`~adaptivestep.scoring.StepScorer`), so every aggregate
is in [0, 1] as well. Kept in one place so Best-of-N, TVD, beam search and early rejection cannot drift.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence


class EmptyScoresError(ValueError):
    """Aggregating an empty list of step scores (a response with no steps has no PRM score)."""


def _min(xs: Sequence[float]) -> float:
    return float(min(xs))


def _mean(xs: Sequence[float]) -> float:
    return float(math.fsum(xs) / len(xs))


def _last(xs: Sequence[float]) -> float:
    return float(xs[-1])


def _prod(xs: Sequence[float]) -> float:
    return float(math.prod(xs))


AGGREGATORS: dict[str, Callable[[Sequence[float]], float]] = {
    "min": _min,  # the weakest step (Math-Shepherd's choice)
    "mean": _mean,
    "last": _last,  # the score after the final step: P(the whole solution is on track)
    "prod": _prod,  # treats step scores as independent conditional probabilities
}


def aggregate(scores: Sequence[float], how: str = "min") -> float:
    """One score for a solution from its step scores.

    ``scores``: shape (n_steps,), each a number (normally a probability in [0, 1]); ``how``: a key of
    :data:`AGGREGATORS`. Raises :class:`EmptyScoresError` for an empty list and ``ValueError`` for an unknown
    ``how`` or a NaN score.

    >>> s = [0.9, 0.5, 0.8]
    >>> aggregate(s, "min"), aggregate(s, "last"), round(aggregate(s, "mean"), 4), round(aggregate(s, "prod"), 4)
    (0.5, 0.8, 0.7333, 0.36)
    >>> aggregate([], "min")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    ...
    adaptivestep.search.aggregate.EmptyScoresError: aggregate(how='min'): no step scores to aggregate
    """
    fn = AGGREGATORS.get(how)
    if fn is None:
        raise ValueError(f"unknown aggregation {how!r} (expected one of {sorted(AGGREGATORS)})")
    if len(scores) == 0:
        raise EmptyScoresError(f"aggregate(how={how!r}): no step scores to aggregate")
    for i, x in enumerate(scores):
        if isinstance(x, bool) or not isinstance(x, (int, float)) or math.isnan(x):
            raise ValueError(f"aggregate(how={how!r}): step score {i} = {x!r} is not a number")
    return fn(scores)
