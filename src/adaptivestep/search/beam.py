"""Step-level beam search whose steps are AdaptiveStep steps.

A step ends right after a sampled token whose temperature-1 confidence is below ``tau`` (the AdaptiveStep
rule of method.md section 2), at EOS, or at a length cap. Each iteration expands every live beam into
``expand`` sampled next steps, scores all new partial solutions with the PRM in ONE ``score_batch`` call
(aggregated by ``aggregate``), and keeps the ``beam_width`` best of the new children plus the beams that had
already finished. The search stops when every kept beam has finished or after ``max_steps`` iterations.

Sampling a step cannot be done with ``Backend.generate`` (a stop string cannot express "stop after a
low-confidence token"), so steps are extended token by token with ``Backend.next_logprobs`` and
:func:`adaptivestep.backends.sampler.draw`. Child ``c`` draws from its own stream ``rng_for(seed, c)``
(children are numbered in creation order), so a search is a pure function of (prompt, config) given deterministic logits.
With the llama.cpp backend consecutive calls share the KV cache up to their common prefix, so a child only
evaluates its own new tokens (and its parent's suffix when switching between parents). This is simple and
correct on CPU, one token per call; a batched version (all live children in one forward pass) is future work.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..backends.base import Backend
from ..backends.sampler import draw
from ..scoring import StepScorer
from ..seeds import rng_for
from .aggregate import AGGREGATORS, aggregate
from .common import check_scores, steps_of


@dataclass
class StepExtension:
    """Tokens sampled for one step. end: "low-confidence" (the last token had p < tau), "eos" (EOS drawn;
    not included in ``token_ids``) or "length" (``max_new`` reached). n_forward: next_logprobs calls made."""

    token_ids: list[int]
    logprobs: list[float]
    end: str
    n_forward: int


def extend_step(
    backend: Backend,
    prefix_ids: Sequence[int],
    rng: np.random.Generator,
    *,
    tau: float,
    max_new: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
) -> StepExtension:
    """Sample one AdaptiveStep step after ``prefix_ids`` (prompt + response so far), token by token.

    Stops right after the first sampled token whose temperature-1 probability is below ``tau``, on EOS, or
    after ``max_new`` tokens (>= 1). Log-probs are temperature-1, whatever ``temperature`` draws with.
    """
    if max_new < 1:
        raise ValueError(f"extend_step: max_new must be >= 1, got {max_new}")
    ids = list(prefix_ids)
    toks: list[int] = []
    lps: list[float] = []
    for i in range(max_new):
        lp = backend.next_logprobs(ids)  # (V,)
        tok = draw(lp, rng, temperature=temperature, top_p=top_p, top_k=top_k)
        if backend.is_eos(tok):
            return StepExtension(toks, lps, "eos", i + 1)
        toks.append(tok)
        lps.append(float(lp[tok]))
        ids.append(tok)
        if math.exp(lps[-1]) < tau:
            return StepExtension(toks, lps, "low-confidence", i + 1)
    return StepExtension(toks, lps, "length", max_new)


# ------------------------------------------------------------------------------------------- beam search


@dataclass(frozen=True)
class BeamConfig:
    """Step-level beam search settings.

    beam_width: partial solutions kept after each step (>= 1).
    expand: next steps sampled from each kept beam per iteration (>= 1); the root (empty response) is
        expanded into ``beam_width * expand`` samples so the first step is as wide as the later ones.
    tau: AdaptiveStep confidence threshold, a probability in (0, 1]: a sampled token with p < tau ends the
        step. Use the tau fitted on the policy's samples (``StepSplit.threshold`` of the split stage).
    max_tokens: response tokens per beam (EOS excluded); a beam reaching it is finished ("length").
    max_step_tokens: a step with no low-confidence token is cut after this many tokens.
    max_steps: most iterations (steps per beam).
    aggregate: how a partial solution's step scores become its score (a key of ``AGGREGATORS``).
    temperature, top_p, top_k: how tokens are drawn (see ``SamplingConfig``).
    seed: child c draws from ``rng_for(seed, c)``.
    """

    beam_width: int = 4
    expand: int = 4
    tau: float = 0.5
    max_tokens: int = 512
    max_step_tokens: int = 256
    max_steps: int = 64
    aggregate: str = "min"
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("beam_width", "expand", "max_tokens", "max_step_tokens", "max_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"BeamConfig.{name} must be an integer >= 1, got {v!r}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"BeamConfig.tau must be a probability in (0, 1], got {self.tau!r}")
        if self.aggregate not in AGGREGATORS:
            raise ValueError(f"BeamConfig.aggregate must be one of {sorted(AGGREGATORS)}, got {self.aggregate!r}")
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
            raise ValueError("BeamConfig: temperature >= 0, top_p in (0, 1], top_k >= 0 required")


@dataclass
class Beam:
    """A partial (or finished) solution. boundaries: step ends (records contract) over ``token_ids``."""

    id: int
    parent: int | None
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    boundaries: list[int] = field(default_factory=list)
    finished: bool = False
    finish_reason: str = ""  # "stop" (EOS) | "length" | "" while running
    step_scores: list[float] | None = None
    score: float = -math.inf  # aggregated step scores; -inf = not scored (no steps)


@dataclass
class BeamResult:
    """Outcome of a beam search.

    best: the chosen beam (best score among finished beams, else among all kept beams).
    beams: the beams kept at the end, best first. text: the best beam's decoded response.
    n_generated: tokens sampled over all children, kept or not (cost; EOS draws included).
    n_forward: next_logprobs calls. n_prm_calls / n_prm_items: score_batch calls / items scored.
    n_iterations: expansion rounds run.
    """

    best: Beam
    beams: list[Beam]
    text: str
    n_generated: int = 0
    n_forward: int = 0
    n_prm_calls: int = 0
    n_prm_items: int = 0
    n_iterations: int = 0


def _rank_key(b: Beam) -> tuple[float, int]:
    return (-b.score, b.id)  # best score first; among equals the older (lower id) beam


def beam_search(backend: Backend, scorer: StepScorer, question: str, prompt_ids: Sequence[int],
                config: BeamConfig = BeamConfig()) -> BeamResult:
    """Step-level beam search (see the module docstring). ``question`` is the raw problem text the PRM sees;
    ``prompt_ids`` the chat-rendered prompt the policy continues."""
    prompt = list(prompt_ids)
    beams = [Beam(id=0, parent=None)]
    next_id = 1
    res = BeamResult(best=beams[0], beams=beams, text="")
    for it in range(config.max_steps):
        live = [b for b in beams if not b.finished]
        if not live:
            break
        res.n_iterations = it + 1
        children: list[Beam] = []
        seen: set[tuple[tuple[int, ...], bool]] = set()
        for b in live:
            for _ in range(config.beam_width * config.expand if it == 0 else config.expand):
                cid, next_id = next_id, next_id + 1
                ext = extend_step(
                    backend, prompt + b.token_ids, rng_for(config.seed, cid), tau=config.tau,
                    max_new=min(config.max_step_tokens, config.max_tokens - len(b.token_ids)),
                    temperature=config.temperature, top_p=config.top_p, top_k=config.top_k,
                )
                res.n_generated += ext.n_forward
                res.n_forward += ext.n_forward
                toks = b.token_ids + ext.token_ids
                key = (tuple(toks), ext.end == "eos")
                if key in seen:
                    continue  # an identical sibling: would only take a second slot with the same score
                seen.add(key)
                done = ext.end == "eos" or len(toks) >= config.max_tokens
                bounds = b.boundaries + ([len(toks)] if ext.token_ids else [])
                child = Beam(cid, b.id, toks, b.logprobs + ext.logprobs, bounds, done,
                             ("stop" if ext.end == "eos" else "length") if done else "")
                if not ext.token_ids:  # EOS right away: same steps as the parent, so the same scores
                    child.step_scores, child.score = b.step_scores, b.score
                children.append(child)
        _score(backend, scorer, question, children, config.aggregate, res)
        kept = [b for b in beams if b.finished] + children
        beams = sorted(kept, key=_rank_key)[: config.beam_width]
    finished = [b for b in beams if b.finished]
    res.beams = beams
    res.best = min(finished or beams, key=_rank_key)
    res.text = backend.detokenize(res.best.token_ids)
    return res


def _score(backend: Backend, scorer: StepScorer, question: str, beams: list[Beam], how: str,
           res: BeamResult) -> None:
    todo = [b for b in beams if b.boundaries and b.step_scores is None]
    if not todo:
        return
    items = [(question, steps_of(backend.detokenize, b.token_ids, b.boundaries)) for b in todo]
    scores = scorer.score_batch(items)
    check_scores(scores, items, "beam_search")
    res.n_prm_calls += 1
    res.n_prm_items += len(items)
    for b, s in zip(todo, scores):
        b.step_scores = [float(x) for x in s]
        b.score = aggregate(b.step_scores, how)
