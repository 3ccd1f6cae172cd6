"""Step-level beam search and Best-of-N with early rejection, against the scripted doubles of fakes.py."""

from __future__ import annotations

import pytest
from fakes import PROMPT, ScriptedBackend, ScriptedScorer, by_position

from adaptivestep.search.aggregate import aggregate
from adaptivestep.search.beam import BeamConfig, beam_search, extend_step
from adaptivestep.search.common import steps_of
from adaptivestep.search.early_reject import EarlyRejectConfig, best_of_n_early_reject
from adaptivestep.seeds import rng_for


def test_steps_of() -> None:
    dec = lambda ids: "".join("xyz"[i] for i in ids)
    assert steps_of(dec, [0, 1, 2, 0], [2, 3, 4]) == ["xy", "z", "x"]
    assert steps_of(dec, [], []) == []
    with pytest.raises(ValueError):
        steps_of(dec, [0, 1], [1])


# ----------------------------------------------------------------------------------------------- beam

# top probs: 0.9, 0.4 (< tau 0.5), 0.8, 0.45 (< tau), 0.9, then EOS
STEPPY = [{"a": 0.9, "b": 0.1}, {"b": 0.4, "a": 0.35, "c": 0.25}, {"c": 0.8, "a": 0.2},
          {"d": 0.45, "a": 0.3, "b": 0.25}, {"a": 0.9, "b": 0.1}]


def test_extend_step_ends_after_a_low_confidence_token() -> None:
    be = ScriptedBackend(by_position(STEPPY))
    ext = extend_step(be, PROMPT, rng_for(0, 0), tau=0.5, max_new=10, temperature=0.0)
    assert be.detokenize(ext.token_ids) == "ab" and ext.end == "low-confidence" and ext.n_forward == 2
    ext = extend_step(be, PROMPT, rng_for(0, 0), tau=0.5, max_new=1, temperature=0.0)
    assert ext.end == "length" and len(ext.token_ids) == 1


def test_beam_steps_are_adaptivestep_steps() -> None:
    be, sc = ScriptedBackend(by_position(STEPPY)), ScriptedScorer(lambda q, s: 0.5)
    res = beam_search(be, sc, "q", PROMPT, BeamConfig(beam_width=2, expand=2, tau=0.5, temperature=0.0))
    assert res.text == "abcda" and res.best.finish_reason == "stop"
    assert res.best.boundaries == [2, 4, 5]
    assert sc.batches[-1] == [("q", ["ab", "cd", "a"])]
    # greedy siblings are identical: kept once, so a single beam survives
    assert len(res.beams) == 1
    assert res.n_generated == len(be.calls) == res.n_forward  # every sampled token is counted


def test_beam_keeps_the_best_by_score() -> None:
    uniform = {ch: 0.25 for ch in "abcd"}  # every token is a step at tau = 0.5
    value = {"a": 0.1, "b": 0.9, "c": 0.6, "d": 0.3}
    be = ScriptedBackend(by_position([uniform] * 3))
    sc = ScriptedScorer(lambda q, steps: value[steps[-1][-1]])
    one = beam_search(be, sc, "q", PROMPT, BeamConfig(beam_width=2, expand=4, tau=0.5, max_steps=1, aggregate="mean"))
    (batch,) = sc.batches
    assert len(batch) == len({tuple(s) for _, s in batch})  # duplicates were not scored
    scored = sorted((aggregate([value[st[-1]] for st in s], "mean") for _, s in batch), reverse=True)
    assert [b.score for b in one.beams] == scored[:2]
    assert one.best.score == scored[0]
    # the full search ends on the PRM's favourite path, better than one unguided sample
    sc2 = ScriptedScorer(lambda q, steps: value[steps[-1][-1]])
    full = beam_search(be, sc2, "q", PROMPT, BeamConfig(beam_width=2, expand=4, tau=0.5, aggregate="mean"))
    assert full.text == "bbb" and full.best.finish_reason == "stop"
    assert full.n_prm_calls == len(sc2.batches) == full.n_iterations - 1  # the EOS round reuses scores
    lone = beam_search(be, ScriptedScorer(lambda q, steps: value[steps[-1][-1]]), "q", PROMPT,
                       BeamConfig(beam_width=1, expand=1, tau=0.5, seed=3, aggregate="mean"))
    assert full.best.score >= lone.best.score


def test_beam_is_seeded_and_respects_token_caps() -> None:
    uniform = {ch: 0.25 for ch in "abcd"}
    cfg = BeamConfig(beam_width=2, expand=2, tau=0.5, seed=5)
    runs = [beam_search(ScriptedBackend(by_position([uniform] * 4)), ScriptedScorer(lambda q, s: 0.5), "q",
                        PROMPT, cfg) for _ in range(2)]
    assert runs[0].best.token_ids == runs[1].best.token_ids and runs[0].n_generated == runs[1].n_generated
    sure = ScriptedBackend(lambda resp: {"a": 1.0})
    res = beam_search(sure, ScriptedScorer(lambda q, s: 0.5), "q", PROMPT,
                      BeamConfig(beam_width=1, expand=1, max_tokens=10, max_step_tokens=4))
    assert res.best.boundaries == [4, 8, 10] and res.best.finish_reason == "length"


