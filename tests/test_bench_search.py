"""BoN at the beam's token budget (``bench search``): the pool is extended, never altered."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from fakes import FakeBackend

from adaptivestep.backends.base import SamplingConfig
from adaptivestep.bench.search import _equal_budget
from adaptivestep.config import load_config
from adaptivestep.jsonl import read_records
from adaptivestep.records import Problem, Sample
from adaptivestep.sample import sample_problems
from adaptivestep.tasks import render_prompt


class LengthScorer:
    def __init__(self):
        self.calls = 0

    def score_batch(self, items):
        self.calls += len(items)
        return [[0.5] * len(steps) for _, steps in items]


def _pool(tmp_path, cfg, backend, problem):
    path = tmp_path / "candidates.jsonl"
    sample_problems(backend, [problem], path, n=2, seed=cfg.seed + 1, progress=False,
                    config=SamplingConfig(temperature=1.0, max_tokens=cfg.eval.max_tokens),
                    render=lambda q: render_prompt(q, backend))
    return list(read_records(path, Sample))


def test_equal_budget_extends_the_pool_with_its_own_seed(tmp_path):
    cfg = load_config(None, {"eval.max_tokens": 12})
    b, prob = FakeBackend(), Problem(id="q1", question="1+1", kind="math", answer="2")
    pool = _pool(tmp_path, cfg, b, prob)
    pool_tokens = sum(len(s.token_ids) for s in pool)
    scores = {s.key: [0.9] for s in pool}
    prm = LengthScorer()
    budget = 3 * pool_tokens
    extra = tmp_path / "budget_pool.jsonl"
    chosen, used = _equal_budget(cfg, b, prm, prob, 0.5, pool, scores, budget, extra)
    assert used >= budget and used == sum(len(s.token_ids) for s, _ in chosen)
    idx = [s.sample_index for s, _ in chosen]
    assert idx == sorted(set(idx)) and idx[:2] == [0, 1]  # index order (an empty response is never written)
    assert [(s.token_ids, sc) for s, sc in chosen[:2]] == [(s.token_ids, [0.9]) for s in pool]
    assert prm.calls == len(chosen) - 2 and all(sc is not None for _, sc in chosen)
    # more samples of the same seed are the same samples: index 2.. of a larger pool drawn at once
    big = tmp_path / "big.jsonl"
    sample_problems(b, [prob], big, n=idx[-1] + 1, seed=cfg.seed + 1, progress=False,
                    config=SamplingConfig(temperature=1.0, max_tokens=12), render=lambda q: render_prompt(q, b))
    drawn_at_once = {s.sample_index: s.token_ids for s in read_records(big, Sample)}
    assert {s.sample_index: s.token_ids for s, _ in chosen} == drawn_at_once
    lines = extra.read_text()
    again, used2 = _equal_budget(cfg, b, LengthScorer(), prob, 0.5, pool, scores, budget, extra)
    assert extra.read_text() == lines and used2 == used  # resumed: nothing drawn twice


def test_equal_budget_within_the_pool_draws_nothing(tmp_path):
    cfg = load_config(None, {"eval.max_tokens": 12})
    b, prob = FakeBackend(), Problem(id="q1", question="1+1", kind="math", answer="2")
    pool = _pool(tmp_path, cfg, b, prob)
    prm = LengthScorer()
    chosen, used = _equal_budget(cfg, b, prm, prob, 0.5, pool, {}, 1, tmp_path / "x.jsonl")
    assert [s.sample_index for s, _ in chosen] == [0] and used == len(pool[0].token_ids)
    assert prm.calls == 1 and not (tmp_path / "x.jsonl").exists()
