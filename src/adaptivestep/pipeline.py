"""The main job: sample -> split -> label -> train PRM -> compare greedy, majority, PRM Best-of-N and TVD.

Reads top to bottom: :func:`run` calls one function per stage. Every stage writes into ``run_dir`` and is
skipped or resumed when its output is already there, so an interrupted job is finished by running it again.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .backends.base import Backend, SamplingConfig
from .config import RunConfig
from .jsonl import JsonlWriter, read_records
from .records import LabeledRecord, Problem, Sample, StepScores, StepSplit


def _say(msg: str) -> None:
    print(f"[adaptivestep] {msg}", flush=True)


def _write_atomic(path: Path, records: list[Any]) -> None:
    """Write a derived file whole (split, scores): build it aside, then rename over (never half-written)."""
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        tmp.unlink()
    with JsonlWriter(tmp, fsync=False) as w:
        w.write_all(records)
    os.replace(tmp, path)


def _open_policy(cfg: RunConfig) -> Backend:
    from .backends import load_backend

    opts: dict[str, Any] = {}
    from .models import resolve_model

    path = resolve_model(cfg.policy.model)
    if not path.is_dir():
        opts["n_ctx"] = cfg.policy.n_ctx
        if cfg.policy.threads:
            opts["n_threads"] = cfg.policy.threads
    return load_backend(cfg.policy.backend, str(path), ray=cfg.policy.ray, ray_actors=cfg.policy.ray_actors, **opts)


def _problems(cfg: RunConfig, split: str, offset: int, limit: int | None) -> list[Problem]:
    from .tasks import load_tasks

    return load_tasks(cfg.data.task, split=split, data_dir=cfg.data.data_dir, limit=limit, offset=offset)


def _task_kind(problems: list[Problem]) -> str:
    """The problems' one task kind (``math`` / ``code``): it picks the checker and the TVD threshold."""
    kinds = {p.kind for p in problems}
    if len(kinds) > 1:
        raise ValueError(f"the pipeline runs one task kind at a time, got {sorted(kinds)}")
    return kinds.pop() if kinds else "math"


def _sample(backend: Backend, problems: list[Problem], out: Path, *, n: int, temperature: float,
            max_tokens: int, seed: int, batch: int) -> dict[str, Any]:
    from .sample import record_problems, sample_problems
    from .tasks import render_prompt

    t0 = time.perf_counter()
    record_problems(problems, out)  # so the verbs (label, score, bon, ...) work on a run directory too
    s = sample_problems(backend, problems, out, n=n, seed=seed, batch_sequences=batch,
                        config=SamplingConfig(temperature=temperature, max_tokens=max_tokens),
                        render=lambda p: render_prompt(p, backend))
    return {"tokens": s.tokens, "wall_s": time.perf_counter() - t0, "written": s.written}


def _split(samples: list[Sample], out: Path, method: str, break_rate: float, tau: float | None) -> list[StepSplit]:
    from .split import SplitParams, split_samples

    splits = split_samples(samples, method, SplitParams(break_rate=break_rate, tau=tau))
    _write_atomic(out, splits)
    return splits


def stage_train_data(cfg: RunConfig, backend: Backend, rd: Path) -> tuple[float | None, dict[str, Any]]:
    """Sample training questions, split them, label every step. Returns (tau, cost figures)."""
    from .checkers import get_checker
    from .label import LabelConfig, label_files

    problems = _problems(cfg, cfg.data.train_split, cfg.data.train_offset, cfg.data.train_limit)
    d = rd / "train"
    _say(f"1/5 sampling {cfg.sample.n} responses for each of {len(problems)} training questions")
    figs = {"sample": _sample(backend, problems, d / "samples.jsonl", n=cfg.sample.n, temperature=cfg.sample.temperature,
                              max_tokens=cfg.sample.max_tokens, seed=cfg.seed, batch=cfg.sample.batch)}
    ids = {p.id for p in problems}  # a file from an earlier, larger run may hold more questions
    samples = [s for s in read_records(d / "samples.jsonl", Sample, tolerate_torn_tail=True) if s.problem_id in ids]
    splits = _split(samples, d / "split.jsonl", cfg.split.method, cfg.split.break_rate, None)
    tau = splits[0].threshold if splits else None
    n_steps = sum(len(s.boundaries) for s in splits)
    _say(f"2/5 split {len(splits)} responses by {cfg.split.method}: {n_steps / max(1, len(splits)):.2f} steps each"
         + (f", tau = {tau:.4f}" if tau is not None else ""))
    lc = cfg.label
    lcfg = LabelConfig(rollouts=lc.rollouts, max_tokens=lc.max_tokens, label_type=lc.label_type, seed=cfg.seed,
                       early_stop=lc.early_stop, wave=lc.wave, first_error_search=lc.first_error_search,
                       concurrent_samples=lc.concurrent_samples)
    checker = get_checker(_task_kind(problems))
    _say(f"3/5 labelling every step with {lc.rollouts} rollouts (savers: {lcfg.savers})")
    t0 = time.perf_counter()
    summary = label_files(backend, lambda p, t: checker.check(p, t).correct, {p.id: p for p in problems},
                          d / "samples.jsonl", d / "split.jsonl", d / "labels.jsonl", lcfg)
    figs["label"] = {**summary.cost, "wall_s": time.perf_counter() - t0, "failures": len(summary.failures)}
    return tau, figs