def test_beam_config_validation() -> None:
    with pytest.raises(ValueError, match="beam_width"):
        BeamConfig(beam_width=0)
    with pytest.raises(ValueError, match="tau"):
        BeamConfig(tau=0.0)


# ------------------------------------------------------------------------------------- early rejection

# first token "x" or "a" (p = 0.5: a step end at tau 0.6), then 11 tokens, then EOS: every response has 12
BRANCH = [{"x": 0.5, "a": 0.5}] + [{"a": 0.9, "b": 0.1}] * 11


def bad_if_x(q: str, steps: list[str]) -> float:
    return 0.1 if "x" in "".join(steps) else 0.9


def _run(relative: float, absolute: float = 0.0, min_keep: int = 2, n: int = 8):  # type: ignore[no-untyped-def]
    be, sc = ScriptedBackend(by_position(BRANCH)), ScriptedScorer(bad_if_x)
    cfg = EarlyRejectConfig(n=n, chunk=3, max_tokens=64, tau=0.6, relative=relative, absolute=absolute,
                            min_keep=min_keep, seed=1)
    return best_of_n_early_reject(be, sc, "q", PROMPT, cfg), sc


def test_early_rejection_cost_counts_eos_draws_like_the_plain_estimate() -> None:
    be, sc = ScriptedBackend(by_position(STEPPY)), ScriptedScorer(bad_if_x)  # keeps EOS draws, as the real ones
    cfg = EarlyRejectConfig(n=3, chunk=2, max_tokens=64, tau=0.5, relative=0.0, seed=1)
    res = best_of_n_early_reject(be, sc, "q", PROMPT, cfg)
    assert all(c.finished and c.finish_reason == "stop" for c in res.candidates)  # every one ended by EOS
    assert res.tokens_generated == sum(len(c.token_ids) + 1 for c in res.candidates)
    assert res.tokens_plain_estimate == res.tokens_generated and res.tokens_saved_estimate == 0


def test_early_rejection_saves_tokens_and_loses_nothing() -> None:
    plain, _ = _run(relative=0.0)
    res, sc = _run(relative=0.5)
    assert plain.tokens_generated == 8 * (12 + 1) and plain.tokens_saved_estimate == 0  # + the EOS draw
    assert all(c.rejected_at is None and c.finished for c in plain.candidates)
    rejected = [c for c in res.candidates if c.rejected_at is not None]
    survivors = [c for c in res.candidates if c.rejected_at is None]
    assert rejected and all(c.rejected_at == 1 and c.text.startswith("x") for c in rejected)
    assert all(not c.text.startswith("x") for c in survivors) and len(survivors) >= 2
    assert res.tokens_generated == 13 * len(survivors) + 3 * len(rejected) < plain.tokens_generated
    assert res.tokens_plain_estimate == plain.tokens_generated  # equal lengths: the estimate is exact
    assert res.tokens_saved_estimate == plain.tokens_generated - res.tokens_generated
    # never lost or re-ordered; same seeds -> survivors are exactly the plain run's candidates
    assert [c.index for c in res.candidates] == list(range(8))
    for c in survivors:
        assert c.token_ids == plain.candidates[c.index].token_ids
    assert res.chosen in {c.index for c in survivors}
    # one PRM call per checkpoint that changed something (the last round only drew EOS: 12 tokens = 4 chunks)
    assert res.n_checkpoints == 5 and res.n_prm_calls == len(sc.batches) == 4
    assert len(sc.batches[1]) == len(survivors)  # rejected candidates are not scored again


def test_early_rejection_keeps_min_keep() -> None:
    res, _ = _run(relative=0.0, absolute=0.95, min_keep=3)  # everyone is below 0.95
    alive = [c.index for c in res.candidates if c.rejected_at is None]
    assert len(alive) == 3
    # the kept ones are the best at checkpoint 1 (ties -> lowest index)
    first = sorted(res.candidates, key=lambda c: (-(0.9 if not c.text.startswith("x") else 0.1), c.index))
    assert alive == sorted(c.index for c in first[:3])
    assert res.chosen == min(alive, key=lambda i: (-res.candidates[i].score, i))


def test_early_reject_config_validation() -> None:
    with pytest.raises(ValueError, match="min_keep"):
        EarlyRejectConfig(min_keep=0)
    with pytest.raises(ValueError, match="relative"):
        EarlyRejectConfig(relative=1.5)
