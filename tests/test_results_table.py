"""The main job's results table: accuracies with intervals, then the paired differences that decide the claim."""

from dataclasses import asdict

from adaptivestep.pipeline import results_table
from adaptivestep.prm.quality import bon_vs_majority
from adaptivestep.search.bon import Candidate


def _res(paired: dict, tvd_extra: dict) -> dict:
    acc = {"mean": 0.5, "lo": 0.2, "hi": 0.8, "n": 4}
    return {
        "pool_size": 2,
        "greedy": acc,
        "curves": {"majority": [{"n": 2, "mean": 0.25, "lo": 0.0, "hi": 0.5, "n_questions": 4}]},
        "tvd": {**acc, "greedy_same_questions": acc, **tvd_extra},
        "prm_minus_majority": paired,
    }


def test_paired_rows_show_the_difference_and_its_interval():
    # two questions; the PRM ranks the right answer first in both, majority is split 1-1 in both (a tie
    # counts at its expectation, 0.5), so every question differs by +0.5 and the interval is that point
    pools = [[Candidate(0, "1", [0.9], True), Candidate(1, "2", [0.1], False)],
             [Candidate(0, "3", [0.2], False), Candidate(1, "4", [0.8], True)]]
    d = asdict(bon_vs_majority(pools, "prm-min", 2))
    assert d["acc"] == 1.0 and d["majority"] == 0.5 and d["lo"] == d["diff"] == d["hi"] == 0.5
    t = results_table(_res({"prm-min": d}, {"minus_greedy": {"diff": -0.25, "lo": -0.5, "hi": 0.0},
                                            "intervened_share": 0.5, "differs_from_greedy_share": 0.25}))
    assert f"| prm-min - majority @ N=2 | +50.0 | [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}] | 2 |" in t
    assert "TVD - greedy (PRM consulted on 50% of questions, text changed on 25%) | -25.0" in t


def test_no_paired_rows_without_pools():
    nan = float("nan")
    empty = {"n": 2, "acc": nan, "majority": nan, "oracle": nan, "diff": nan, "lo": nan, "hi": nan, "questions": 0}
    t = results_table(_res({"prm-min": empty}, {}))
    assert "paired difference" not in t and "| majority @ N=2 | 25.0% |" in t


def test_smaller_n_rows_come_before_the_pool_size_row():
    # pools of 4, two right: at N = 2 (exact over the 6 pairs) one pair holds no right answer
    pools = [[Candidate(i, str(i % 2), [0.9 if i % 2 else 0.1], bool(i % 2)) for i in range(4)] for _ in range(3)]
    at4, at2 = (asdict(bon_vs_majority(pools, "prm-min", n)) for n in (4, 2))
    assert at2["n"] == 2 and at4["acc"] == 1.0 and abs(at2["acc"] - 5 / 6) < 1e-9
    res = {**_res({"prm-min": at4}, {}), "pool_size": 4, "prm_minus_majority_at": {"2": {"prm-min": at2}}}
    t = results_table(res)
    # at N = 4 the vote ties 2-2 between a right and a wrong answer: majority counts 0.5, so +50 points
    assert t.index("| prm-min - majority @ N=2 |") < t.index("| prm-min - majority @ N=4 | +50.0 |")


def test_response_auc_row_names_each_score():
    res = {**_res({}, {}), "response_auc": {"min": 0.61, "last": 0.7, "confidence": 0.745}}
    t = results_table(res)
    assert "| prm-min | prm-last | confidence |" in t and "| held-apart candidates | 0.610 | 0.700 | 0.745 |" in t


def test_within_question_auc_row_follows_the_pooled_one():
    res = {**_res({}, {}), "response_auc": {"min": 0.61, "confidence": 0.745},
           "response_auc_within": {"min": {"auc": 0.55, "questions": 7}, "confidence": {"auc": 0.6, "questions": 7}}}
    t = results_table(res)
    assert t.index("| held-apart candidates |") < t.index("| within one question (7 with right and wrong candidates) | 0.550 | 0.600 |")


def test_tvd_row_is_left_out_when_tvd_did_not_run():
    nan = float("nan")
    off = {"mean": nan, "lo": nan, "hi": nan, "n": 0}
    res = {**_res({}, {}), "tvd": {**off, "greedy_same_questions": off, "minus_greedy": {}}}
    t = results_table(res)
    assert "TVD" not in t and "| greedy | 50.0% |" in t
    assert "| TVD (greedy on same 4 q: 50.0%) | 50.0% |" in results_table(_res({}, {}))