def stage_train_prm(cfg: RunConfig, rd: Path) -> dict[str, Any]:
    from .prm.train import METRICS_FILE, TrainConfig, train

    out = rd / "prm"
    if (out / METRICS_FILE).exists():
        _say("4/5 PRM already trained: reusing it")
        return dict(json.loads((out / METRICS_FILE).read_text()))
    labels = rd / "train" / "labels.jsonl"
    steps = [x for r in read_records(labels, LabeledRecord) for x in r.labels]
    _say(f"4/5 training the PRM ({cfg.prm.mode} on {cfg.prm.backbone}) on {len(steps)} labelled steps "
         f"({sum(steps):.0f} positive)")
    tc = TrainConfig(mode=cfg.prm.mode, epochs=cfg.prm.epochs, lr=cfg.prm.lr, max_length=cfg.prm.max_length,
                     eval_fraction=cfg.prm.eval_fraction, seed=cfg.seed, label_type=cfg.label.label_type,
                     output_dir=str(out))
    return train(tc, labels, cfg.prm.backbone)


def stage_eval(cfg: RunConfig, backend: Backend, rd: Path, tau: float | None) -> dict[str, Any]:
    """Candidates, greedy and TVD on held-apart questions; every rule's accuracy with a 95% interval."""
    from .checkers import get_checker, vote_key
    from .prm.model import PRM
    from .search.bon import Candidate
    from .search.estimate import bootstrap_ci, subsample_curve
    from .search.tvd import TVDConfig, threshold_for, tvd_decode
    from .tasks import render_prompt

    problems = _problems(cfg, cfg.data.eval_split, cfg.data.eval_offset, cfg.data.eval_limit)
    by_id = {p.id: p for p in problems}
    d = rd / "eval"
    ev = cfg.eval
    kind = _task_kind(problems)
    checker = get_checker(kind)
    _say(f"5/5 evaluating on {len(problems)} held-apart questions: greedy, {ev.n} candidates each, TVD")
    figs: dict[str, Any] = {}
    figs["greedy_gen"] = _sample(backend, problems, d / "greedy.jsonl", n=1, temperature=0.0,
                                 max_tokens=ev.max_tokens, seed=cfg.seed, batch=cfg.sample.batch)
    figs["candidates_gen"] = _sample(backend, problems, d / "candidates.jsonl", n=ev.n, temperature=1.0,
                                     max_tokens=ev.max_tokens, seed=cfg.seed + 1, batch=cfg.sample.batch)
    cands = [s for s in read_records(d / "candidates.jsonl", Sample, tolerate_torn_tail=True) if s.problem_id in by_id]
    greedy = {s.problem_id: s for s in read_records(d / "greedy.jsonl", Sample, tolerate_torn_tail=True)
              if s.problem_id in by_id}
    splits = _split(cands, d / "split.jsonl", cfg.split.method, cfg.split.break_rate, tau)
    prm = PRM.load(rd / "prm")
    t0 = time.perf_counter()
    items = []
    from .split import step_texts

    for s, sp in zip(cands, splits):
        items.append((by_id[s.problem_id].question, step_texts(s, sp)))
    scores = prm.score_batch(items)
    figs["prm_scoring"] = {"responses": len(items), "wall_s": time.perf_counter() - t0}
    _write_atomic(d / "scores.jsonl", [StepScores(s.problem_id, s.sample_index, sc, str(rd / "prm"), sp.method)
                                       for s, sp, sc in zip(cands, splits, scores)])
    pools: dict[str, list[Candidate]] = {p.id: [] for p in problems}
    for s, sc in zip(cands, scores):
        ok = checker.check(by_id[s.problem_id], s.text).correct
        pools[s.problem_id].append(Candidate(s.sample_index, vote_key(kind, s.text), sc, ok))
    pool_list = [v for v in pools.values() if len(v) == ev.n]
    curves = {rule: subsample_curve(pool_list, rule, resamples=ev.resamples, seed=cfg.seed) for rule in ev.rules}

    greedy_ok = [float(checker.check(p, greedy[p.id].text).correct) if p.id in greedy else 0.0 for p in problems]
    tvd_probs = problems[: ev.tvd_limit] if ev.tvd_limit else problems
    tvd_path = d / "tvd.jsonl"
    done = {}
    if tvd_path.exists():
        from .jsonl import iter_json

        done = {o["problem_id"]: o for _, o in iter_json(tvd_path, tolerate_torn_tail=True)}
    t0 = time.perf_counter()
    tcfg = TVDConfig(threshold=threshold_for(kind, ev.tvd_threshold),
                     k=ev.tvd_k, max_tokens=ev.max_tokens)
    from tqdm import tqdm

    with JsonlWriter(tvd_path) as w:
        for p in tqdm(tvd_probs, desc="tvd", unit="question", dynamic_ncols=True):
            if p.id in done:
                continue
            ids = backend.tokenize(render_prompt(p, backend))
            r = tvd_decode(backend, prm, p.question, ids, tcfg)
            rec = {"problem_id": p.id, "text": r.text, "tokens": len(r.token_ids), "finish_reason": r.finish_reason,
                   "interventions": r.n_interventions, "prm_items": r.n_prm_items,
                   "correct": bool(checker.check(p, r.text).correct)}
            w.write(rec)
            done[p.id] = rec
    figs["tvd_run_wall_s"] = time.perf_counter() - t0
    tvd_ok = [float(done[p.id]["correct"]) for p in tvd_probs if p.id in done]
    greedy_on_tvd = [greedy_ok[i] for i, p in enumerate(problems) if p in tvd_probs]
    return {
        "n_questions": len(problems),
        "pool_size": ev.n,
        "greedy": _acc(greedy_ok, bootstrap_ci),
        "tvd": {**_acc(tvd_ok, bootstrap_ci), "greedy_same_questions": _acc(greedy_on_tvd, bootstrap_ci),
                "interventions_per_question": sum(done[p.id]["interventions"] for p in tvd_probs if p.id in done)
                / max(1, len(tvd_ok)),
                "tokens": sum(done[p.id]["tokens"] for p in tvd_probs if p.id in done)},
        "curves": {rule: [asdict(pt) for pt in pts] for rule, pts in curves.items()},
        "figures": figs,
    }


