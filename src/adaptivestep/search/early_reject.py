"""Best-of-N with early rejection: stop generating candidates the PRM already rates poorly.

All ``n`` candidates are generated in chunks of ``chunk`` tokens with ``Backend.generate`` (one request per
running candidate per round, all in one call), each request continuing from prompt + the candidate's tokens
so far. After each round (a checkpoint) every candidate whose response changed is split into AdaptiveStep
steps (tokens with temperature-1 probability below ``tau`` end a step,
:func:`adaptivestep.split.confidence_boundaries`) and scored by the PRM in ONE ``score_batch`` call. A
still-running candidate is then rejected when its aggregated score is below ``relative`` x the best alive
score or below ``absolute``; the ``min_keep`` best alive candidates (finished ones included) are never
rejected. Finished candidates are never rejected (stopping them saves nothing). The final choice is the
best survivor by the same aggregation (:func:`adaptivestep.search.bon.select`, rule ``prm-<aggregate>``);
rejected candidates keep their index and partial text in the result, nothing is dropped or re-ordered.

Seeds: chunk ``r`` of candidate ``i`` is drawn with seed ``stable_seed(seed, i, r)``, so the run is a pure
function of (prompt, config) and a run with rejection off is the plain chunked Best-of-N it is compared to.
Cost note: with the llama.cpp backend, requests for different candidates do not share a KV-cache prefix
beyond the prompt, so each round re-evaluates each candidate's tokens (``prompt_tokens_evaluated`` counts it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..backends.base import Backend, GenRequest, SamplingConfig
from ..scoring import StepScorer
from ..seeds import stable_seed
from ..split import confidence_boundaries, confidences
from .aggregate import AGGREGATORS, aggregate
from .bon import Candidate, Selection, select
from .common import check_scores, steps_of


@dataclass(frozen=True)
class EarlyRejectConfig:
    """Early-rejection Best-of-N settings.

    n: candidates (>= 1). chunk: tokens generated per candidate between checkpoints (>= 1).
    max_tokens: response tokens per candidate. tau: AdaptiveStep threshold (probability in (0, 1]) that
        splits partial responses into steps for the PRM.
    relative: reject a running candidate scoring below ``relative`` x the best alive score, in [0, 1]
        (0 = off). absolute: reject a running candidate scoring below this, in [0, 1] (0 = off).
    min_keep: the best ``min_keep`` alive candidates are never rejected (>= 1).
    aggregate: step scores -> candidate score (a key of ``AGGREGATORS``).
    temperature, top_p, top_k, stop: sampling (see ``SamplingConfig``). seed: base seed.
    """

    n: int = 16
    chunk: int = 64
    max_tokens: int = 512
    tau: float = 0.5
    relative: float = 0.5
    absolute: float = 0.0
    min_keep: int = 2
    aggregate: str = "min"
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop: tuple[str, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n", "chunk", "max_tokens", "min_keep"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"EarlyRejectConfig.{name} must be an integer >= 1, got {v!r}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"EarlyRejectConfig.tau must be a probability in (0, 1], got {self.tau!r}")
        for name in ("relative", "absolute"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"EarlyRejectConfig.{name} must be in [0, 1], got {getattr(self, name)!r}")
        if self.aggregate not in AGGREGATORS:
            raise ValueError(
                f"EarlyRejectConfig.aggregate must be one of {sorted(AGGREGATORS)}, got {self.aggregate!r}"
            )


@dataclass
class ERCandidate:
    """One candidate. rejected_at: the checkpoint (1-based) that rejected it, None if it survived.
    score: aggregated PRM score at its last checkpoint (-inf = never scored: no tokens)."""

    index: int
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finished: bool = False
    finish_reason: str = ""
    rejected_at: int | None = None
    boundaries: list[int] = field(default_factory=list)
    step_scores: list[float] | None = None
    score: float = -math.inf
    text: str = ""
    dirty: bool = False  # tokens changed since the last scoring
    n_drawn: int = 0  # tokens sampled for it, EOS draws included (its generation cost)

    @property
    def alive(self) -> bool:
        return self.rejected_at is None


@dataclass
class EarlyRejectResult:
    """Outcome. candidates: all ``n``, by index. chosen: index of the best survivor; selection: how it was
    chosen. tokens_generated: tokens actually generated. tokens_plain_estimate: what plain Best-of-N would
    have generated (survivors exactly; a rejected candidate counts as max(its tokens, the mean length of the
    finished survivors), ``max_tokens`` if none finished); both count EOS draws. tokens_saved_estimate: the
    difference.
    n_checkpoints, n_prm_calls, n_prm_items: PRM cost. prompt_tokens_evaluated: backend-reported prompt work.
    """

    candidates: list[ERCandidate]
    chosen: int
    selection: Selection
    tokens_generated: int = 0
    tokens_plain_estimate: int = 0
    tokens_saved_estimate: int = 0
    n_checkpoints: int = 0
    n_prm_calls: int = 0
    n_prm_items: int = 0
    prompt_tokens_evaluated: int = 0


def _strip_eos(backend: Backend, toks: list[int], lps: list[float]) -> tuple[list[int], list[float]]:
    if toks and backend.is_eos(toks[-1]):
        return toks[:-1], lps[:-1]
    return toks, lps


def _reject(cands: list[ERCandidate], config: EarlyRejectConfig, checkpoint: int) -> None:
    alive = sorted((c for c in cands if c.alive), key=lambda c: (-c.score, c.index))
    if not alive or not any(not c.finished for c in alive):
        return
    best = alive[0].score
    for c in alive[config.min_keep:]:
        if c.finished:
            continue
        if c.score < config.absolute or c.score < config.relative * best or c.score == -math.inf:
            c.rejected_at = checkpoint


def best_of_n_early_reject(backend: Backend, scorer: StepScorer, question: str, prompt_ids: Sequence[int],
                           config: EarlyRejectConfig = EarlyRejectConfig()) -> EarlyRejectResult:
    """Best-of-N with early rejection (see the module docstring)."""
    prompt = list(prompt_ids)
    cands = [ERCandidate(i) for i in range(config.n)]
    res = EarlyRejectResult(candidates=cands, chosen=0, selection=Selection(0, ""))
    checkpoint = 0
    while True:
        running = [c for c in cands if c.alive and not c.finished]
        if not running:
            break
        checkpoint += 1
        reqs = [
            GenRequest(
                prompt_ids=tuple(prompt + c.token_ids), n=1, seed=stable_seed(config.seed, c.index, checkpoint),
                config=SamplingConfig(temperature=config.temperature, top_p=config.top_p, top_k=config.top_k,
                                      max_tokens=min(config.chunk, config.max_tokens - len(c.token_ids)),
                                      stop=config.stop),
            )
            for c in running
        ]
        gens = backend.generate(reqs)
        if len(gens) != len(reqs) or any(len(g) != 1 for g in gens):
            raise ValueError("best_of_n_early_reject: backend.generate returned the wrong number of generations")
        for c, (g,) in zip(running, gens):
            res.tokens_generated += len(g.token_ids)
            c.n_drawn += len(g.token_ids)
            res.prompt_tokens_evaluated += g.prompt_tokens_evaluated
            toks, lps = _strip_eos(backend, list(g.token_ids), list(g.logprobs))
            c.token_ids += toks
            c.logprobs += lps
            c.dirty = c.dirty or bool(toks)
            if g.finish_reason == "stop" or len(c.token_ids) >= config.max_tokens:
                c.finished = True
                c.finish_reason = "stop" if g.finish_reason == "stop" else "length"
        _score(backend, scorer, question, [c for c in cands if c.alive and c.dirty], config, res)
        res.n_checkpoints = checkpoint
        _reject(cands, config, checkpoint)
    for c in cands:
        c.text = backend.detokenize(c.token_ids)
    survivors = [c for c in cands if c.alive]
    res.selection = select([Candidate(c.index, None, c.step_scores) for c in survivors], f"prm-{config.aggregate}")
    res.chosen = res.selection.chosen
    # counted like tokens_generated (EOS draws included), so that with nothing rejected the two are equal
    done = [c.n_drawn for c in survivors if c.finished]
    mean_len = sum(done) / len(done) if done else config.max_tokens
    res.tokens_plain_estimate = sum(c.n_drawn if c.alive else max(c.n_drawn, round(mean_len)) for c in cands)
    res.tokens_saved_estimate = res.tokens_plain_estimate - res.tokens_generated
    return res


def _score(backend: Backend, scorer: StepScorer, question: str, todo: list[ERCandidate],
           config: EarlyRejectConfig, res: EarlyRejectResult) -> None:
    if not todo:
        return
    for c in todo:
        c.boundaries = confidence_boundaries(confidences(c.logprobs), config.tau)
    items = [(question, steps_of(backend.detokenize, c.token_ids, c.boundaries)) for c in todo]
    scores = scorer.score_batch(items)
    check_scores(scores, items, "best_of_n_early_reject")
    res.n_prm_calls += 1
    res.n_prm_items += len(items)
    for c, s in zip(todo, scores):
        c.step_scores = [float(x) for x in s]
        c.score = aggregate(c.step_scores, config.aggregate)
        c.dirty = False
