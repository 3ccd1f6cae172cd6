"""Command line: one verb per pipeline stage. ``adaptivestep VERB --help`` explains every option."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# libgomp threads (llama.cpp's and torch's) spin-wait for a long time by default, which stalls torch tenfold
# when both run in one process on a small CPU; OMP_WAIT_POLICY=PASSIVE fixes that but costs llama.cpp 25-40%
# of its decode speed (a sleep/wake per op). A short spin keeps both fast. Must be set before either loads.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

from . import __version__  # noqa: E402
from .records import Problem, problems_path_for  # noqa: E402

Handler = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """Bad option value; printed as one line naming the option."""


# ---------------------------------------------------------------- shared option groups
# Flags, defaults and help come from the config dataclasses (adaptivestep.options); an engine's new option is a
# new PolicyConfig field, a new engine a BACKENDS entry.
def _model_opts(p: argparse.ArgumentParser) -> None:
    from .options import add_fields
    from .policy import BACKEND_CHOICES, PolicyConfig

    g = p.add_argument_group("model")
    add_fields(g, PolicyConfig, choices={"backend": BACKEND_CHOICES}, skip=["ray"])
    g.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run the engine on a pool of Ray actors: ADDRESS of a running cluster (host:port or auto); "
                        "without ADDRESS, a Ray started in this process (pip install 'adaptivestep[ray]')")


def _policy(a: argparse.Namespace):  # noqa: ANN202
    from .options import build
    from .policy import PolicyConfig

    return build(PolicyConfig, a)


def _open_backend(a: argparse.Namespace):  # noqa: ANN202
    from .policy import open_policy

    return open_policy(_policy(a))


def _task_opts(p: argparse.ArgumentParser) -> None:
    from .options import add_fields
    from .records import TASK_KINDS
    from .tasks import ProblemSet

    add_fields(p.add_argument_group("task"), ProblemSet, choices={"kind": TASK_KINDS})


def _load_problems(a: argparse.Namespace) -> list[Problem]:
    from .options import build
    from .tasks import ProblemSet, load_problem_set

    return load_problem_set(build(ProblemSet, a))


# ---------------------------------------------------------------- verbs
def cmd_sample(a: argparse.Namespace) -> int:
    from .options import build
    from .sample import SampleConfig, sample_set

    cfg = build(SampleConfig, a)
    problems = _load_problems(a)
    backend = _open_backend(a)
    out = Path(a.out)
    s = sample_set(backend, problems, out, cfg, progress=not a.quiet)
    print(f"{s.written} samples written to {out} ({s.already_done} already there, {s.empty} empty responses "
          f"skipped), {s.tokens} tokens in {s.wall_s:.1f}s = {s.tokens_per_s:.1f} tok/s")
    return 0


def cmd_split(a: argparse.Namespace) -> int:
    from .jsonl import JsonlWriter, read_records
    from .options import build
    from .records import Sample
    from .split import SplitParams, split_samples

    params = build(SplitParams, a)
    samples = list(read_records(a.samples, Sample, tolerate_torn_tail=True))
    if not samples:
        raise UsageError(f"{a.samples}: no samples")
    splits = split_samples(samples, a.method, params)
    out = Path(a.out)
    if out.exists() and not a.append:
        raise UsageError(f"{out} exists; files are never rewritten: choose another --out or pass --append")
    with JsonlWriter(out) as w:
        w.write_all(splits)
    n_steps = sum(len(s.boundaries) for s in splits)
    tau = splits[0].threshold
    print(f"{len(splits)} responses split by {a.method} into {n_steps} steps "
          f"({n_steps / len(splits):.2f} per response)" + (f", tau = {tau:.4f}" if tau is not None else "")
          + f" -> {out}")
    if a.show:
        from .split import mark_breaks

        by_key = {s.key: s for s in samples}
        for sp in splits[: a.show]:
            print(f"\n--- {sp.problem_id}#{sp.sample_index} ({len(sp.boundaries)} steps) ---")
            print(mark_breaks(by_key[sp.key], sp))
    return 0


def cmd_stats(a: argparse.Namespace) -> int:
    from .jsonl import read_records
    from .records import Sample, StepSplit
    from .split_stats import format_stats, split_stats

    samples = {s.key: s for s in read_records(a.samples, Sample, tolerate_torn_tail=True)}
    result = {}
    for path in a.splits:
        splits = list(read_records(path, StepSplit, tolerate_torn_tail=True))
        missing = [sp.key for sp in splits if sp.key not in samples]
        if missing:
            raise UsageError(f"{path}: {len(missing)} split(s) have no sample in {a.samples}, e.g. {missing[0]}")
        st = split_stats([samples[sp.key] for sp in splits], splits)
        print(f"== {path} ==")
        print(format_stats(st))
        result[str(path)] = st
    if a.json:
        print(json.dumps(result, default=float))
    return 0


def cmd_label(a: argparse.Namespace) -> int:
    from .jsonl import read_records
    from .label import LabelConfig, judge_by_kind, label_files
    from .options import build

    cfg = build(LabelConfig, a)
    pfile = Path(a.problems) if a.problems else problems_path_for(Path(a.samples))
    problems = {p.id: p for p in read_records(pfile, Problem)}
    backend = _open_backend(a)
    s = label_files(backend, judge_by_kind(), problems, a.samples, a.splits, a.out, cfg, worklog_path=a.worklog,
                    progress=not a.quiet, limit=a.limit_samples)
    c = s.cost
    print(f"labelled {s.labelled} samples ({s.skipped_done} already done, {len(s.failures)} failed) -> {a.out}")
    if c:
        print(f"cost: {c.get('rollouts', 0):.0f} rollouts, {c.get('generated_tokens', 0):.0f} generated tokens, "
              f"{c.get('prefix_tokens_evaluated', 0):.0f} prefix tokens evaluated, {c.get('wall_s', 0):.1f}s")
    for f in s.failures[:10]:
        print(f"  failed: {f}", file=sys.stderr)
    return 0 if not s.failures or s.labelled else 1


def cmd_train(a: argparse.Namespace) -> int:
    from .options import build
    from .prm.train import TrainConfig, train

    if a.format == "math-shepherd":
        from .jsonl import JsonlWriter
        from .prm.interop import read_math_shepherd

        # under `accelerate launch` every process converts; each into its own file, so none reads a half-written one
        rank = int(os.environ.get("RANK", "0") or 0)
        converted = Path(a.out) / ("train_data.jsonl" if rank == 0 else f"train_data.rank{rank}.jsonl")
        if converted.exists():
            converted.unlink()
        with JsonlWriter(converted, fsync=False) as w:
            w.write_all(read_math_shepherd(a.data))
        data = converted
    else:
        data = Path(a.data)
    cfg = build(TrainConfig, a, output_dir=a.out)
    m = train(cfg, data, a.backbone)
    print(f"PRM saved to {a.out}: held-out step AUC {m.get('eval_auc', float('nan')):.3f}, "
          f"accuracy {m.get('eval_accuracy', float('nan')):.3f}, {m.get('labelled_steps_per_s', 0):.1f} steps/s")
    return 0


def _load_scorer(a: argparse.Namespace):  # noqa: ANN202
    if getattr(a, "prm_server", None):
        from .prm.server import PRMServerScorer

        return PRMServerScorer(a.prm_server, model_dir=a.prm)
    if not a.prm:
        raise UsageError("give --prm DIR (a PRM from 'train') or --prm-server URL (a vLLM pooling server)")
    from .scoring import open_scorer

    return open_scorer(a.prm, math_shepherd=getattr(a, "math_shepherd", False))


def _step_items(a: argparse.Namespace) -> tuple[list[tuple[str, int, str, list[str]]], dict[str, Problem]]:
    """(problem_id, sample_index, method, steps) from labelled records, or samples + splits."""
    from .jsonl import read_records
    from .records import LabeledRecord, Problem, Sample, StepSplit
    from .split import step_texts

    pfile = Path(a.problems) if getattr(a, "problems", None) else problems_path_for(Path(a.input))
    problems = {p.id: p for p in read_records(pfile, Problem)} if pfile.exists() else {}
    if a.splits is None:
        recs = list(read_records(a.input, LabeledRecord, tolerate_torn_tail=True))
        for r in recs:
            problems.setdefault(r.problem_id, Problem(id=r.problem_id, question=r.prompt, kind="math"))
        return [(r.problem_id, r.sample_index, r.method, r.completions) for r in recs], problems
    samples = {s.key: s for s in read_records(a.input, Sample, tolerate_torn_tail=True)}
    out = []
    for sp in read_records(a.splits, StepSplit, tolerate_torn_tail=True):
        if sp.key not in samples:
            raise UsageError(f"{a.splits}: split of {sp.problem_id}#{sp.sample_index} has no sample in {a.input}")
        out.append((sp.problem_id, sp.sample_index, sp.method, step_texts(samples[sp.key], sp)))
    missing = sorted({pid for pid, *_ in out if pid not in problems})
    if missing:
        raise UsageError(f"no question for {missing[0]} (and {len(missing) - 1} more): pass --problems")
    return out, problems


def cmd_score(a: argparse.Namespace) -> int:
    from .jsonl import JsonlWriter
    from .operations import score_steps
    from .records import StepScores

    items, problems = _step_items(a)
    out = Path(a.out)
    if out.exists():
        raise UsageError(f"{out} exists; files are never rewritten: choose another --out")
    if a.batch < 1:
        raise UsageError(f"--batch must be >= 1, got {a.batch}")
    questions_steps = [(problems[pid].question, steps) for pid, _, _, steps in items]
    if a.ray is None:
        scores = score_steps(_load_scorer(a), questions_steps, a.batch)
    else:  # the driver reads and writes; actors each holding the PRM score chunks of --batch responses
        if a.prm_server or not a.prm:
            raise UsageError("--ray scores with --prm DIR on a pool of Ray actors (a --prm-server scores elsewhere)")
        try:
            from .backends.ray_pool import RayPoolScorer
        except ImportError as e:
            raise ImportError(f"--ray needs Ray ({e}); run: pip install 'adaptivestep[ray]'") from e
        pool = RayPoolScorer(a.prm, math_shepherd=a.math_shepherd, address=a.ray, actors=a.ray_actors, chunk=a.batch)
        try:
            scores = score_steps(pool, questions_steps)
        finally:
            pool.close()
    with JsonlWriter(out, fsync=False) as w:
        w.write_all(StepScores(pid, idx, sc, str(a.prm_server or a.prm), method) for (pid, idx, method, _), sc in zip(items, scores))
    print(f"scored {len(items)} responses -> {out}")
    return 0


def cmd_prm_eval(a: argparse.Namespace) -> int:
    """ProcessBench-style evaluation: find each solution's first wrong step from its step scores."""
    from .jsonl import read_records
    from .prm.evaluate import evaluate_prm, format_report, items_from_records, read_processbench
    from .records import LabeledRecord

    if a.format == "processbench":
        items = read_processbench(a.input)
    else:  # our labelled records: the gold first error is the first step whose hard label is 0
        items = items_from_records(read_records(a.input, LabeledRecord), label_field="hard_labels")
    if not items:
        raise UsageError(f"{a.input}: no solutions to evaluate")
    m = evaluate_prm(_load_scorer(a), items, tune_fraction=a.tune_fraction, seed=a.seed, threshold=a.threshold)
    print(format_report(m))
    if a.out:
        Path(a.out).write_text(json.dumps(m, default=float, indent=1) + "\n")
    ev = m.get("eval", {})
    print(json.dumps({"threshold": m.get("threshold"), "n_eval": m.get("n_eval"),
                      **{k: ev.get(k) for k in ("error_acc", "correct_acc", "f1")}}, default=float))
    return 0


