"""Split statistics: counts, rates and break-token categories on crafted samples."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from adaptivestep.records import Sample, StepSplit
from adaptivestep.split import SplitParams, split_samples
from adaptivestep.split_stats import CATEGORIES, format_stats, split_stats, token_category


def make_sample(pieces: list[str], probs: list[float], *, pid: str = "p", idx: int = 0) -> Sample:
    ends = np.cumsum([len(p) for p in pieces]).tolist()
    return Sample(
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
    )


LOW, HIGH = 0.05, 0.95
# (piece, is a break) — one break token per category, plus conjunctions
CRAFTED = [
    ("We", 0),
    (" know", 0),
    (" x", 0),
    (" +", 1),  # operator
    (" 3", 1),  # number
    (" =", 0),
    (" 5", 0),
    (",", 1),  # punctuation
    (" so", 1),  # word + conjunction
    (" x", 0),
    (" =", 0),
    (" 2", 0),
    (".\n", 1),  # newline
    ("The", 0),
    (" sol", 1),
    ("ution", 0),  # mid-word
    (" is", 0),
    (" ", 1),  # whitespace
    ("$\\", 0),
    ("frac", 0),
    ("{", 0),
    ("1", 0),
    ("}{", 0),
    ("2", 0),
    ("}$", 0),
    (" and", 1),  # word + conjunction
    (" \\frac", 1),  # LaTeX command -> operator
    (" 2x", 1),  # other
    (" done", 0),
    (".", 1),  # last token: forced end, not categorised
]


def crafted() -> tuple[Sample, StepSplit]:
    s = make_sample([p for p, _ in CRAFTED], [LOW if b else HIGH for _, b in CRAFTED])
    [sp] = split_samples([s], "confidence", SplitParams(tau=0.5))
    return s, sp


def test_token_category_rules() -> None:
    assert token_category(" the", " ") == "word"
    assert token_category("ing", " ") == "word"  # a suffix that ends the word does not cut it
    assert token_category(" th", "e") == "mid-word"
    assert token_category("4", "5") == "number"  # digit-by-digit tokenizers
    assert token_category(" 3.5", " ") == "number"
    assert token_category("^{", "2") == "operator"
    assert token_category("\\sqrt", "{") == "operator"
    assert token_category("),", " ") == "punctuation"
    assert token_category(" \t", "x") == "whitespace"
    assert token_category("", "") == "other"


def test_stats_on_crafted_sample() -> None:
    s, sp = crafted()
    st = split_stats([s], [sp])
    n_inner = sum(b for _, b in CRAFTED[:-1])
    assert st["n_responses"] == 1 and st["n_tokens"] == len(CRAFTED)
    assert st["breaks"]["inner"] == n_inner and st["breaks"]["end"] == 1
    assert st["breaks"]["inner_rate"] == pytest.approx(n_inner / len(CRAFTED))
    assert st["breaks"]["total_rate"] == pytest.approx((n_inner + 1) / len(CRAFTED))
    assert st["n_steps"] == n_inner + 1 == st["steps_per_response"]["mean"]
    assert st["tokens_per_step"]["mean"] == pytest.approx(len(CRAFTED) / (n_inner + 1))
    counts = {c: v["count"] for c, v in st["categories"].items()}
    assert counts == {
        "word": 2,
        "mid-word": 1,
        "number": 1,
        "operator": 2,
        "punctuation": 1,
        "newline": 1,
        "whitespace": 1,
        "other": 1,
    }
    assert sum(v["share"] for v in st["categories"].values()) == pytest.approx(1.0)
    assert st["conjunction"] == {"count": 2, "share": pytest.approx(2 / n_inner)}
    assert {t: k for t, k in st["top_tokens"]} == {p: 1 for p, b in CRAFTED[:-1] if b}
    json.dumps(st)  # serialisable for a CLI --json


def test_stats_several_responses_and_median() -> None:
    s1, sp1 = crafted()
    s2 = make_sample(["A", " b", " c", " d"], [HIGH, LOW, HIGH, HIGH], pid="q", idx=3)
    [sp2] = split_samples([s2], "confidence", SplitParams(tau=0.5))
    st = split_stats([s2, s1], [sp1, sp2])
    assert st["n_responses"] == 2 and st["breaks"]["end"] == 2
    per = [len(sp1.boundaries), len(sp2.boundaries)]
    assert st["steps_per_response"] == {"mean": sum(per) / 2, "median": sum(per) / 2}
    assert st["categories"]["word"]["count"] == 3
    assert st["top_tokens"][0][1] == 1 and st["threshold"] == 0.5


def test_stats_region_rate_and_errors() -> None:
    s, sp = crafted()
    sp_region = StepSplit.from_dict({**sp.to_dict(), "boundaries": [len(CRAFTED)], "region": [0, 10]})
    st = split_stats([s], [sp_region])
    assert st["breaks"]["inner"] == 0 and st["breaks"]["region_tokens"] == 10
    assert all(v["share"] == 0.0 for v in st["categories"].values())
    with pytest.raises(ValueError, match="no matching sample"):
        split_stats([], [sp])
    with pytest.raises(ValueError, match="no splits"):
        split_stats([s], [])


def test_format_stats_lists_every_category() -> None:
    s, sp = crafted()
    out = format_stats(split_stats([s], [sp]))
    for cat in CATEGORIES:
        assert cat in out
    assert "conjunction" in out and "tau = 0.5" in out and "' so'" in out
