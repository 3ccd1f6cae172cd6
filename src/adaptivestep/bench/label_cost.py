"""``adaptivestep bench label-cost``: what labelling costs with each split, with and without the savers.

One run, one set of sampled responses (embedded default, GSM8K train questions). Each split method
(confidence = AdaptiveStep, newline, fixed) is labelled exhaustively at M rollouts per step, for real, with a
fresh work log: that is the reference and its cost is measured. Agreement = fraction of step labels equal to
the exhaustive labels of the same split.

Saver settings are *replayed* from the exhaustive run's work log: rollout ``j`` of a prefix has a fixed seed and
stream, and the llama.cpp backend's exact mode makes its tokens independent of batching, so a saver run would
draw exactly the rollouts the exhaustive run logged. Each saver runs the real labelling code on a copy of that
log, so it generates nothing and is charged the logged tokens and per-rollout wall time of the rollouts it
asks for. One saver setting is also run for real on the confidence split, and its labels and generated tokens
are compared with the replay (``replay_check``): with exact mode they should match bit for bit, so any
difference points at a determinism bug.

"Plain newline labelling" (no KV reuse, no batching) draws exactly the same seeded rollouts as the exhaustive
newline run, so its generated tokens are those of that run; the prefix tokens it would re-evaluate are
computed exactly (every rollout re-reads its whole prompt + prefix) instead of being re-run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REAL_CHECK = "early+first-error"  # the saver setting also run for real to check the replay

SETTINGS: dict[str, dict[str, Any]] = {
    "exhaustive": {},
    "early-stop": {"early_stop": True, "wave": 2},
    "first-error": {"first_error_search": True},
    "early+first-error": {"early_stop": True, "wave": 2, "first_error_search": True},
}


def _fresh(out: Path) -> Path:
    """Remove ``out`` and its work log / error files; returns the work log path."""
    log = out.with_name(out.name + ".worklog.sqlite")
    for p in (out, log, out.with_name(out.name + ".errors.jsonl")):
        p.unlink(missing_ok=True)
        for suffix in ("-wal", "-shm"):
            Path(str(p) + suffix).unlink(missing_ok=True)
    return log


def _label(backend: Any, judge: Any, problems: dict[str, Any], d: Path, split_file: Path, name: str,
           replay_from: Path | None = None, **cfg: Any) -> tuple[list[Any], float, Path]:
    """Label ``split_file`` with setting ``cfg``; with ``replay_from`` (a work log) its rollouts are reused."""
    import sqlite3

    from ..jsonl import read_records
    from ..label import LabelConfig, label_files
    from ..records import LabeledRecord

    out = d / f"labels-{split_file.stem}-{name}.jsonl"
    log = _fresh(out)
    if replay_from is not None:
        src, dst = sqlite3.connect(str(replay_from)), sqlite3.connect(str(log))
        try:
            src.backup(dst)
        finally:
            src.close()
            dst.close()
    t0 = time.perf_counter()
    label_files(backend, judge, problems, d / "samples.jsonl", split_file, out, LabelConfig(**cfg),
                progress=replay_from is None)
    return list(read_records(out, LabeledRecord)), time.perf_counter() - t0, log


def _figures(recs: list[Any], ref: list[Any], wall: float | None) -> dict[str, Any]:
    n = max(1, len(recs))
    tot = lambda key: sum(r.cost[key] for r in recs)  # noqa: E731
    return {
        "rollouts_per_sample": tot("rollouts") / n,
        "generated_tokens_per_sample": tot("generated_tokens") / n,
        "prefix_tokens_evaluated_per_sample": tot("prefix_tokens_evaluated") / n,
        # measured wall time of a real run; for a replay, the logged wall time of the rollouts it used
        "wall_s_per_sample": (wall if wall is not None else tot("rollout_wall_s")) / n,
        "replayed": wall is None,
        "agreement": _agreement(ref, recs),
    }


def _agreement(ref: list[Any], other: list[Any]) -> float:
    by = {(r.problem_id, r.sample_index): r.hard_labels for r in ref}
    same = total = 0
    for r in other:
        a = by[(r.problem_id, r.sample_index)]
        same += sum(x == y for x, y in zip(a, r.hard_labels))
        total += len(a)
    return same / total if total else float("nan")


def run(quick: bool, model: str | None = None, out_dir: str = "runs/bench-label-cost", questions: int | None = None,
        samples_per_question: int | None = None, rollouts: int | None = None, verify: bool = True) -> dict[str, Any]:
    from ..backends import load_backend
    from ..backends.base import SamplingConfig
    from ..checkers import get_checker
    from ..jsonl import JsonlWriter, read_records
    from ..records import LabeledRecord, Sample
    from ..sample import sample_problems
    from ..split import SplitParams, split_samples
    from ..tasks import load_tasks, render_prompt

    nq = questions or (2 if quick else 3)
    ns = samples_per_question or (1 if quick else 2)
    m = rollouts or (4 if quick else 8)
    # long enough for the 0.5B model to finish most answers (~315 tokens), so rollouts can reach one
    max_resp, max_roll = 400, 320
    d = Path(out_dir) / ("quick" if quick else "full")
    d.mkdir(parents=True, exist_ok=True)
    backend = load_backend("auto", model)
    problems = load_tasks("gsm8k", split="train", limit=nq)
    checker = get_checker("math")
    judge = lambda p, t: checker.check(p, t).correct  # noqa: E731
    print(f"sampling {ns} responses for {nq} GSM8K train questions ...", flush=True)
    sample_problems(backend, problems, d / "samples.jsonl", n=ns, seed=0, render=lambda p: render_prompt(p, backend),
                    config=SamplingConfig(max_tokens=max_resp))
    samples = list(read_records(d / "samples.jsonl", Sample))
    conf = split_samples(samples, "confidence", SplitParams(break_rate=0.02))
    splits = {"confidence": conf, "newline": split_samples(samples, "newline", SplitParams()),
              "fixed": split_samples(samples, "fixed", SplitParams(k=64))}
    by_p = {p.id: p for p in problems}
    results: dict[str, Any] = {"samples": len(samples), "rollouts_per_step": m, "rollout_max_tokens": max_roll,
                               "tau": conf[0].threshold, "methods": {}}
    base: dict[str, Any] = {"rollouts": m, "max_tokens": max_roll}
    for method, sp in splits.items():
        f = d / f"split-{method}.jsonl"
        f.unlink(missing_ok=True)
        with JsonlWriter(f, fsync=False) as w:
            w.write_all(sp)
        mres: dict[str, Any] = {"steps_per_sample": statistics.mean(len(s.boundaries) for s in sp)}
        print(f"labelling {method} split exhaustively ({m} rollouts per step) ...", flush=True)
        ref, wall, ref_log = _label(backend, judge, by_p, d, f, "exhaustive", **base)
        mres["exhaustive"] = _figures(ref, ref, wall)
        for name, extra in SETTINGS.items():
            if name != "exhaustive":
                recs, _, _ = _label(backend, judge, by_p, d, f, name, replay_from=ref_log, **base, **extra)
                mres[name] = _figures(recs, ref, None)
        if method == "confidence" and verify:
            print(f"checking the replay: labelling {method} split with {REAL_CHECK} for real ...", flush=True)
            real, wall, _ = _label(backend, judge, by_p, d, f, REAL_CHECK + "-real", **base, **SETTINGS[REAL_CHECK])
            mres[REAL_CHECK + " (real run)"] = _figures(real, ref, wall)
            replayed = list(read_records(d / f"labels-{f.stem}-{REAL_CHECK}.jsonl", LabeledRecord))
            results["replay_check"] = {
                "setting": REAL_CHECK,
                "label_agreement": _agreement(real, replayed),
                "tokens_real_vs_replay_ratio": sum(r.cost["generated_tokens"] for r in real)
                / max(1e-9, sum(r.cost["generated_tokens"] for r in replayed)),
            }
        by_key = {s.key: s for s in samples}
        no_reuse = sum(
            (len(by_key[(r.problem_id, r.sample_index)].prompt_ids) + e) * len(meta.outcomes)
            for r in ref for e, meta in zip(r.step_token_ends, r.rollouts)
        )
        mres["plain_prefix_tokens_per_sample"] = no_reuse / max(1, len(ref))
        results["methods"][method] = mres
    backend.close()
    cm, nm = results["methods"]["confidence"], results["methods"]["newline"]
    plain_newline = nm["exhaustive"]["generated_tokens_per_sample"]
    savers = ("early-stop", "first-error", "early+first-error")
    # the cheapest saver setting that keeps >= 95% of the exhaustive labels (else the most faithful one)
    faithful = [s for s in savers if cm[s]["agreement"] >= 0.95]
    best_saver = (min(faithful, key=lambda s: cm[s]["generated_tokens_per_sample"]) if faithful
                  else max(savers, key=lambda s: cm[s]["agreement"]))
    cheapest = min(savers, key=lambda s: cm[s]["generated_tokens_per_sample"])
    results.update({
        "confidence_vs_newline_tokens_ratio": cm["exhaustive"]["generated_tokens_per_sample"] / max(1e-9, plain_newline),
        "confidence_savers_vs_plain_newline_tokens_ratio": cm[best_saver]["generated_tokens_per_sample"]
        / max(1e-9, plain_newline),
        "best_saver": best_saver,
        "best_saver_agreement": cm[best_saver]["agreement"],
        "cheapest_saver": cheapest,
        "cheapest_saver_vs_plain_newline_tokens_ratio": cm[cheapest]["generated_tokens_per_sample"]
        / max(1e-9, plain_newline),
        "cheapest_saver_agreement": cm[cheapest]["agreement"],
        "kv_reuse_prefix_ratio": nm["exhaustive"]["prefix_tokens_evaluated_per_sample"]
        / max(1e-9, nm["plain_prefix_tokens_per_sample"]),
    })
    return results


def report(res: dict[str, Any]) -> str:
    lines = [f"{res['samples']} samples, M = {res['rollouts_per_step']} rollouts/step, tau = {res['tau']:.4f}", ""]
    lines.append(f"{'split':<11}{'setting (per labelled sample)':<27}{'steps':>6}{'rollouts':>10}{'gen tok':>10}{'prefix tok':>11}"
                 f"{'wall s':>8}{'agree':>7}")
    for method, m in res["methods"].items():
        for name in [k for k in m if isinstance(m[k], dict)]:
            x = m[name]
            tag = name + (" *" if x["replayed"] else "")
            lines.append(f"{method:<11}{tag:<27}{m['steps_per_sample']:>6.2f}{x['rollouts_per_sample']:>10.1f}"
                         f"{x['generated_tokens_per_sample']:>10.0f}{x['prefix_tokens_evaluated_per_sample']:>11.0f}"
                         f"{x['wall_s_per_sample']:>8.1f}{100 * x['agreement']:>6.1f}%")
    lines += [
        "* replayed from the exhaustive work log: the same seeded rollouts, charged their logged tokens and wall time"
        + ("; a real run of {setting}: {0:.1f}% of its labels equal the replay's, its tokens {1:.2f}x".format(
            100 * res["replay_check"]["label_agreement"], res["replay_check"]["tokens_real_vs_replay_ratio"],
            setting=res["replay_check"]["setting"]) if "replay_check" in res else ""),
        "",
        (f"confidence / newline rollout tokens (exhaustive): {res['confidence_vs_newline_tokens_ratio']:.2f} "
        "(target <= 0.70)"),
        (f"confidence with savers ({res['best_saver']}) / plain newline: "
        f"{res['confidence_savers_vs_plain_newline_tokens_ratio']:.2f} (target <= 0.40), agreement "
        f"{100 * res['best_saver_agreement']:.1f}% (target >= 95%)"),
        (f"cheapest saver ({res['cheapest_saver']}) / plain newline: "
         f"{res['cheapest_saver_vs_plain_newline_tokens_ratio']:.2f}, agreement "
         f"{100 * res['cheapest_saver_agreement']:.1f}%"),
        f"KV reuse: prefix tokens evaluated / without reuse (newline): {res['kv_reuse_prefix_ratio']:.3f}",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="adaptivestep bench label-cost", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 questions x 1 sample, M = 4 (under 10 minutes on 2 cores)")
    ap.add_argument("--model", default=None, help="policy model (default: embedded Qwen2.5-Coder-0.5B)")
    ap.add_argument("--questions", type=int, default=None, help="GSM8K train questions (default 3, quick 2)")
    ap.add_argument("--samples-per-question", type=int, default=None, help="responses per question (default 2, quick 1)")
    ap.add_argument("--rollouts", type=int, default=None, help="M (default 8, quick 4)")
    ap.add_argument("--out-dir", default="runs/bench-label-cost", help="working folder")
    ap.add_argument("--no-verify", action="store_true",
                    help="skip the real run of one saver setting that checks the replayed figures")
    a = ap.parse_args(argv)
    for name, v in (("--questions", a.questions), ("--samples-per-question", a.samples_per_question),
                    ("--rollouts", a.rollouts)):
        if v is not None and v < 1:
            ap.error(f"{name} must be >= 1, got {v}")
    res = run(a.quick, a.model, a.out_dir, a.questions, a.samples_per_question, a.rollouts, not a.no_verify)
    print(report(res))
    print(json.dumps(res, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
