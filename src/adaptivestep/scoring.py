"""The interface between process reward models and the searches that use them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable


@runtime_checkable
class StepScorer(Protocol):
    """Anything that scores reasoning steps: our PRM, a Math-Shepherd-style PRM, a scripted test double.

    A step score is the probability in [0, 1] that the solution is still on a correct path after that step.
    ``question`` is the problem text (not the chat-rendered prompt); ``steps`` the step strings, in order,
    which concatenated give the response text.
    """

    def score_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        """Scores of every step of every item, ``len(out[i]) == len(items[i][1])``; batched internally."""
        ...


def score_one(scorer: StepScorer, question: str, steps: Sequence[str]) -> list[float]:
    """Scores of one response's steps."""
    return scorer.score_batch([(question, steps)])[0]


def open_scorer(prm: str, *, math_shepherd: bool = False) -> StepScorer:
    """The step scorer in ``prm``: a PRM directory from ``train`` (``embedded`` = the shipped one), or with
    ``math_shepherd`` a Math-Shepherd-style LM PRM. (A PRM served by vLLM is
    :class:`adaptivestep.prm.server.PRMServerScorer`.)"""
    if math_shepherd:
        from .prm.interop import MathShepherdScorer

        return MathShepherdScorer(prm)
    from .prm.model import PRM

    return PRM.load(prm)
