"""Step primitives every search shares (beam search, TVD, early rejection): a response's step texts and the
check that a scorer answered one score per step."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import pairwise


def steps_of(detokenize: Callable[[Sequence[int]], str], token_ids: Sequence[int],
             boundaries: Sequence[int]) -> list[str]:
    """Text of each step of a response: step k is tokens ``[boundaries[k-1], boundaries[k])``.

    ``boundaries`` follows the records contract (strictly increasing, last == len(token_ids)); an empty
    response with no boundaries has no steps. Each step is a slice of the full decoded text at the lengths of
    the decoded prefixes, so a character split over tokens is never duplicated and ``"".join(steps)`` is
    the decoded response.

    >>> steps_of(lambda ids: "".join("abcdef"[i] for i in ids), [0, 1, 2, 3], [1, 4])
    ['a', 'bcd']
    """
    b = list(boundaries)
    if not b:
        if len(token_ids):
            raise ValueError("steps_of: a non-empty response needs boundaries ending at len(token_ids)")
        return []
    if b[-1] != len(token_ids) or any(x >= y for x, y in pairwise(b)) or b[0] <= 0:
        raise ValueError(f"steps_of: bad boundaries {b} for {len(token_ids)} tokens")
    full = detokenize(list(token_ids))
    ends = [min(len(detokenize(list(token_ids[:x]))), len(full)) for x in b[:-1]] + [len(full)]
    out, prev = [], 0
    for e in ends:
        e = max(e, prev)
        out.append(full[prev:e])
        prev = e
    return out


def check_scores(scores: Sequence[Sequence[float]], items: Sequence[tuple[str, Sequence[str]]],
                 where: str) -> None:
    """Raise if a scorer's output does not have one score per step of each item."""
    if len(scores) != len(items):
        raise ValueError(f"{where}: scorer returned {len(scores)} score lists for {len(items)} items")
    for i, (s, (_, steps)) in enumerate(zip(scores, items)):
        if len(s) != len(steps):
            raise ValueError(f"{where}: scorer returned {len(s)} scores for item {i} with {len(steps)} steps")