def cmd_bon(a: argparse.Namespace) -> int:
    from .jsonl import JsonlWriter, read_records
    from .operations import bon_choices, bon_curves, candidate_pools, full_pools
    from .records import Sample, StepScores
    from .search.estimate import format_curve

    pfile = Path(a.problems) if a.problems else problems_path_for(Path(a.samples))
    problems = {p.id: p for p in read_records(pfile, Problem)}
    if a.prm_server:
        scores = _server_scores(a, problems)
    elif a.scores:
        scores = {(s.problem_id, s.sample_index): s.scores for s in read_records(a.scores, StepScores)}
    else:
        raise UsageError("give a SCORES file (from 'score') or --prm-server URL with --splits")
    samples = list(read_records(a.samples, Sample, tolerate_torn_tail=True))
    missing = next((s for s in samples if s.problem_id not in problems), None)
    if missing is not None:
        raise UsageError(f"{a.samples}: problem {missing.problem_id} is not in {pfile}")
    pools = candidate_pools(problems, samples, scores)
    unscored = sum(s.key not in scores for s in samples)
    if unscored:
        print(f"note: {unscored} candidate(s) have no score; PRM rules skip them (they keep their index)")
    full = full_pools(pools)
    if len(full) < len(pools):
        print(f"note: {len(pools) - len(full)} question(s) have fewer than {len(full[0])} candidates; curves use the "
              f"{len(full)} complete ones")
    curves = bon_curves(full, a.rules, resamples=a.resamples, seed=a.seed)
    for rule, pts in curves.items():
        print(format_curve(pts, rule))
    if a.out:
        with JsonlWriter(a.out, fsync=False) as w:
            w.write_all(bon_choices(pools, a.rules))
    print(json.dumps({r: {str(p.n): p.mean for p in pts} for r, pts in curves.items()}))
    return 0


