"""Step splitters: AdaptiveStep confidence breaks, thresholds, code-only rule and the baselines."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from adaptivestep.records import Sample, StepSplit
from adaptivestep.split import (
    SPLITTERS,
    SplitParams,
    code_region,
    confidence_boundaries,
    confidences,
    fixed_boundaries,
    mark_breaks,
    newline_boundaries,
    quantile_threshold,
    random_boundaries,
    split_samples,
    step_texts,
)


def make_sample(
    pieces: list[str], probs: list[float] | None = None, *, pid: str = "p", idx: int = 0, kind: str = "math"
) -> Sample:
    """A Sample from a fake tokenisation: one token per piece, offsets by cumulative lengths."""
    probs = probs if probs is not None else [0.9] * len(pieces)
    ends = np.cumsum([len(p) for p in pieces]).tolist()
    s = Sample(
        problem_id=pid,
        sample_index=idx,
        prompt="q",
        prompt_ids=[1],
        token_ids=list(range(len(pieces))),
        logprobs=[math.log(p) for p in probs],
        token_end_chars=ends,
        text="".join(pieces),
        finish_reason="stop",
        model="fake",
        backend="fake",
        sampling={},
        seed=0,
        task_kind=kind,
    )
    s.validate()
    return s


# ------------------------------------------------------------------------------------------- confidence


def test_confidences_exp_and_nan() -> None:
    assert np.allclose(confidences([0.0, math.log(0.5), -np.inf]), [1.0, 0.5, 0.0])
    with pytest.raises(ValueError, match="NaN"):
        confidences([0.0, float("nan")])


def test_break_goes_right_after_low_confidence_token() -> None:
    conf = [0.9, 0.01, 0.9, 0.9, 0.3, 0.9]
    assert confidence_boundaries(conf, 0.5) == [2, 5, 6]
    # strict rule: a token exactly at tau is not a break
    assert confidence_boundaries(conf, 0.3) == [2, 6]
    # consecutive low tokens give one-token steps (no minimum length)
    assert confidence_boundaries([0.1, 0.1, 0.1], 0.5) == [1, 2, 3]


def test_end_of_response_always_ends_a_step() -> None:
    assert confidence_boundaries([0.9, 0.9, 0.9], 0.5) == [3]
    # a low-confidence last token coincides with the end: no duplicate boundary
    assert confidence_boundaries([0.9, 0.9, 0.1], 0.5) == [3]
    b = confidence_boundaries(np.random.default_rng(1).random(500), 0.3)
    assert b[-1] == 500 and all(x < y for x, y in itertools.pairwise(b)) and b[0] > 0


def test_region_restricts_breaks_without_adding_edges() -> None:
    conf = [0.1, 0.9, 0.1, 0.9, 0.9, 0.1, 0.9]
    assert confidence_boundaries(conf, 0.5) == [1, 3, 6, 7]
    # region [2, 5): only token 2 may break; edges 2 and 5 are not boundaries
    assert confidence_boundaries(conf, 0.5, region=(2, 5)) == [3, 7]
    assert confidence_boundaries(conf, 0.5, region=(3, 3)) == [7]
    with pytest.raises(ValueError, match="region"):
        confidence_boundaries(conf, 0.5, region=(5, 2))
    with pytest.raises(ValueError, match="region"):
        confidence_boundaries(conf, 0.5, region=(0, 8))


def test_quantile_threshold_hits_rate_on_large_array() -> None:
    rng = np.random.default_rng(0)
    c = rng.beta(5, 0.5, size=200_000)  # mostly confident tokens, a thin low tail like a real policy
    for rate in (0.005, 0.02, 0.1):
        tau = quantile_threshold(c, rate)
        assert abs((c < tau).mean() - rate) < 1e-4
        assert confidence_boundaries(c, tau)[:-1] == (np.flatnonzero(c < tau) + 1).tolist()


def test_quantile_threshold_ties_and_validation() -> None:
    # 10 tokens: 3 at 0.1, 7 at 0.9. Achievable fractions below tau: 0, 0.3, 1.0
    c = [0.1] * 3 + [0.9] * 7
    tau = quantile_threshold(c, 0.2)
    assert (np.asarray(c) < tau).mean() == pytest.approx(0.3)
    tau = quantile_threshold(c, 0.1)
    assert (np.asarray(c) < tau).mean() == 0.0
    # exactly half-way between 0 and 0.3: fewer breaks wins
    assert (np.asarray(c) < quantile_threshold(c, 0.15)).mean() == 0.0
    # near 1: tau goes above the max so every token breaks
    assert (np.asarray(c) < quantile_threshold(c, 0.99)).mean() == 1.0
    for bad in (0.0, 1.0, -0.1, 2, True):
        with pytest.raises(ValueError, match="break_rate"):
            quantile_threshold(c, bad)
    with pytest.raises(ValueError, match="empty"):
        quantile_threshold([], 0.02)


# ------------------------------------------------------------------------------------------- baselines


def test_fixed_boundaries() -> None:
    assert fixed_boundaries(10, 3) == [3, 6, 9, 10]
    assert fixed_boundaries(9, 3) == [3, 6, 9]
    assert fixed_boundaries(2, 5) == [2]
    b = fixed_boundaries(1000, 32)
    assert len(b) - 1 == 1000 // 32  # inner breaks
    with pytest.raises(ValueError, match="k"):
        fixed_boundaries(10, 0)


def test_random_boundaries_rate() -> None:
    rng = np.random.default_rng(3)
    n, rate = 100_000, 0.02
    b = random_boundaries(n, rate, rng)
    inner = len(b) - 1
    assert abs(inner / n - rate) < 0.003  # ~7 sigma
    assert b[-1] == n and all(x < y for x, y in itertools.pairwise(b))
    b = random_boundaries(100, 1.0, rng, region=(10, 20))
    assert b == list(range(11, 21)) + [100]
    with pytest.raises(ValueError, match="rate"):
        random_boundaries(10, 1.5, rng)


# --------------------------------------------------------------------------------------------- newline

REALISTIC = [
    "To",
    " find",
    " the",
    " total",
    ",",
    " we",
    " add",
    ".\n\n",
    "Step",
    " ",
    "1",
    ":",
    " ",
    "3",
    " +",
    " ",
    "4",
    " =",
    " ",
    "7",
    "\n",
    "\n",
    "Step",
    " ",
    "2",
    ":",
    " so",
    " the",
    " answer",
    " is",
    " ",
    "7",
    ".",
    "\n",
    "The",
    " answer",
    " is",
    " $\\",
    "boxed",
    "{",
    "7",
    "}$",
    "\n",
    "\n",
]


def _ends(pieces: list[str]) -> list[int]:
    return np.cumsum([len(p) for p in pieces]).tolist()


def test_newline_split_realistic_text() -> None:
    text, ends = "".join(REALISTIC), _ends(REALISTIC)
    b = newline_boundaries(text, ends)
    steps = [text[(ends[a - 1] if a else 0) : ends[e - 1]] for a, e in zip([0, *b[:-1]], b)]
    assert "".join(steps) == text
    assert steps == [
        "To find the total, we add.\n\n",
        "Step 1: 3 + 4 = 7\n\n",
        "Step 2: so the answer is 7.\n",
        "The answer is $\\boxed{7}$\n\n",
    ]
    b2 = newline_boundaries(text, ends, double_newline=True)
    assert b2 == [b[0], b[1], b[3]]


def test_newline_no_blank_steps() -> None:
    pieces = ["\n", "\n", "A", "\n", " ", "\n", "B", "\n", "\n", "  "]
    text, ends = "".join(pieces), _ends(pieces)
    b = newline_boundaries(text, ends)
    steps = [text[(ends[a - 1] if a else 0) : ends[e - 1]] for a, e in zip([0, *b[:-1]], b)]
    assert all(s.strip() for s in steps)
    assert steps == ["\n\nA\n \n", "B\n\n  "]
    # newline inside a bigger token, and zero-width tokens (partial UTF-8 characters)
    pieces = ["a", ".\nb", "", "é", "\n"]
    text, ends = "".join(pieces), _ends(pieces)
    assert newline_boundaries(text, ends) == [2, 5]
    with pytest.raises(ValueError, match="token_end_chars"):
        newline_boundaries("abc", [2, 1, 3])


def test_newline_token_that_opens_next_line() -> None:
    # "\nShe" holds the line end and the next line's first word: the step ends before it
    pieces = ["A", " day", ".", "\nShe", " sells", "\n\n", "#", " 18"]
    text, ends = "".join(pieces), _ends(pieces)
    b = newline_boundaries(text, ends)
    assert b == [3, 6, 8]
    # but a token with text before the newline ends the step as usual
    pieces = ["A", " day.\nShe", " sells"]
    assert newline_boundaries("".join(pieces), _ends(pieces)) == [2, 3]
    # in a region: the token before the newline-opener must be inside it
    pieces = ["A", " day", ".", "\nShe", " sells", "\n", "Ok"]
    text, ends = "".join(pieces), _ends(pieces)
    assert newline_boundaries(text, ends, region=(3, 7)) == [6, 7]
    assert newline_boundaries(text, ends, region=(2, 7)) == [3, 6, 7]


# ------------------------------------------------------------------------------------------ code region

CODE = [
    "Here",
    " is",
    " the",
    " code",
    ":\n",
    "```",
    "python",
    "\n",
    "def",
    " f",
    "(x",
    "):\n",
    "   ",
    " return",
    " x",
    " +",
    " ",
    "1",
    "\n",
    "```",
    "\n",
    "It",
    " adds",
    " one",
    ".",
]


def test_code_region() -> None:
    text, ends = "".join(CODE), _ends(CODE)
    lo, hi = code_region(text, ends)
    assert "".join(CODE[lo:hi]) == "def f(x):\n    return x + 1"
    assert code_region("no code here", [2, 12]) is None
    assert code_region("```\n\n```", [3, 4, 5, 8]) is None  # blank block
    # unclosed (truncated) block runs to the end; a python block is preferred over an earlier other one
    p2 = ["```", "bash", "\n", "ls", "\n", "```", "\n", "```", "py", "\n", "x", "=", "1"]
    lo, hi = code_region("".join(p2), _ends(p2))
    assert "".join(p2[lo:hi]) == "x=1"


def test_code_only_rule_in_splitter() -> None:
    probs = [0.05] * len(CODE)  # every token is low-confidence
    s = make_sample(CODE, probs, kind="code")
    sp = SPLITTERS["confidence"](s, SplitParams(tau=0.5))
    lo, hi = sp.region
    assert sp.boundaries == list(range(lo + 1, hi + 1)) + [len(CODE)]
    # code_only off, or a math sample: every token breaks
    assert SPLITTERS["confidence"](s, SplitParams(tau=0.5, code_only=False)).boundaries == list(
        range(1, len(CODE) + 1)
    )
    m = make_sample(CODE, probs, kind="math")
    assert SPLITTERS["confidence"](m, SplitParams(tau=0.5)).region is None
    # the baselines obey the region too
    assert all(lo < b <= hi for b in SPLITTERS["fixed"](s, SplitParams(k=2)).boundaries[:-1])
    nl = SPLITTERS["newline"](s, SplitParams())
    assert all(lo < b <= hi for b in nl.boundaries[:-1]) and len(nl.boundaries) == 2


# ---------------------------------------------------------------------------------------- registry


def test_split_params_validation() -> None:
    for kwargs, name in [
        ({"break_rate": 0.0}, "break_rate"),
        ({"tau": 1.5}, "tau"),
        ({"k": 0}, "k"),
        ({"k": 2.5}, "k"),
        ({"rate": -0.1}, "rate"),
        ({"seed": -1}, "seed"),
        ({"double_newline": "yes"}, "double_newline"),
        ({"code_only": 1}, "code_only"),
    ]:
        with pytest.raises(ValueError, match=name):
            SplitParams(**kwargs)
    with pytest.raises(ValueError, match="tau"):
        SPLITTERS["confidence"](make_sample(["a", "b"]), SplitParams())
    with pytest.raises(ValueError, match="rate"):
        SPLITTERS["random"](make_sample(["a", "b"]), SplitParams())
    with pytest.raises(ValueError, match="unknown split method"):
        split_samples([make_sample(["a"])], "sentence", SplitParams())


def _random_samples(n_samples: int = 40, n_tok: int = 200, seed: int = 0) -> list[Sample]:
    rng = np.random.default_rng(seed)
    out = []
    for j in range(n_samples):
        probs = np.clip(rng.beta(5, 0.5, size=n_tok), 1e-6, 1.0).tolist()
        out.append(make_sample([f"w{i} " for i in range(n_tok)], probs, pid=f"q{j % 7}", idx=j))
    return out


def test_split_samples_pools_tau_and_random_rate() -> None:
    samples = _random_samples()
    conf = split_samples(samples, "confidence", SplitParams(break_rate=0.03))
    assert [s.key for s in conf] == [s.key for s in samples]
    tau = conf[0].threshold
    assert tau is not None and all(s.threshold == tau and s.params["tau"] == tau for s in conf)
    pooled = np.concatenate([confidences(s.logprobs) for s in samples])
    assert tau == quantile_threshold(pooled, 0.03)
    inner = sum(len(s.boundaries) - 1 for s in conf)
    # breaks at the last token merge with the forced end, so inner <= pooled count
    assert inner <= int((pooled < tau).sum()) and abs(conf[0].params["pooled_rate"] - 0.03) < 1e-3
    for s in conf:
        StepSplit.from_dict(s.to_dict())  # contract holds

    rnd = split_samples(samples, "random", SplitParams(break_rate=0.03, seed=5))
    assert rnd[0].params["rate"] == pytest.approx(conf[0].params["pooled_rate"])
    rinner = sum(len(s.boundaries) - 1 for s in rnd)
    assert abs(rinner / pooled.size - 0.03) < 0.01
    # per-sample streams: order does not change a sample's split
    rev = split_samples(samples[::-1], "random", SplitParams(break_rate=0.03, seed=5))[::-1]
    assert [s.boundaries for s in rev] == [s.boundaries for s in rnd]
    other = split_samples(samples, "random", SplitParams(break_rate=0.03, seed=6))
    assert [s.boundaries for s in other] != [s.boundaries for s in rnd]


def test_split_samples_code_pool_uses_region_only() -> None:
    # code tokens are confident, prose tokens are not: the pool must ignore the prose
    probs = [0.01 if not (8 <= i < 18) else 0.5 + 0.04 * (i - 8) for i in range(len(CODE))]
    s = make_sample(CODE, probs, kind="code")
    [sp] = split_samples([s], "confidence", SplitParams(break_rate=0.1))
    assert sp.params["pooled_tokens"] == sp.region[1] - sp.region[0]
    assert sp.threshold >= 0.5


def test_step_texts_and_mark_breaks() -> None:
    s = make_sample(
        ["So", " x", " =", " 2", ".", " Then", " y", "."], [0.9, 0.9, 0.9, 0.9, 0.1, 0.2, 0.9, 0.9]
    )
    [sp] = split_samples([s], "confidence", SplitParams(tau=0.5))
    assert step_texts(s, sp) == ["So x = 2.", " Then", " y."]
    assert "".join(step_texts(s, sp)) == s.text
    assert mark_breaks(s, sp) == "So x = 2. |  Then |  y."
    assert mark_breaks(s, sp, marker="<ки>") == "So x = 2.<ки> Then<ки> y."
