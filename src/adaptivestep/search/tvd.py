"""Token-level Value-guided Decoding (TVD, method.md section 5): greedy decoding that asks the PRM at
low-confidence tokens.

At each position the policy's temperature-1 distribution over the next token is read with
``Backend.next_logprobs``. If the top token's probability is at least ``threshold`` it is taken (greedy).
Otherwise the ``k`` most likely tokens are candidates; each is scored by the PRM as the end of a finished
step, all ``k`` in ONE ``score_batch`` call, and the best one is taken. Decoding stops at EOS or after
``max_tokens`` tokens.

How the step list of a candidate is formed: every intervention point ends a step, as in AdaptiveStep (the
break goes right after the low-confidence token, and TVD intervenes exactly at tokens whose top probability
is below the threshold). For a candidate token ``t`` at position ``i`` the PRM sees ``question`` and the
steps ``[response[0 : p1+1], response[p1+1 : p2+1], ..., response[p_last+1 : i] + t]`` where
``p1 < p2 < ...`` are the previous intervention positions: the response split at the previous intervention
points, and the current partial step closed by the candidate. This is the paper's "question + prefix +
candidate as a finished step". With ``aggregate="last"`` (default) candidates are compared by the score of
that final step; the other aggregations compare whole-prefix scores. An EOS candidate is scored as the
response ending here (its step list has no candidate text); if that list is empty (EOS at position 0 right
after nothing) it cannot be scored and ranks last.

Ties between candidate scores go to the candidate the policy found more likely (top-k order). The prefix is
never re-evaluated from scratch by this code: each call passes the whole prompt + response, and the backend
keeps the KV cache of the common prefix between calls (the llama.cpp backend truncates to it), so each step
costs one new token of compute plus the PRM call at interventions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..backends.base import Backend
from ..backends.sampler import top_alternatives
from ..scoring import StepScorer
from .aggregate import AGGREGATORS, aggregate
from .common import check_scores, steps_of

PAPER_THRESHOLDS: dict[str, float] = {"math": 0.55, "code": 0.28}


def paper_threshold(kind: str) -> float:
    """The paper's TVD confidence threshold for a task kind (``math`` 0.55, ``code`` 0.28)."""
    if kind not in PAPER_THRESHOLDS:
        raise ValueError(f"no TVD threshold for task kind {kind!r} (known: {', '.join(PAPER_THRESHOLDS)})")
    return PAPER_THRESHOLDS[kind]


def threshold_for(kind: str | None, given: float | None = None) -> float:
    """The threshold to use: ``given`` when set, else :func:`paper_threshold` of the task kind.

    The one place a TVD threshold is resolved (the ``tvd`` verb, the main job and :func:`tvd_decode` call it).
    ``kind`` None is allowed only with a ``given`` threshold.

    >>> threshold_for("code"), threshold_for("code", 0.4), threshold_for(None, 0.4)
    (0.28, 0.4, 0.4)
    """
    if given is not None:
        return given
    if kind is None:
        raise ValueError("TVD threshold: set TVDConfig.threshold or give the task kind (math/code)")
    return paper_threshold(kind)


@dataclass(frozen=True)
class TVDConfig:
    """TVD settings.

    threshold: a probability in [0, 1]; intervene when the top next-token probability (temperature 1) is
        below it. None (default) = the paper's threshold of the task kind given to :func:`tvd_decode`
        (:func:`threshold_for`: 0.55 for math, 0.28 for code). 0 = plain greedy decoding.
    k: candidate tokens scored at an intervention (the k most likely), >= 1.
    max_tokens: most response tokens decoded (EOS not counted).
    aggregate: how a candidate's step scores are compared ("last" = the candidate's own step score).
    """

    threshold: float | None = None
    k: int = 8
    max_tokens: int = 512
    aggregate: str = "last"

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"TVDConfig.threshold must be a probability in [0, 1], got {self.threshold!r}")
        for name in ("k", "max_tokens"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"TVDConfig.{name} must be an integer >= 1, got {v!r}")
        if self.aggregate not in AGGREGATORS:
            raise ValueError(f"TVDConfig.aggregate must be one of {sorted(AGGREGATORS)}, got {self.aggregate!r}")


