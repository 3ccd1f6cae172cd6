"""Token-level value-guided decoding against the scripted backend and PRM of fakes.py."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from fakes import PROMPT, ScriptedBackend, ScriptedScorer, by_position

from adaptivestep.backends.base import Backend
from adaptivestep.scoring import StepScorer
from adaptivestep.search.tvd import TVDConfig, tvd_decode


def test_doubles_satisfy_the_protocols() -> None:
    assert isinstance(ScriptedBackend(by_position([])), Backend)
    assert isinstance(ScriptedScorer(lambda q, s: 0.5), StepScorer)


# ------------------------------------------------------------------------------------------------ TVD

# max probs per position: 0.9, 0.5, 0.95, 0.3, 0.6, then EOS for sure
TABLE = [
    {"a": 0.9, "b": 0.1},
    {"a": 0.5, "b": 0.3, "c": 0.2},
    {"b": 0.95, "a": 0.05},
    {"d": 0.3, "a": 0.28, "c": 0.22, "b": 0.2},
    {"c": 0.6, "a": 0.4},
]


def likes(ch: str) -> Callable[[str, list[str]], float]:
    return lambda q, steps: 0.9 if steps[-1].endswith(ch) else 0.2


def test_intervenes_exactly_where_top_prob_is_below_threshold() -> None:
    be, sc = ScriptedBackend(by_position(TABLE)), ScriptedScorer(likes("zz"))  # indifferent PRM
    out = tvd_decode(be, sc, "q", PROMPT, TVDConfig(threshold=0.55, k=8))
    assert [iv.position for iv in out.interventions] == [1, 3]
    assert out.n_interventions == 2 == out.n_prm_calls == len(sc.batches)
    # indifferent PRM: ties go to the most likely token, so the result is the greedy text
    assert out.text == "aabdc" and out.finish_reason == "stop"
    assert out.boundaries == [2, 4, 5]
    for iv in out.interventions:
        assert max(iv.probs) < 0.55 and iv.probs == sorted(iv.probs, reverse=True)
    # moving the threshold moves the interventions
    assert [iv.position for iv in tvd_decode(be, sc, "q", PROMPT, TVDConfig(threshold=0.7)).interventions] == [1, 3, 4]
    assert [iv.position for iv in tvd_decode(be, sc, "q", PROMPT, TVDConfig(threshold=0.4)).interventions] == [3]


def test_picks_the_candidate_the_scorer_prefers() -> None:
    be, sc = ScriptedBackend(by_position(TABLE)), ScriptedScorer(likes("c"))
    out = tvd_decode(be, sc, "q", PROMPT, TVDConfig(threshold=0.55, k=3))
    # position 1: top-3 a, b, c -> the PRM likes "c"; position 3: top-3 d, a, c -> "c" again
    assert out.text == "acbcc"
    assert [iv.chosen for iv in out.interventions] == [be.tokenize("c")[0]] * 2
    iv = out.interventions[0]
    assert iv.candidates == be.tokenize("abc") and iv.scores == [0.2, 0.2, 0.9]
    assert out.logprobs[1] == pytest.approx(math.log(0.2), abs=1e-6)  # temperature-1 log p of the pick


def test_k_candidates_are_scored_in_one_call_with_the_documented_steps() -> None:
    be, sc = ScriptedBackend(by_position(TABLE)), ScriptedScorer(likes("c"))
    tvd_decode(be, sc, "q", PROMPT, TVDConfig(threshold=0.55, k=4))
    assert len(sc.batches) == 2
    first, second = sc.batches
    # position 1: response "a", no earlier intervention: one step = prefix + candidate
    assert first == [("q", ["a" + ch]) for ch in "abcd"]
    # position 3: response "acb", previous intervention at position 1 -> steps "ac" | "b" + candidate
    assert second == [("q", ["ac", "b" + ch]) for ch in "dacb"]


def test_threshold_zero_is_greedy_and_never_calls_the_prm() -> None:
    be, sc = ScriptedBackend(by_position(TABLE)), ScriptedScorer(likes("c"))
    out = tvd_decode(be, sc, "q", PROMPT, TVDConfig(threshold=0.0))
    assert out.text == "aabdc" and out.n_interventions == 0 and not sc.batches
    assert out.boundaries == [5] and out.n_forward == 6  # 5 tokens + the EOS position


def test_prefix_grows_one_token_per_call() -> None:
    """Each call extends the previous prefix by one token: a prefix-caching backend runs one new token."""
    be, sc = ScriptedBackend(by_position(TABLE)), ScriptedScorer(likes("c"))
    tvd_decode(be, sc, "q", PROMPT, TVDConfig(threshold=0.55))
    for prev, cur in zip(be.calls, be.calls[1:]):
        assert cur[:-1] == prev and len(cur) == len(prev) + 1
    assert be.calls[0] == tuple(PROMPT)


def test_max_tokens_and_eos_candidate() -> None:
    be = ScriptedBackend(lambda resp: {"a": 1.0})
    out = tvd_decode(be, ScriptedScorer(likes("a")), "q", PROMPT, TVDConfig(threshold=0.55, max_tokens=7))
    assert out.finish_reason == "length" and out.text == "a" * 7 and len(out.logprobs) == 7
    # at position 2 EOS is a candidate; a PRM that prefers ending ("ab" scored as the last step) stops there
    table = [{"a": 1.0}, {"b": 1.0}, {"c": 0.4, "$": 0.35, "d": 0.25}]
    be = ScriptedBackend(by_position(table, {"a": 1.0}))
    sc = ScriptedScorer(lambda q, steps: 0.95 if steps[-1] == "ab" else 0.1)
    out = tvd_decode(be, sc, "q", PROMPT, TVDConfig(threshold=0.55, k=3, max_tokens=10))
    assert out.text == "ab" and out.finish_reason == "stop"
    assert sc.batches[0] == [("q", ["abc"]), ("q", ["ab"]), ("q", ["abd"])]
    assert out.boundaries == [2]


def test_scorer_with_wrong_output_is_an_error() -> None:
    class Bad:
        def score_batch(self, items):  # type: ignore[no-untyped-def]
            return [[0.5]]

    with pytest.raises(ValueError, match="tvd_decode: scorer returned 1 score lists for 3 items"):
        tvd_decode(ScriptedBackend(by_position(TABLE)), Bad(), "q", PROMPT, TVDConfig(threshold=0.55, k=3))


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="threshold"):
        TVDConfig(threshold=1.5)
    with pytest.raises(ValueError, match="k must"):
        TVDConfig(k=0)
    with pytest.raises(ValueError, match="aggregate"):
        TVDConfig(aggregate="max")


def test_paper_thresholds_by_task_kind():
    from adaptivestep.search.tvd import paper_threshold

    assert paper_threshold("math") == 0.55 and paper_threshold("code") == 0.28
    with pytest.raises(ValueError, match="task kind"):
        paper_threshold("poetry")


def test_default_threshold_follows_the_task_kind() -> None:
    """TVDConfig() has no threshold of its own: the task kind picks the paper's (code 0.28, not math's 0.55)."""
    from adaptivestep.search.tvd import threshold_for

    be, sc = ScriptedBackend(by_position(TABLE)), ScriptedScorer(likes("zz"))
    code = tvd_decode(be, sc, "q", PROMPT, TVDConfig(), kind="code")
    math_ = tvd_decode(be, sc, "q", PROMPT, TVDConfig(), kind="math")
    # top probabilities 0.9, 0.5, 0.95, 0.3, 0.6: only math's 0.55 is above 0.5 and 0.3
    assert [iv.position for iv in code.interventions] == []
    assert [iv.position for iv in math_.interventions] == [1, 3]
    assert threshold_for("code", TVDConfig().threshold) == 0.28
    # a set threshold wins over the kind
    assert [iv.position for iv in tvd_decode(be, sc, "q", PROMPT, TVDConfig(threshold=0.4), kind="code")
            .interventions] == [3]
    with pytest.raises(ValueError, match="task kind"):
        tvd_decode(be, sc, "q", PROMPT, TVDConfig())