def _server_scores(a: argparse.Namespace, problems: dict[str, Problem]) -> dict[tuple[str, int], list[float]]:
    """bon --prm-server: score the samples' steps (from --splits) through the server."""
    from .jsonl import read_records
    from .records import Sample, StepSplit
    from .split import step_texts

    if not a.splits:
        raise UsageError("bon --prm-server needs --splits (the split JSONL of the samples) to know the steps")
    from .prm.server import PRMServerScorer

    scorer = PRMServerScorer(a.prm_server, model_dir=a.prm)
    samples = {s.key: s for s in read_records(a.samples, Sample, tolerate_torn_tail=True)}
    items = [(sp.key, step_texts(samples[sp.key], sp)) for sp in read_records(a.splits, StepSplit)
             if sp.key in samples and sp.problem_id in problems]
    out: dict[tuple[str, int], list[float]] = {}
    for i in range(0, len(items), 16):
        part = items[i: i + 16]
        for (key, _), sc in zip(part, scorer.score_batch([(problems[k[0]].question, st) for k, st in part])):
            out[key] = sc
    return out


def cmd_export_prm(a: argparse.Namespace) -> int:
    from .prm.export import export_prm

    out = export_prm(a.prm_dir, a.out, a.format)
    print(f"exported {a.prm_dir} -> {out} ({a.format}); serve it with: vllm serve {out} --runner pooling "
          f"--dtype float32; score with --prm-server http://HOST:PORT")
    return 0