@dataclass
class Intervention:
    """One PRM consultation: at response position ``position`` the top probability was below threshold.

    candidates: token ids, most likely first; probs: their temperature-1 probabilities; scores: their
    aggregated PRM scores (-inf = could not be scored); chosen: the token id taken.
    """

    position: int
    candidates: list[int]
    probs: list[float]
    scores: list[float]
    chosen: int


@dataclass
class TVDResult:
    """A TVD-decoded response.

    text / token_ids / logprobs: the response (EOS excluded), with the temperature-1 log p of each token.
    finish_reason: "stop" (EOS) or "length". boundaries: step ends at the intervention points plus the
    response end (records contract; empty for an empty response). n_forward: next_logprobs calls (response
    tokens + the EOS position). n_prm_calls: score_batch calls (= n_interventions). n_prm_items: candidate
    step lists scored.
    """

    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str
    boundaries: list[int]
    n_interventions: int = 0
    n_prm_calls: int = 0
    n_prm_items: int = 0
    n_forward: int = 0
    interventions: list[Intervention] = field(default_factory=list)


def _candidate_steps(backend: Backend, resp: list[int], cuts: list[int], tok: int) -> list[str]:
    if backend.is_eos(tok):
        ids, bounds = resp, (cuts + [len(resp)] if len(resp) > (cuts[-1] if cuts else 0) else cuts)
    else:
        ids, bounds = resp + [tok], cuts + [len(resp) + 1]
    return steps_of(backend.detokenize, ids, bounds)


def tvd_decode(backend: Backend, scorer: StepScorer, question: str, prompt_ids: Sequence[int],
               config: TVDConfig = TVDConfig(), *, kind: str | None = None) -> TVDResult:
    """Decode one response with TVD (see the module docstring).

    ``question``: the raw problem text the PRM sees; ``prompt_ids``: the chat-rendered prompt the policy
    continues; ``kind``: the problem's task kind ("math" / "code"), which picks the threshold when
    ``config.threshold`` is None (:func:`threshold_for`; an error when both are None).
    """
    threshold = threshold_for(kind, config.threshold)
    ids = list(prompt_ids)
    n_prompt = len(ids)
    cuts: list[int] = []  # response offsets right after each intervention token
    out = TVDResult(text="", token_ids=[], logprobs=[], finish_reason="length", boundaries=[])
    for pos in range(config.max_tokens):
        lp = backend.next_logprobs(ids)  # (V,) temperature-1 log-probs; KV cache reuses the prefix
        out.n_forward += 1
        greedy = int(np.argmax(lp))  # ties: the lowest id, as sampler.draw at temperature 0
        if math.exp(lp[greedy]) >= threshold:
            tok = greedy
        else:
            top = top_alternatives(lp, min(config.k, lp.shape[-1]))  # [[id, logprob], ...], most likely first
            resp = ids[n_prompt:]
            cand = [int(t) for t, _ in top]
            items = [(question, _candidate_steps(backend, resp, cuts, t)) for t in cand]
            scorable = [i for i, (_, st) in enumerate(items) if st]
            scores = [-math.inf] * len(cand)
            if scorable:
                raw = scorer.score_batch([items[i] for i in scorable])
                check_scores(raw, [items[i] for i in scorable], "tvd_decode")
                for i, s in zip(scorable, raw):
                    scores[i] = aggregate(s, config.aggregate)
                out.n_prm_calls += 1
                out.n_prm_items += len(scorable)
            best = max(range(len(cand)), key=lambda i: (scores[i], -i))  # ties: the more likely token
            tok = cand[best]
            out.interventions.append(
                Intervention(pos, cand, [math.exp(x) for _, x in top], scores, tok)
            )
            if not backend.is_eos(tok):
                cuts.append(pos + 1)
        if backend.is_eos(tok):
            out.finish_reason = "stop"
            break
        ids.append(tok)
        out.logprobs.append(float(lp[tok]))
    out.token_ids = ids[n_prompt:]
    out.n_interventions = len(out.interventions)
    out.text = backend.detokenize(out.token_ids)
    n = len(out.token_ids)
    out.boundaries = [c for c in cuts if c < n] + ([n] if n else [])
    return out
