"""The main job: sample -> split -> label -> train PRM -> compare greedy, majority, PRM Best-of-N and TVD.

Reads top to bottom: :func:`run` calls one function per stage. Every stage writes into ``run_dir`` and is
skipped or resumed when its output is already there, so an interrupted job is finished by running it again.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from .backends.base import Backend
from .config import RunConfig, SplitStage
from .jsonl import read_records, write_atomic
from .operations import (
    bon_curves,
    candidate_pools,
    full_pools,
    score_steps,
    step_items,
    tvd_config_for,
    tvd_problems,
)
from .policy import open_policy
from .records import LabeledRecord, Problem, Sample, StepScores, StepSplit
from .sample import SampleConfig, sample_set
from .tasks import load_problem_set


def _say(msg: str) -> None:
    print(f"[adaptivestep] {msg}", flush=True)


def _task_kind(problems: list[Problem]) -> str:
    """The problems' one task kind (``math`` / ``code``): it picks the checker and the TVD threshold."""
    kinds = {p.kind for p in problems}
    if len(kinds) > 1:
        raise ValueError(f"the pipeline runs one task kind at a time, got {sorted(kinds)}")
    return kinds.pop() if kinds else "math"


def _sample(backend: Backend, problems: list[Problem], out: Path, cfg: SampleConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    s = sample_set(backend, problems, out, cfg)  # problems.jsonl beside it: the verbs work on a run folder too
    return {"tokens": s.tokens, "wall_s": time.perf_counter() - t0, "written": s.written}


def _split(samples: list[Sample], out: Path, cfg: SplitStage, tau: float | None) -> list[StepSplit]:
    """Split and save; ``tau`` (the training responses' threshold) makes the eval split use the same one."""
    from .split import split_samples

    splits = split_samples(samples, cfg.method, cfg.params(tau=tau) if tau is not None else cfg.params())
    write_atomic(out, splits)
    return splits


def _shipped_tau(cfg: RunConfig) -> float | None:
    """The shipped corpus' tau when the PRM trains on that corpus, the split is AdaptiveStep's with no fixed
    tau, and the policy is the one the corpus was sampled from: one step granularity for all training data
    and for the responses the PRM scores."""
    from .prm.shipped import shipped_tau

    if cfg.split.method != "confidence" or cfg.split.tau is not None or cfg.policy.model != "default":
        return None
    return shipped_tau(cfg.prm.corpus, cfg.data.task, cfg.split.break_rate)


def stage_train_data(cfg: RunConfig, backend: Backend, rd: Path) -> tuple[float | None, dict[str, Any]]:
    """Sample training questions, split them, label every step. Returns (tau, cost figures)."""
    from .checkers import get_checker
    from .label import label_files

    problems = load_problem_set(cfg.data.problem_set("train"))
    d = rd / "train"
    _say(f"1/5 sampling {cfg.sample.n} responses for each of {len(problems)} training questions")
    figs = {"sample": _sample(backend, problems, d / "samples.jsonl", cfg.sample)}
    ids = {p.id for p in problems}  # a file from an earlier, larger run may hold more questions
    samples = [s for s in read_records(d / "samples.jsonl", Sample, tolerate_torn_tail=True) if s.problem_id in ids]
    shipped = _shipped_tau(cfg)
    splits = _split(samples, d / "split.jsonl", cfg.split, shipped)
    tau = splits[0].threshold if splits else shipped
    n_steps = sum(len(s.boundaries) for s in splits)
    _say(f"2/5 split {len(splits)} responses by {cfg.split.method}: {n_steps / max(1, len(splits)):.2f} steps each"
         + (f", tau = {tau:.4f}" if tau is not None else "") + (" (the shipped corpus' tau)" if shipped else ""))
    checker = get_checker(_task_kind(problems))
    _say(f"3/5 labelling every step with {cfg.label.rollouts} rollouts (savers: {cfg.label.savers})")
    t0 = time.perf_counter()
    summary = label_files(backend, lambda p, t: checker.check(p, t).correct, {p.id: p for p in problems},
                          d / "samples.jsonl", d / "split.jsonl", d / "labels.jsonl", cfg.label)
    figs["label"] = {**summary.cost, "wall_s": time.perf_counter() - t0, "failures": len(summary.failures)}
    return tau, figs


def stage_train_prm(cfg: RunConfig, rd: Path) -> dict[str, Any]:
    """Train the PRM on the run's labels (reused when already trained)."""
    from .prm.train import METRICS_FILE, train

    out = Path(cfg.prm.output_dir)
    if (out / METRICS_FILE).exists():
        _say("4/5 PRM already trained: reusing it")
        return dict(json.loads((out / METRICS_FILE).read_text()))
    from .prm.shipped import resolve_corpus

    labels = rd / "train" / "labels.jsonl"
    corpus = resolve_corpus(cfg.prm.corpus, cfg.data.task)
    if corpus is not None and cfg.prm.corpus_questions is not None:
        corpus = first_questions_file(corpus, cfg.prm.corpus_questions, rd / "train" / "corpus-subset.jsonl")
    steps = [x for r in read_records(labels, LabeledRecord) for x in r.labels]
    extra = [x for r in read_records(corpus, LabeledRecord) for x in r.labels] if corpus else []
    _say(f"4/5 training the PRM ({cfg.prm.mode} on {cfg.prm.backbone}) on {len(steps)} labelled steps of this run "
         f"({sum(steps):.0f} positive)" + (f" + {len(extra)} of the corpus {corpus}" if corpus else ""))
    return train(cfg.prm.train_config(), labels, cfg.prm.backbone, extra_data=[corpus] if corpus else [])


def first_questions_file(corpus: Path, count: int, out: Path) -> Path:
    """The records of the first ``count`` questions of a labels file (in the order questions first appear:
    a corpus is written in question order), written to ``out``; returns ``out``."""
    keep: set[str] = set()
    records = []
    for r in read_records(corpus, LabeledRecord):
        if r.problem_id not in keep and len(keep) < count:
            keep.add(r.problem_id)
        if r.problem_id in keep:
            records.append(r)
    write_atomic(out, records)
    return out


SMALLER_PAIRED_N = (4,)  # paired PRM - majority rows at these N too, when the pool is larger


def paired_rules(rules: list[str]) -> list[str]:
    """The rules given a paired row against majority vote: every scored rule (not majority or oracle).

    >>> paired_rules(["majority", "prm-min", "weighted-majority", "confidence", "oracle"])
    ['prm-min', 'weighted-majority', 'confidence']
    """
    return [r for r in rules if r not in ("majority", "oracle")]


def stage_eval(cfg: RunConfig, backend: Backend, rd: Path, tau: float | None) -> dict[str, Any]:
    """Candidates, greedy and TVD on held-apart questions; every rule's accuracy with a 95% interval."""
    from .checkers import get_checker
    from .prm.model import PRM
    from .prm.quality import bon_vs_majority, paired_bootstrap, response_auc, within_question_auc
    from .search.aggregate import AGGREGATORS
    from .search.estimate import bootstrap_ci

    problems = load_problem_set(cfg.data.problem_set("eval"))
    by_id = {p.id: p for p in problems}
    d = rd / "eval"
    ev = cfg.eval
    kind = _task_kind(problems)
    checker = get_checker(kind)

    def judge(p: Problem, text: str) -> bool:
        return bool(checker.check(p, text).correct)

    _say(f"5/5 evaluating on {len(problems)} held-apart questions: greedy, {ev.n} candidates each, TVD")
    figs: dict[str, Any] = {}
    figs["greedy_gen"] = _sample(backend, problems, d / "greedy.jsonl",
                                 replace(cfg.sample, n=1, temperature=0.0, max_tokens=ev.max_tokens))
    figs["candidates_gen"] = _sample(backend, problems, d / "candidates.jsonl",
                                     replace(cfg.sample, n=ev.n, temperature=1.0, max_tokens=ev.max_tokens,
                                             seed=cfg.seed + 1))
    cands = [s for s in read_records(d / "candidates.jsonl", Sample, tolerate_torn_tail=True) if s.problem_id in by_id]
    greedy = {s.problem_id: s for s in read_records(d / "greedy.jsonl", Sample, tolerate_torn_tail=True)
              if s.problem_id in by_id}
    splits = _split(cands, d / "split.jsonl", cfg.split, tau)
    prm = PRM.load(rd / "prm")
    t0 = time.perf_counter()
    scores = score_steps(prm, step_items(cands, splits, by_id))
    figs["prm_scoring"] = {"responses": len(cands), "wall_s": time.perf_counter() - t0}
    write_atomic(d / "scores.jsonl", [StepScores(s.problem_id, s.sample_index, sc, str(rd / "prm"), sp.method)
                                       for s, sp, sc in zip(cands, splits, scores)])
    pools = candidate_pools(by_id, cands, {s.key: sc for s, sc in zip(cands, scores)}, judge=judge,
                            order=[p.id for p in problems])
    full = full_pools(pools, ev.n)
    curves = bon_curves(full, ev.rules, resamples=ev.resamples, seed=cfg.seed)
    def paired_at(n: int) -> dict[str, Any]:
        return {rule: asdict(bon_vs_majority(full, rule, n, seed=cfg.seed)) for rule in paired_rules(ev.rules)}

    paired = paired_at(ev.n)
    smaller = {str(n): paired_at(n) for n in SMALLER_PAIRED_N if n < ev.n}  # does the gap grow with N?
    every = [c for cs in pools.values() for c in cs if c.step_scores is not None]
    ranked = {how: response_auc([c.step_scores for c in every], [bool(c.correct) for c in every], how)
              for how in AGGREGATORS}
    known = [c for c in every if c.confidence is not None]
    ranked["confidence"] = response_auc([[c.confidence] for c in known], [bool(c.correct) for c in known], "min")
    qid = {id(c): q for q, cs in pools.items() for c in cs}
    within = {how: within_question_auc([qid[id(c)] for c in every], [c.step_scores for c in every],
                                       [bool(c.correct) for c in every], how) for how in AGGREGATORS}
    within["confidence"] = within_question_auc([qid[id(c)] for c in known], [[c.confidence] for c in known],
                                               [bool(c.correct) for c in known], "min")

    greedy_ok = [float(judge(p, greedy[p.id].text)) if p.id in greedy else 0.0 for p in problems]
    tvd_probs = problems if ev.tvd_limit is None else problems[: ev.tvd_limit]  # 0 = TVD off
    t0 = time.perf_counter()
    tvd = tvd_problems(backend, prm, tvd_probs, d / "tvd.jsonl", judge=judge, prm=str(rd / "prm"), progress=True,
                       config=lambda k: tvd_config_for(k, ev.tvd_threshold, k=ev.tvd_k, max_tokens=ev.max_tokens))
    figs["tvd_run_wall_s"] = time.perf_counter() - t0
    tvd_ok = [float(r.correct) for r in tvd]
    greedy_on_tvd = [greedy_ok[i] for i, p in enumerate(problems) if p in tvd_probs]
    tvd_diff = dict(zip(("diff", "lo", "hi"), paired_bootstrap(tvd_ok, greedy_on_tvd, seed=cfg.seed))) if tvd_ok else {}
    return {
        "n_questions": len(problems),
        "pool_size": ev.n,
        "greedy": _acc(greedy_ok, bootstrap_ci),
        "tvd": {**_acc(tvd_ok, bootstrap_ci), "greedy_same_questions": _acc(greedy_on_tvd, bootstrap_ci),
                "minus_greedy": tvd_diff,
                "interventions_per_question": sum(r.interventions for r in tvd) / max(1, len(tvd_ok)),
                "intervened_share": sum(r.interventions > 0 for r in tvd) / max(1, len(tvd_ok)),
                "differs_from_greedy_share": sum(r.problem_id in greedy and r.text != greedy[r.problem_id].text
                                                 for r in tvd) / max(1, len(tvd_ok)),
                "tokens": sum(r.tokens for r in tvd)},
        "curves": {rule: [asdict(pt) for pt in pts] for rule, pts in curves.items()},
        "prm_minus_majority": paired,
        "prm_minus_majority_at": smaller,
        "response_auc": ranked,  # how well each score ranks all candidates by final correctness
        # ... and one question's candidates among themselves (what Best-of-N needs): AUC, mixed questions
        "response_auc_within": {k: {"auc": a, "questions": q} for k, (a, q) in within.items()},
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
    if t["n"]:  # eval.tvd_limit 0 leaves TVD out
        rows.append((f"TVD (greedy on same {t['n']} q: {100 * t['greedy_same_questions']['mean']:.1f}%)", t))
    out = ["| method | accuracy | 95% CI | questions |", "|---|---|---|---|"]
    for name, r in rows:
        out.append(f"| {name} | {100 * r['mean']:.1f}% | [{100 * r['lo']:.1f}, {100 * r['hi']:.1f}] | {r['n']} |")
    by_n = [*res.get("prm_minus_majority_at", {}).values(), res.get("prm_minus_majority", {})]
    diffs = [(f"{rule} - majority @ N={d['n']}", d) for paired in by_n for rule, d in paired.items()
             if d["questions"]]
    if t.get("minus_greedy"):
        diffs.append((f"TVD - greedy (PRM consulted on {100 * t['intervened_share']:.0f}% of questions, text "
                      f"changed on {100 * t['differs_from_greedy_share']:.0f}%)",
                      {**t["minus_greedy"], "questions": t["n"]}))
    if diffs:
        out += ["", "| paired difference (same questions) | points | 95% CI (paired bootstrap) | questions |",
                "|---|---|---|---|"]
        for name, d in diffs:
            out.append(f"| {name} | {100 * d['diff']:+.1f} | [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}] "
                       f"| {d['questions']} |")
    auc = res.get("response_auc") or {}
    if auc:
        out += ["", "| response AUC (every candidate's score vs its correctness) | "
                + " | ".join(f"prm-{k}" if k != "confidence" else k for k in auc) + " |",
                "|---|" + "---|" * len(auc),
                "| held-apart candidates | " + " | ".join(f"{v:.3f}" for v in auc.values()) + " |"]
        within = res.get("response_auc_within") or {}
        if within and any(w["questions"] for w in within.values()):
            q = max(w["questions"] for w in within.values())
            out.append(f"| within one question ({q} with right and wrong candidates) | "
                       + " | ".join(f"{within[k]['auc']:.3f}" if k in within else "-" for k in auc) + " |")
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
    backend = open_policy(cfg.policy)
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