def cmd_tvd(a: argparse.Namespace) -> int:
    from .label import judge_by_kind
    from .operations import tvd_config_for, tvd_problems
    from .records import TVDRecord

    problems = _load_problems(a)
    settings = {"k": a.k, "max_tokens": a.max_tokens, "aggregate": a.aggregate}
    for kind in {p.kind for p in problems}:  # bad settings fail before the models load
        tvd_config_for(kind, a.threshold, **settings)
    backend = _open_backend(a)
    scorer = _load_scorer(a)
    new: list[TVDRecord] = []

    def show(r: TVDRecord) -> None:
        new.append(r)
        print(f"{r.problem_id}: {'correct' if r.correct else 'wrong'} ({r.tokens} tokens, {r.interventions} "
              f"interventions)", flush=True)

    tvd_problems(backend, scorer, problems, a.out, lambda kind: tvd_config_for(kind, a.threshold, **settings),
                 judge=judge_by_kind(), prm=str(a.prm_server or a.prm), on_record=show)
    print(f"TVD: {sum(r.correct for r in new)}/{len(new)} correct this run -> {a.out}")
    return 0


def cmd_run(a: argparse.Namespace) -> int:
    from .config import QUICK, load_config
    from .pipeline import run

    overrides = dict(QUICK) if a.quick else {}
    if a.run_dir:
        overrides["run_dir"] = a.run_dir
    if a.ray is not None:
        overrides["policy.ray"] = a.ray
    if a.ray_actors is not None:
        overrides["policy.ray_actors"] = a.ray_actors
    cfg = load_config(a.config, overrides)
    run(cfg)
    return 0