def _acc(values: list[float], ci: Any) -> dict[str, Any]:
    if not values:
        return {"mean": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": 0}
    lo, hi = ci(values)
    return {"mean": sum(values) / len(values), "lo": lo, "hi": hi, "n": len(values)}


def results_table(res: dict[str, Any]) -> str:
    """Markdown table: one row per method at the full pool size, with 95% intervals."""
    n = res["pool_size"]
    rows = [("greedy", res["greedy"])]
    for rule, pts in res["curves"].items():
        last = [pt for pt in pts if pt["n"] == n]
        if last:
            rows.append((f"{rule} @ N={n}", {"mean": last[0]["mean"], "lo": last[0]["lo"], "hi": last[0]["hi"],
                                               "n": last[0]["n_questions"]}))
    t = res["tvd"]
    rows.append((f"TVD (greedy on same {t['n']} q: {100 * t['greedy_same_questions']['mean']:.1f}%)", t))
    out = ["| method | accuracy | 95% CI | questions |", "|---|---|---|---|"]
    for name, r in rows:
        out.append(f"| {name} | {100 * r['mean']:.1f}% | [{100 * r['lo']:.1f}, {100 * r['hi']:.1f}] | {r['n']} |")
    return "\n".join(out)


def plot_curves(res: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for rule, pts in res["curves"].items():
        ns = [p["n"] for p in pts]
        ax.plot(ns, [100 * p["mean"] for p in pts], marker="o", label=rule)
        ax.fill_between(ns, [100 * p["lo"] for p in pts], [100 * p["hi"] for p in pts], alpha=0.1)
    ax.axhline(100 * res["greedy"]["mean"], color="gray", linestyle="--", label="greedy")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("N (candidates)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Best-of-N accuracy vs N")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def run(cfg: RunConfig) -> dict[str, Any]:
    """Run (or resume) the whole pipeline; returns the results and writes results.json/.md and a plot."""
    rd = Path(cfg.run_dir)
    rd.mkdir(parents=True, exist_ok=True)
    (rd / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    t0 = time.perf_counter()
    backend = _open_policy(cfg)
    try:
        tau, train_figs = stage_train_data(cfg, backend, rd)
        prm_metrics = stage_train_prm(cfg, rd)
        res = stage_eval(cfg, backend, rd, tau)
    finally:
        backend.close()
    res["train"] = train_figs
    res["tau"] = tau
    res["prm"] = {k: v for k, v in prm_metrics.items() if not isinstance(v, (list, dict))}
    res["total_wall_s"] = time.perf_counter() - t0
    (rd / "results.json").write_text(json.dumps(res, indent=2, default=float) + "\n")
    table = results_table(res)
    (rd / "results.md").write_text(table + "\n")
    plotted = plot_curves(res, rd / "accuracy_vs_n.png")
    print()
    print(table)
    auc = res["prm"].get("eval_auc")  # None / NaN (null once saved) when held-out steps have one label only
    auc_s = f"{auc:.3f}" if auc is not None and auc == auc else "n/a (the held-out steps carry one label only)"
    tau_s = f"{tau:.4f}" if tau is not None else "n/a"
    print(f"\nPRM held-out step AUC {auc_s}; tau = {tau_s}; total {res['total_wall_s'] / 60:.1f} min")
    print(f"results: {rd / 'results.json'}, {rd / 'results.md'}" + (f", plot {rd / 'accuracy_vs_n.png'}" if plotted else ""))
    return res
