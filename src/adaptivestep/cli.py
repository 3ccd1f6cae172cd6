"""Command line: one verb per pipeline stage. ``adaptivestep VERB --help`` explains every option."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from . import __version__

Handler = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """Bad option value; printed as one line naming the option."""


# ---------------------------------------------------------------- shared option groups
def _model_opts(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default="default",
                   help="policy model: 'default' (embedded Qwen2.5-Coder-0.5B-Instruct GGUF), 'smollm2-135m', "
                        "a .gguf file, or a local Hugging Face model directory")
    g.add_argument("--backend", default="auto", choices=["auto", "llamacpp", "hf"],
                   help="inference engine; auto = llamacpp for GGUF files, hf for directories")
    g.add_argument("--n-ctx", type=int, default=4096, help="context window in tokens (llamacpp)")
    g.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")


def _task_opts(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("task")
    g.add_argument("--task", default="gsm8k",
                   help="gsm8k | math500 | humaneval | leetcode, or a JSONL file of problems (see --question-field)")
    g.add_argument("--split", dest="data_split", default="test", help="dataset split: test or train")
    g.add_argument("--data-dir", default=None,
                   help="folder laid out like shared/data (gsm8k/, math500/, ...); default: the embedded GSM8K subset")
    g.add_argument("--limit", type=int, default=None, help="use at most this many problems")
    g.add_argument("--offset", type=int, default=0, help="skip this many problems first")
    g.add_argument("--question-field", default="question", help="generic JSONL: field holding the question")
    g.add_argument("--answer-field", default="answer", help="generic JSONL: field holding the gold answer")
    g.add_argument("--kind", default="math", choices=["math", "code"], help="generic JSONL: task kind")


def _positive(name: str, v: float | int | None, *, allow_zero: bool = False) -> None:
    if v is None:
        return
    if v < 0 or (v == 0 and not allow_zero):
        raise UsageError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {v}")


def _open_backend(a: argparse.Namespace):  # noqa: ANN202
    from .backends import load_backend

    _positive("--n-ctx", a.n_ctx)
    opts: dict[str, object] = {}
    if a.threads:
        opts["n_threads"] = a.threads
    backend_name = a.backend
    if backend_name in ("auto", "llamacpp") and not str(a.model).endswith("/"):
        opts["n_ctx"] = a.n_ctx
    from .models import resolve_model

    path = resolve_model(a.model)
    if Path(path).is_dir():
        opts.pop("n_ctx", None)
        opts.pop("n_threads", None)
    return load_backend(backend_name, str(path), **opts)


def _load_problems(a: argparse.Namespace):  # noqa: ANN202
    from . import tasks

    _positive("--limit", a.limit)
    _positive("--offset", a.offset, allow_zero=True)
    if Path(a.task).suffix in (".jsonl", ".gz") or Path(a.task).exists():
        probs = tasks.load_jsonl_tasks(a.task, question_field=a.question_field, answer_field=a.answer_field,
                                       kind=a.kind)
        return probs[a.offset: a.offset + a.limit if a.limit else None]
    return tasks.load_tasks(a.task, split=a.data_split, data_dir=a.data_dir, limit=a.limit, offset=a.offset)


# ---------------------------------------------------------------- verbs
def cmd_sample(a: argparse.Namespace) -> int:
    from .backends.base import SamplingConfig
    from .jsonl import JsonlWriter
    from .records import Problem
    from .sample import sample_problems
    from .tasks import render_prompt

    _positive("--n", a.n)
    cfg = SamplingConfig(temperature=a.temperature, top_p=a.top_p, max_tokens=a.max_tokens, top_logprobs=a.top_logprobs)
    problems = _load_problems(a)
    out = Path(a.out)
    # the problems used go beside the samples: later stages need their gold answers / tests
    pfile = problems_path_for(out)
    known = set()
    if pfile.exists():
        from .jsonl import read_records

        known = {p.id for p in read_records(pfile, Problem, tolerate_torn_tail=True)}
    with JsonlWriter(pfile) as w:
        for p in problems:
            if p.id not in known:
                w.write(p)
    backend = _open_backend(a)
    s = sample_problems(backend, problems, out, n=a.n, config=cfg, seed=a.seed,
                        render=lambda p: render_prompt(p, backend), batch_sequences=a.batch,
                        progress=not a.quiet)
    print(f"{s.written} samples written to {out} ({s.already_done} already there, {s.empty} empty responses "
          f"skipped), {s.tokens} tokens in {s.wall_s:.1f}s = {s.tokens_per_s:.1f} tok/s")
    return 0


def problems_path_for(samples_path: Path) -> Path:
    """Where ``sample`` records the problems it sampled: ``problems.jsonl`` beside the samples file."""
    return samples_path.with_name("problems.jsonl")


def cmd_split(a: argparse.Namespace) -> int:
    from .jsonl import JsonlWriter, read_records
    from .records import Sample
    from .split import SplitParams, split_samples

    params = SplitParams(break_rate=a.break_rate, tau=a.tau, k=a.k, rate=a.rate, seed=a.seed,
                         double_newline=a.double_newline, code_only=not a.whole_response)
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
    from .stats import format_stats, split_stats

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
    from .checkers import get_checker
    from .jsonl import read_records
    from .label import LabelConfig, label_files
    from .records import Problem

    cfg = LabelConfig(rollouts=a.rollouts, label_type=a.label_type, max_tokens=a.max_tokens,
                      temperature=a.temperature, seed=a.seed, kv_reuse=not a.no_kv_reuse, early_stop=a.early_stop,
                      wave=a.wave, first_error_search=a.first_error_search, batched=not a.no_batch,
                      keep_text=a.keep_text)
    pfile = Path(a.problems) if a.problems else problems_path_for(Path(a.samples))
    problems = {p.id: p for p in read_records(pfile, Problem)}
    checkers = {}

    def judge(problem: Problem, text: str) -> bool:
        if problem.kind not in checkers:
            checkers[problem.kind] = get_checker(problem.kind)
        return bool(checkers[problem.kind].check(problem, text).correct)

    backend = _open_backend(a)
    s = label_files(backend, judge, problems, a.samples, a.splits, a.out, cfg, worklog_path=a.worklog,
                    progress=not a.quiet, limit=a.limit_samples)
    c = s.cost
    print(f"labelled {s.labelled} samples ({s.skipped_done} already done, {len(s.failures)} failed) -> {a.out}")
    if c:
        print(f"cost: {c.get('rollouts', 0):.0f} rollouts, {c.get('generated_tokens', 0):.0f} generated tokens, "
              f"{c.get('prefix_tokens_evaluated', 0):.0f} prefix tokens evaluated, {c.get('wall_s', 0):.1f}s")
    for f in s.failures[:10]:
        print(f"  failed: {f}", file=sys.stderr)
    return 0 if not s.failures or s.labelled else 1


def _not_ready(name: str) -> Handler:
    def run(a: argparse.Namespace) -> int:
        raise UsageError(f"'{name}' is not available in this build")

    return run


def cmd_bench(a: argparse.Namespace) -> int:
    import importlib

    if a.name not in BENCHES:
        raise UsageError(f"bench: unknown benchmark {a.name!r}; choose from {', '.join(BENCHES)}")
    mod = importlib.import_module(BENCHES[a.name])
    return int(mod.main(a.rest + (["--quick"] if a.quick else [])) or 0)


BENCHES: dict[str, str] = {
    "throughput": "adaptivestep.bench.throughput",
    "label-cost": "adaptivestep.bench.label_cost",
    "prm": "adaptivestep.prm.bench",
}


# ---------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
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
    s.add_argument("--n", type=int, default=4, help="responses per problem")
    s.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (log-probs are always at T=1)")
    s.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1 = off)")
    s.add_argument("--max-tokens", type=int, default=512, help="most tokens per response")
    s.add_argument("--top-logprobs", type=int, default=0, help="also keep the top-k alternatives per token")
    s.add_argument("--seed", type=int, default=0, help="base seed (sample i of problem p is reproducible)")
    s.add_argument("--batch", type=int, default=8, help="sequences decoded together per engine call")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_sample)

    sp = sub.add_parser("split", help="divide samples into steps (AdaptiveStep confidence, or a baseline)",
                        formatter_class=fmt)
    sp.add_argument("samples", help="samples JSONL from 'sample'")
    sp.add_argument("--method", default="confidence", choices=["confidence", "newline", "fixed", "random"],
                    help="confidence = AdaptiveStep; newline / fixed / random = baselines")
    sp.add_argument("--out", required=True, help="split JSONL to write")
    sp.add_argument("--break-rate", type=float, default=0.02,
                    help="confidence: fraction of all pooled tokens that end a step; sets tau as a quantile")
    sp.add_argument("--tau", type=float, default=None, help="confidence: fixed threshold instead of --break-rate")
    sp.add_argument("--k", type=int, default=32, help="fixed: tokens per step")
    sp.add_argument("--rate", type=float, default=None,
                    help="random: break probability per token (default: the confidence split's rate)")
    sp.add_argument("--double-newline", action="store_true", help="newline: split only on blank lines")
    sp.add_argument("--whole-response", action="store_true",
                    help="code tasks: split the whole response, not only the code block")
    sp.add_argument("--seed", type=int, default=0, help="random: seed")
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
    lb.add_argument("--rollouts", type=int, default=8, help="M: rollouts per step prefix")
    lb.add_argument("--label-type", default="hard", choices=["hard", "soft"],
                    help="hard: 1 if any rollout is correct; soft: fraction correct (both are always recorded)")
    lb.add_argument("--max-tokens", type=int, default=384, help="most tokens per rollout")
    lb.add_argument("--temperature", type=float, default=1.0, help="rollout sampling temperature")
    lb.add_argument("--seed", type=int, default=0, help="base seed of all rollouts")
    lb.add_argument("--early-stop", action="store_true", help="saver: stop a step's rollouts at the first success")
    lb.add_argument("--wave", type=int, default=2, help="rollouts per wave when --early-stop")
    lb.add_argument("--first-error-search", action="store_true",
                    help="saver: binary-search the first bad step instead of rolling out every step")
    lb.add_argument("--no-kv-reuse", action="store_true", help="re-evaluate every prefix from scratch (for comparison)")
    lb.add_argument("--no-batch", action="store_true", help="decode rollouts one at a time (for comparison)")
    lb.add_argument("--keep-text", action="store_true", help="keep rollout texts in the work log")
    lb.add_argument("--limit-samples", type=int, default=None, help="label at most this many samples this run")
    lb.add_argument("--quiet", action="store_true", help="no progress bar")
    _model_opts(lb)
    lb.set_defaults(func=cmd_label)

    for name, helptext in (("train", "train a PRM on labelled stepwise data"),
                           ("score", "score steps with a PRM"),
                           ("bon", "Best-of-N selection with a PRM"),
                           ("tvd", "token-level value-guided decoding")):
        x = sub.add_parser(name, help=helptext, formatter_class=fmt)
        x.set_defaults(func=_not_ready(name))

    b = sub.add_parser("bench", help="benchmarks: prints figures, last line one JSON object", formatter_class=fmt)
    b.add_argument("name", help=f"one of: {', '.join(BENCHES)}")
    b.add_argument("--quick", action="store_true", help="small version (a few minutes on a 2-core CPU)")
    b.add_argument("rest", nargs=argparse.REMAINDER, help="options passed to the benchmark")
    b.set_defaults(func=cmd_bench)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    from .jsonl import DataError
    from .models import ModelError
    from .records import RecordError

    try:
        return int(a.func(a) or 0)
    except (UsageError, DataError, ModelError, RecordError, ValueError, ImportError, FileNotFoundError) as e:
        print(f"adaptivestep {a.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"adaptivestep {a.verb}: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
