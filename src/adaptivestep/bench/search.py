"""``adaptivestep bench search``: the paper's kind of tables on our machines.

Runs (or resumes) the whole pipeline on a task - accuracy vs N for every selection rule (plot PNG, JSON,
markdown), TVD vs greedy - and then compares, on the first ``--compare-questions`` evaluation questions:

- step-level beam search over AdaptiveStep steps vs Best-of-N **at equal generated-token budget**: for each
  question, BoN takes candidates from the pool in index order until their tokens reach the beam's tokens,
  then picks by PRM (prm-min);
- Best-of-N with early rejection vs plain Best-of-N over the same number of candidates: tokens and accuracy.

The labelling cost table is ``adaptivestep bench label-cost``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _equal_budget(cfg: Any, backend: Any, prm: Any, problem: Any, tau: float | None, pool: list[Any],
                  scores: dict[tuple[str, int], list[float]], budget: int, extra_path: Path
                  ) -> tuple[list[tuple[Any, list[float] | None]], int]:
    """Best-of-N candidates of ``problem`` (with their step scores) in index order until their generated
    tokens reach ``budget``. When the evaluation pool is too small, more candidates are drawn with the pool's
    own seed and settings (so indices 0..n-1 are the pool's) into ``extra_path`` and scored by the PRM."""
    from ..backends.base import SamplingConfig
    from ..jsonl import JsonlWriter, read_records
    from ..records import Sample
    from ..sample import sample_problems
    from ..split import split_samples, step_texts
    from ..tasks import render_prompt

    def take(cands: list[Any]) -> tuple[list[Any], int]:
        used, out = 0, []
        for s in sorted(cands, key=lambda s: s.sample_index):
            if used >= budget and out:
                break
            out.append(s)
            used += len(s.token_ids)
        return out, used

    chosen, used = take(pool)
    if used < budget and pool:
        def mine() -> dict[int, Any]:
            if not extra_path.exists():
                return {}
            return {s.sample_index: s for s in read_records(extra_path, Sample, tolerate_torn_tail=True)
                    if s.problem_id == problem.id}

        have = mine()  # a resumed run may have drawn extras already
        missing = [s for s in pool if s.sample_index not in have]
        with JsonlWriter(extra_path) as w:  # the pool's own samples first: same indices, same tokens
            w.write_all(missing)
        have.update({s.sample_index: s for s in missing})
        chosen, used = take(list(have.values()))
        n = 1 + max(have)
        for _ in range(8):  # bounded: an empty response is never written, so it could be asked for again
            if used >= budget:
                break
            mean_len = max(1.0, used / max(1, len(chosen)))
            n += max(1, -(-int(budget - used) // int(mean_len)))
            sample_problems(backend, [problem], extra_path, n=n, seed=cfg.seed + 1,
                            config=SamplingConfig(temperature=1.0, max_tokens=cfg.eval.max_tokens),
                            render=lambda q: render_prompt(q, backend), batch_sequences=cfg.sample.batch,
                            progress=False)
            chosen, used = take(list(mine().values()))
    extra = [s for s in chosen if s.key not in scores]
    if extra:
        splits = split_samples(extra, cfg.split.method, cfg.split.params(tau=tau))
        got = prm.score_batch([(problem.question, step_texts(s, sp)) for s, sp in zip(extra, splits)])
        scores = {**scores, **{s.key: sc for s, sc in zip(extra, got)}}
    return [(s, scores.get(s.key)) for s in chosen], used


def compare_search(cfg: Any, questions: int) -> dict[str, Any]:
    from ..checkers import get_checker, vote_key
    from ..jsonl import JsonlWriter, iter_json, read_records
    from ..pipeline import _task_kind
    from ..policy import open_policy
    from ..prm.model import PRM
    from ..records import Sample, StepScores
    from ..search.beam import BeamConfig, beam_search
    from ..search.bon import Candidate, select
    from ..search.early_reject import EarlyRejectConfig, best_of_n_early_reject
    from ..tasks import load_problem_set, render_prompt

    rd = Path(cfg.run_dir)
    d = rd / "eval"
    tau = json.loads((rd / "results.json").read_text())["tau"]
    probs = load_problem_set(cfg.data.problem_set("eval"))[:questions]
    pool: dict[str, list[Sample]] = {}
    for s in read_records(d / "candidates.jsonl", Sample):
        pool.setdefault(s.problem_id, []).append(s)
    scores = {(s.problem_id, s.sample_index): s.scores for s in read_records(d / "scores.jsonl", StepScores)}
    checker = get_checker(_task_kind(probs))
    backend = open_policy(cfg.policy)
    prm = PRM.load(rd / "prm")
    out = d / "search_compare.jsonl"
    done = {o["problem_id"]: o for _, o in iter_json(out, tolerate_torn_tail=True)} if out.exists() else {}
    bcfg = BeamConfig(beam_width=2, expand=2, tau=tau, max_tokens=cfg.eval.max_tokens, seed=cfg.seed)
    ecfg = EarlyRejectConfig(n=cfg.eval.n, chunk=64, max_tokens=cfg.eval.max_tokens, tau=tau, seed=cfg.seed + 7)
    with JsonlWriter(out) as w:
        for p in probs:
            if p.id in done:
                continue
            ids = backend.tokenize(render_prompt(p, backend))
            t0 = time.perf_counter()
            beam = beam_search(backend, prm, p.question, ids, bcfg)
            t_beam = time.perf_counter() - t0
            budget_cands, used = _equal_budget(cfg, backend, prm, p, tau, pool.get(p.id, []), scores,
                                               beam.n_generated, d / "budget_pool.jsonl")
            sel = select([Candidate(s.sample_index, vote_key(p.kind, s.text), sc) for s, sc in budget_cands],
                         "prm-min")
            chosen = next(s for s, _ in budget_cands if s.sample_index == sel.chosen)
            t0 = time.perf_counter()
            er = best_of_n_early_reject(backend, prm, p.question, ids, ecfg)
            t_er = time.perf_counter() - t0
            er_text = next(c.text for c in er.candidates if c.index == er.chosen)
            rec = {
                "problem_id": p.id,
                "beam_correct": bool(checker.check(p, beam.text).correct), "beam_tokens": beam.n_generated,
                "beam_wall_s": t_beam,
                "bon_equal_budget_correct": bool(checker.check(p, chosen.text).correct),
                "bon_equal_budget_tokens": used, "bon_equal_budget_n": len(budget_cands),
                "early_reject_correct": bool(checker.check(p, er_text).correct),
                "early_reject_tokens": er.tokens_generated, "early_reject_plain_tokens": er.tokens_plain_estimate,
                "early_reject_wall_s": t_er,
            }
            w.write(rec)
            done[p.id] = rec
    backend.close()
    recs = [done[p.id] for p in probs if p.id in done]
    n = max(1, len(recs))

    def mean(k: str) -> float:
        return sum(float(r[k]) for r in recs) / n

    return {
        "questions": len(recs),
        "beam_accuracy": mean("beam_correct"), "beam_tokens": mean("beam_tokens"),
        "bon_equal_budget_accuracy": mean("bon_equal_budget_correct"),
        "bon_equal_budget_tokens": mean("bon_equal_budget_tokens"), "bon_equal_budget_n": mean("bon_equal_budget_n"),
        "early_reject_accuracy": mean("early_reject_correct"), "early_reject_tokens": mean("early_reject_tokens"),
        "early_reject_tokens_ratio": mean("early_reject_tokens") / max(1e-9, mean("early_reject_plain_tokens")),
    }


def main(argv: Sequence[str] | None = None) -> int:
    from ..config import QUICK, load_config
    from ..pipeline import run

    ap = argparse.ArgumentParser(prog="adaptivestep bench search", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the main job's --quick size")
    ap.add_argument("--config", default=None, help="YAML config of the pipeline (see config.yaml)")
    ap.add_argument("--task", default=None, help="override data.task (gsm8k, math500, humaneval, leetcode)")
    ap.add_argument("--data-dir", default=None, help="override data.data_dir (e.g. ../shared/data)")
    ap.add_argument("--run-dir", default=None, help="override run_dir (default runs/bench-search[-quick])")
    ap.add_argument("--compare-questions", type=int, default=None,
                    help="questions for beam search / early rejection (default 3 quick, 10 full)")
    a = ap.parse_args(argv)
    over: dict[str, Any] = dict(QUICK) if a.quick else {}
    over["run_dir"] = a.run_dir or ("runs/bench-search-quick" if a.quick else "runs/bench-search")
    if a.task:
        over["data.task"] = a.task
    if a.data_dir:
        over["data.data_dir"] = a.data_dir
    cfg = load_config(a.config, over)
    res = run(cfg)
    cmp = compare_search(cfg, a.compare_questions or (3 if a.quick else 10))
    print(f"\nbeam search ({cmp['questions']} q): accuracy {100 * cmp['beam_accuracy']:.1f}% with "
          f"{cmp['beam_tokens']:.0f} tokens/q; BoN at equal budget ({cmp['bon_equal_budget_n']:.1f} candidates): "
          f"{100 * cmp['bon_equal_budget_accuracy']:.1f}% with {cmp['bon_equal_budget_tokens']:.0f} tokens/q")
    print(f"early rejection: accuracy {100 * cmp['early_reject_accuracy']:.1f}%, tokens "
          f"{100 * cmp['early_reject_tokens_ratio']:.0f}% of plain BoN")
    n = res["pool_size"]
    flat = {
        "task": cfg.data.task, "questions": res["n_questions"], "pool_size": n,
        "greedy_accuracy": res["greedy"]["mean"], "tvd_accuracy": res["tvd"]["mean"],
        # None when greedy solved none of the TVD questions (no ratio to speak of)
        "tvd_vs_greedy_ratio": (res["tvd"]["mean"] / g if (g := res["tvd"]["greedy_same_questions"]["mean"]) > 0
                                else None),
        **{f"{rule}_at_{n}_accuracy": next((p["mean"] for p in pts if p["n"] == n), None)
           for rule, pts in res["curves"].items()},
        **cmp, "total_wall_s": res["total_wall_s"],
    }
    print(json.dumps(flat, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