def cmd_bench(a: argparse.Namespace) -> int:
    import importlib

    if a.name not in BENCHES:
        raise UsageError(f"bench: unknown benchmark {a.name!r}; choose from {', '.join(BENCHES)}")
    mod = importlib.import_module(BENCHES[a.name])
    return int(mod.main(a.rest + (["--quick"] if a.quick else [])) or 0)


BENCHES: dict[str, str] = {
    "throughput": "adaptivestep.bench.throughput",
    "label-cost": "adaptivestep.bench.label_cost",
    "prm": "adaptivestep.bench.prm",
    "search": "adaptivestep.bench.search",
    "sandbox": "adaptivestep.bench.sandbox",
    "corpus": "adaptivestep.bench.corpus",
    "prm-quality": "adaptivestep.bench.prm_quality",
    "ray": "adaptivestep.bench.ray_pool",
}


# ---------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from .label import LabelConfig
    from .operations import DEFAULT_RESAMPLES, DEFAULT_RULES
    from .options import add_fields
    from .prm.config import TrainConfig
    from .sample import SampleConfig
    from .search.aggregate import AGGREGATORS
    from .search.tvd import TVDConfig
    from .split import SplitParams

    p = argparse.ArgumentParser(
        prog="adaptivestep",
        description="Process Reward Models with AdaptiveStep: sample -> split -> label -> train -> score -> search.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"adaptivestep {__version__}")
    sub = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter

    s = sub.add_parser("sample", help="sample N responses per problem with per-token log-probs (resumable)",
                       formatter_class=fmt, description="Sample N responses per problem. Re-running with the same "
                       "--out finishes what is missing; nothing written is lost if the run is killed.")
    _task_opts(s)
    _model_opts(s)
    s.add_argument("--out", required=True, help="samples JSONL to append to (problems.jsonl is written beside it)")
    add_fields(s.add_argument_group("sampling"), SampleConfig)
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_sample)

    sp = sub.add_parser("split", help="divide samples into steps (AdaptiveStep confidence, or a baseline)",
                        formatter_class=fmt)
    sp.add_argument("samples", help="samples JSONL from 'sample'")
    sp.add_argument("--method", default="confidence", choices=["confidence", "newline", "fixed", "random"],
                    help="confidence = AdaptiveStep; newline / fixed / random = baselines")
    sp.add_argument("--out", required=True, help="split JSONL to write")
    add_fields(sp.add_argument_group("splitter"), SplitParams, names={"code_only": "--whole-response"},
               helps={"code_only": "code tasks: split the whole response, not only the code block"})
    sp.add_argument("--show", type=int, default=0, help="print this many responses with breaks marked")
    sp.add_argument("--append", action="store_true", help="append to an existing --out")
    sp.set_defaults(func=cmd_split)

    st = sub.add_parser("stats", help="steps per response, tokens per step, break rate, what the break tokens are",
                        formatter_class=fmt)
    st.add_argument("samples", help="samples JSONL")
    st.add_argument("splits", nargs="+", help="one or more split JSONL files to compare")
    st.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    st.set_defaults(func=cmd_stats)

    lb = sub.add_parser("label", help="label each step by Monte-Carlo rollouts (resumable to the rollout)",
                        formatter_class=fmt)
    lb.add_argument("samples", help="samples JSONL")
    lb.add_argument("splits", help="split JSONL of those samples")
    lb.add_argument("--out", required=True, help="labelled stepwise JSONL (TRL prompt/completions/labels + metadata)")
    lb.add_argument("--problems", default=None, help="problems JSONL (default: problems.jsonl beside the samples)")
    lb.add_argument("--worklog", default=None, help="SQLite rollout log (default: OUT.worklog.sqlite)")
    add_fields(lb.add_argument_group("labelling"), LabelConfig,
               names={"kv_reuse": "--no-kv-reuse", "batched": "--no-batch"},
               choices={"label_type": ("hard", "soft")},
               helps={"kv_reuse": "re-evaluate every prefix from scratch (for comparison)",
                      "batched": "decode rollouts one at a time (for comparison)"})
    lb.add_argument("--limit-samples", type=int, default=None, help="label at most this many samples this run")
    lb.add_argument("--quiet", action="store_true", help="no progress bar")
    _model_opts(lb)
    lb.set_defaults(func=cmd_label)

    tr = sub.add_parser("train", help="train a PRM on labelled stepwise data", formatter_class=fmt)
    tr.add_argument("data", help="labelled stepwise JSONL (from 'label'), or Math-Shepherd JSONL with --format")
    tr.add_argument("--out", required=True, help="PRM directory to write (HF format + prm_config.json + model card)")
    tr.add_argument("--backbone", default="default",
                    help="HF causal LM: embedded name ('default', 'smollm2-135m'), .gguf file or HF directory")
    tr.add_argument("--format", default="ours", choices=["ours", "math-shepherd"], help="input data format")
    add_fields(tr.add_argument_group("training"), TrainConfig, skip=["output_dir"],
               choices={"mode": ("head", "lora", "full"), "label_type": ("hard", "soft"),
                        "prompt_format": ("auto", "chat", "plain")})
    tr.set_defaults(func=cmd_train)

    sc = sub.add_parser("score", help="score steps with a PRM", formatter_class=fmt)
    sc.add_argument("input", help="labelled stepwise JSONL, or samples JSONL together with --splits")
    sc.add_argument("--splits", default=None, help="split JSONL of the samples in INPUT")
    sc.add_argument("--problems", default=None, help="problems JSONL (default: problems.jsonl beside INPUT)")
    sc.add_argument("--prm", default=None, help="PRM directory (from 'train'; 'embedded' = the shipped one; with --prm-server: the exported one)")
    sc.add_argument("--prm-server", default=None, metavar="URL",
                    help="score through a vLLM pooling server serving an 'export-prm --format vllm' directory")
    sc.add_argument("--math-shepherd", action="store_true", help="--prm is a Math-Shepherd-style LM PRM")
    sc.add_argument("--out", required=True, help="scores JSONL to write")
    sc.add_argument("--batch", type=int, default=16, help="responses per scoring call")
    sc.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                    help="score on a pool of Ray actors each holding the PRM: ADDRESS of a running cluster "
                         "(host:port or auto); without ADDRESS, a Ray started in this process")
    sc.add_argument("--ray-actors", type=int, default=None, help="actors in that pool (default: one per CPU)")
    sc.set_defaults(func=cmd_score)

    pe = sub.add_parser("prm-eval", help="ProcessBench-style PRM evaluation: find each solution's first wrong step",
                        formatter_class=fmt)
    pe.add_argument("input", help="labelled stepwise JSONL (gold = first step with hard label 0), or ProcessBench JSONL")
    pe.add_argument("--format", default="labeled", choices=["labeled", "processbench"], help="input format")
    pe.add_argument("--prm", required=True, help="PRM directory ('embedded' = the shipped one)")
    pe.add_argument("--math-shepherd", action="store_true", help="--prm is a Math-Shepherd-style LM PRM")
    pe.add_argument("--tune-fraction", type=float, default=0.3, help="share of solutions used to tune the threshold")
    pe.add_argument("--threshold", type=float, default=None, help="fixed threshold instead of tuning one")
    pe.add_argument("--seed", type=int, default=0, help="seed of the tune/eval split")
    pe.add_argument("--out", default=None, help="write all metrics and predictions as JSON here")
    pe.set_defaults(func=cmd_prm_eval)

    bo = sub.add_parser("bon", help="Best-of-N: accuracy vs N for each selection rule", formatter_class=fmt)
    bo.add_argument("samples", help="candidate samples JSONL (the pool: all samples of each problem)")
    bo.add_argument("scores", nargs="?", default=None, help="scores JSONL from 'score' for those samples")
    bo.add_argument("--prm-server", default=None, metavar="URL",
                    help="instead of SCORES: score the samples through a vLLM pooling server (needs --splits)")
    bo.add_argument("--splits", default=None, help="with --prm-server: split JSONL of the samples")
    bo.add_argument("--prm", default=None, help="with --prm-server: the exported directory (default: the server's)")
    bo.add_argument("--problems", default=None, help="problems JSONL (default: problems.jsonl beside the samples)")
    bo.add_argument("--rules", nargs="+", default=list(DEFAULT_RULES), help="selection rules")
    bo.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES, help="random subsets per question and N")
    bo.add_argument("--seed", type=int, default=0, help="subsampling seed")
    bo.add_argument("--out", default=None, help="also write each rule's choice per problem (full pool) here, "
                    "as bon_choice records")
    bo.set_defaults(func=cmd_bon)

    tv = sub.add_parser("tvd", help="token-level value-guided decoding with a PRM", formatter_class=fmt)
    _task_opts(tv)
    _model_opts(tv)
    tv.add_argument("--prm", default=None, help="PRM directory ('embedded' = the shipped one; with --prm-server: the exported one)")
    tv.add_argument("--prm-server", default=None, metavar="URL",
                    help="score through a vLLM pooling server serving an 'export-prm --format vllm' directory")
    tv.add_argument("--math-shepherd", action="store_true", help="--prm is a Math-Shepherd-style LM PRM")
    tv.add_argument("--out", required=True, help="JSONL of tvd records, one per problem (resumable)")
    add_fields(tv.add_argument_group("decoding"), TVDConfig, defaults={"threshold": None},
               choices={"aggregate": sorted(AGGREGATORS)},
               helps={"threshold": "consult the PRM when the top token's probability is below this "
                                   "(default: the paper's, 0.55 for math and 0.28 for code)"})
    tv.set_defaults(func=cmd_tvd)

    ex = sub.add_parser("export-prm", help="write a PRM in a layout another engine serves (vLLM pooling runner)",
                        formatter_class=fmt)
    ex.add_argument("prm_dir", help="PRM directory (from 'train')")
    ex.add_argument("--format", default="vllm", choices=["vllm"],
                    help="vllm: <Arch>ForTokenClassification HF directory for 'vllm serve DIR --runner pooling'")
    ex.add_argument("--out", required=True, help="new directory to write")
    ex.set_defaults(func=cmd_export_prm)

    rn = sub.add_parser("run", help="the main job: the whole pipeline on the embedded default, with a results table",
                        formatter_class=fmt)
    rn.add_argument("--config", default=None, help="YAML config (see config.yaml; default: built-in defaults); or the name of a shipped config (code)")
    rn.add_argument("--quick", action="store_true", help="a small size for a first look (a few minutes)")
    rn.add_argument("--run-dir", default=None, help="override run_dir")
    rn.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                    help="override policy.ray: the engine on a pool of Ray actors (see 'sample --help')")
    rn.add_argument("--ray-actors", type=int, default=None, help="override policy.ray_actors")
    rn.set_defaults(func=cmd_run)

    b = sub.add_parser("bench", help="benchmarks: prints figures, last line one JSON object", formatter_class=fmt)
    b.add_argument("name", help=f"one of: {', '.join(BENCHES)}")
    b.add_argument("--quick", action="store_true", help="small version (a few minutes on a 2-core CPU)")
    b.add_argument("rest", nargs=argparse.REMAINDER, help="options passed to the benchmark")
    b.set_defaults(func=cmd_bench)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    from .embedded_models import ModelError
    from .jsonl import DataError
    from .records import RecordError

    previous = None
    try:
        previous = _stop_on_sigterm()
        return int(a.func(a) or 0)
    except (UsageError, DataError, ModelError, RecordError, ValueError, ImportError, FileNotFoundError,
            ConnectionError) as e:  # ConnectionError: --prm-server
        print(f"adaptivestep {a.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"adaptivestep {a.verb}: {'terminated' if isinstance(e, Terminated) else 'interrupted'}; "
              "re-run the same command to resume", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's preemption, `kill`): stops a job the way Ctrl-C does."""


def _stop_on_sigterm() -> Any:
    """Make SIGTERM stop the command as Ctrl-C does (work logs closed, the resume hint printed), which matters
    for jobs started in the background, where the shell makes them ignore SIGINT; returns the handler to
    restore, or None where none was installed (not the main thread, or SIGTERM already handled or ignored)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        return None

    def stop(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not break off the clean-up
        raise Terminated()

    return signal.signal(signal.SIGTERM, stop)


if __name__ == "__main__":
    sys.exit(main())
