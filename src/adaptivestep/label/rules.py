"""Label rules: rollout outcomes -> step labels. Pure functions, no model.

Conventions: a response with K steps has step prefixes 0..K-1; prefix k = question + steps 0..k. The last
step (k = K-1) is the whole response: its label is the response's own final-answer verdict, no rollouts.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any


def hard_label(outcomes: Sequence[int]) -> float:
    """1.0 if any rollout reached a correct answer (Math-Shepherd's hard estimate).

    >>> hard_label([0, 0, 1]), hard_label([0, 0])
    (1.0, 0.0)
    """
    if not outcomes:
        raise ValueError("no rollout outcomes")
    return 1.0 if any(outcomes) else 0.0


def soft_label(outcomes: Sequence[int]) -> float:
    """Fraction of rollouts that reached a correct answer, a float in [0, 1] (never floored).

    >>> soft_label([1, 0, 0, 1])
    0.5
    """
    if not outcomes:
        raise ValueError("no rollout outcomes")
    return float(sum(1 for o in outcomes if o)) / float(len(outcomes))


def early_stop_waves(m: int, wave: int) -> list[list[int]]:
    """Rollout indices in waves; with hard labels a step stops after the first wave holding a success.

    The hard label equals the exhaustive one (the same seeded rollouts, stopped once the answer is known).

    >>> early_stop_waves(8, 3)
    [[0, 1, 2], [3, 4, 5], [6, 7]]
    """
    if m < 1 or wave < 1:
        raise ValueError("m and wave must be >= 1")
    return [list(range(i, min(i + wave, m))) for i in range(0, m, wave)]


def first_error_search(n_steps: int, final_label: float) -> Generator[int, float, list[float]]:
    """Binary search for the first step whose hard label is 0 (OmegaPRM's idea).

    A coroutine: it yields a step index to probe and is sent that step's hard label; it returns the labels
    of all ``n_steps`` steps. Assumes monotone labels (once no rollout can recover, none after can):
    steps before the first error get 1.0, the first error and every step after it 0.0.
    If the response's own final answer is correct (``final_label == 1``), every prefix has a known correct
    completion - the response itself - so all steps are 1.0 with no probe at all.

    >>> g = first_error_search(5, 0.0)
    >>> k = next(g); k
    2
    >>> try:
    ...     k = g.send(1.0); k = g.send(0.0)
    ... except StopIteration as stop:
    ...     stop.value
    [1.0, 1.0, 1.0, 0.0, 0.0]
    """
    if n_steps < 1:
        raise ValueError("n_steps must be >= 1")
    if final_label >= 1.0:
        return [1.0] * n_steps
    lo, hi = 0, n_steps - 1  # the last step is known bad: first error is in [lo, hi]
    while lo < hi:
        mid = (lo + hi) // 2
        label = yield mid
        if label >= 1.0:
            lo = mid + 1
        else:
            hi = mid
    return [1.0 if k < lo else 0.0 for k in range(n_steps)]


def run_first_error_search(
    n_steps: int, final_label: float, probe: Callable[[int], Generator[Any, Any, float]]
) -> Generator[Any, Any, tuple[list[float], list[int]]]:
    """Drive :func:`first_error_search`; returns (labels, probed steps) as a generator's return value.

    ``probe(k)`` is a generator returning step ``k``'s hard label. Whatever it yields (a labelling plan's
    requests for rollouts) passes through to the caller, which resumes it with the results, so a search runs
    inside a plan as ``labels, probed = yield from run_first_error_search(n, final, probe)``.

    >>> def probe(k):
    ...     outcomes = yield f"roll out step {k}"
    ...     return 1.0 if any(outcomes) else 0.0
    >>> g = run_first_error_search(5, 0.0, probe)
    >>> next(g), g.send([0, 1])
    ('roll out step 2', 'roll out step 3')
    >>> try:
    ...     g.send([0, 0])
    ... except StopIteration as stop:
    ...     stop.value
    ([1.0, 1.0, 1.0, 0.0, 0.0], [2, 3])
    """
    gen = first_error_search(n_steps, final_label)
    probed: list[int] = []
    try:
        k = next(gen)
        while True:
            probed.append(k)
            label = yield from probe(k)
            k = gen.send(label)
    except StopIteration as stop:
        return list(stop.value), probed
