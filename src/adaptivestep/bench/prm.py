"""PRM benchmark: training throughput, peak memory and scoring throughput per backbone and mode.

``adaptivestep bench prm [--quick] [--backbones a,b] [--modes head,lora,full]`` builds a small synthetic
labelled set from GSM8K worked solutions (one step per line, calculator annotations removed, random
labels: only throughput is measured), then for each backbone and mode, in a fresh subprocess (so that
``ru_maxrss`` is that run's own peak):

- trains a PRM (head: feature extraction + head fit; lora/full: a few Trainer steps) and reports
  labelled steps/s and peak RSS (MiB);
- (head runs) scores best-of-N-shaped items (several candidates per question) one at a time
  (``PRM.score``) and batched (``PRM.score_batch``): ``batched_vs_single_ratio``, plus the batched
  figure without prompt sharing (``batched_noshare_vs_single_ratio``) to show where the gain comes from.

Backbones default to the embedded SmolLM2-135M and the default Qwen2.5-Coder-0.5B (GGUF files, loaded
through ``backends.hf.load_hf_model``; converted once into the cache before timing). Human-readable
lines first; the LAST line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_BACKBONES = ("smollm2-135m", "qwen2.5-coder-0.5b")
GSM8K = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "gsm8k" / "train.jsonl"


def gsm8k_path() -> Path:
    """GSM8K train file: $ADAPTIVESTEP_GSM8K, else ``<repo>/../shared/data/gsm8k/train.jsonl`` when present,
    else the package's embedded subset (first 400 train questions, same format)."""
    env = os.environ.get("ADAPTIVESTEP_GSM8K")
    if env:
        return Path(env)
    if GSM8K.resolve().is_file():
        return GSM8K.resolve()
    return Path(__file__).resolve().parents[1] / "data" / "gsm8k_train.jsonl"


def gsm8k_steps(answer: str) -> list[str]:
    """A GSM8K worked solution as steps: one per line (newline kept), ``<<...>>`` annotations removed.

    >>> gsm8k_steps("She has 2+3 = <<2+3=5>>5.\\n#### 5")
    ['She has 2+3 = 5.\\n', '#### 5']
    """
    text = re.sub(r"<<[^>]*>>", "", answer)
    lines = text.split("\n")
    return [ln + "\n" for ln in lines[:-1] if ln.strip()] + ([lines[-1]] if lines[-1].strip() else [])


def synthetic_records(n: int, seed: int = 0, source: Path | None = None) -> list[dict[str, Any]]:
    """``n`` LabeledRecord dicts from the first GSM8K problems: each problem gives its worked solution
    (every step labelled 1.0) and a corrupted copy (one result changed: that step and every later step
    labelled 0.0, as rollouts from a wrong prefix would mostly fail). Enough signal for held-out AUC to
    mean something (can the PRM spot a wrong number?), cheap, and the same throughput as any labels.
    """
    rng = random.Random(seed)
    src = source or gsm8k_path()
    out: list[dict[str, Any]] = []
    with src.open() as f:
        for i, line in enumerate(f):
            if len(out) >= n:
                break
            d = json.loads(line)
            steps = gsm8k_steps(d["answer"])
            base = {
                "prompt": d["question"],
                "problem_id": f"gsm8k-train-{i}",
                "method": "newline",
                "label_type": "hard",
            }
            out.append({**base, "completions": steps, "labels": [1.0] * len(steps), "sample_index": 0})
            bad = corrupt(steps, rng)
            if bad is not None and len(out) < n:
                k, bad_steps = bad
                labels = [1.0 if j < k else 0.0 for j in range(len(steps))]
                out.append({**base, "completions": bad_steps, "labels": labels, "sample_index": 1})
    return out


_RESULT = re.compile(r"(=\s*\$?)(\d+(?:\.\d+)?)")


def corrupt(steps: Sequence[str], rng: random.Random) -> tuple[int, list[str]] | None:
    """Change one computed result (a number after '=') and the final answer; returns (step index, steps).

    >>> corrupt(["a 2+3 = 5.\\n", "#### 5"], random.Random(0))[0]
    0
    """
    cands = [j for j, s in enumerate(steps) if _RESULT.search(s) and not s.startswith("####")]
    if not cands:
        return None
    k = rng.choice(cands)
    delta = rng.choice([-3, -2, -1, 1, 2, 3, 10])
    out = list(steps)
    m = list(_RESULT.finditer(out[k]))[-1]
    wrong = str(max(0, round(float(m.group(2)) + delta)))
    if wrong == m.group(2):
        wrong = str(round(float(m.group(2))) + 1)
    out[k] = out[k][: m.start(2)] + wrong + out[k][m.end(2) :]
    if out[-1].startswith("####") and k != len(out) - 1:
        ans = out[-1][4:].strip()
        try:
            out[-1] = f"#### {round(float(ans.replace(',', '')) + delta)}"
        except ValueError:
            pass
    return k, out


def scoring_items(
    records: Sequence[dict[str, Any]], n_questions: int, n_candidates: int
) -> list[tuple[str, list[str]]]:
    """Best-of-N-shaped items: ``n_candidates`` solutions (taken from other records) per question."""
    items = []
    for q in range(n_questions):
        for j in range(n_candidates):
            r = records[(q * n_candidates + j) % len(records)]
            items.append((records[q]["prompt"], list(r["completions"])))
    return items


def tvd_items(records: Sequence[dict[str, Any]], n_questions: int, k: int) -> list[tuple[str, list[str]]]:
    """Value-guided-decoding-shaped items: per question, ``k`` one-token-ish candidates after the same prefix
    (the first steps of its solution, last one cut mid-way), each scored as a finished step."""
    items = []
    words = [" so", " then", " which", " and", " 12", " is", " the", " ="]
    for q in range(n_questions):
        r = records[q]
        prefix = list(r["completions"][:2])
        prefix[-1] = prefix[-1][: max(1, len(prefix[-1]) // 2)]
        for j in range(k):
            items.append((r["prompt"], prefix[:-1] + [prefix[-1] + words[j % len(words)]]))
    return items


def time_scoring(prm: Any, items: list[tuple[str, list[str]]], reps: int) -> dict[str, Any]:
    """Best-of-``reps`` wall time of scoring ``items`` one at a time, batched, batched without sharing."""

    def best(fn: Any) -> tuple[float, Any]:
        times, out = [], None
        for _ in range(reps):
            t = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t)
        return min(times), out

    t_single, single = best(lambda: [prm.score(q, s) for q, s in items])
    prm.share_prefix = True
    t_batched, batched = best(lambda: prm.score_batch(items))
    prm.share_prefix = False
    t_noshare, _ = best(lambda: prm.score_batch(items))
    prm.share_prefix = True
    diff = max(abs(a - b) for x, y in zip(single, batched) for a, b in zip(x, y))
    n_steps = sum(len(s) for _, s in items)
    return {
        "items": len(items),
        "single_steps_per_s": round(n_steps / t_single, 3),
        "batched_steps_per_s": round(n_steps / t_batched, 3),
        "batched_vs_single_ratio": round(t_single / t_batched, 3),
        "batched_noshare_vs_single_ratio": round(t_single / t_noshare, 3),
        "max_abs_diff": float(f"{diff:.3g}"),
    }


# --------------------------------------------------------------------------------- one measurement


def measure_one(backbone: str, mode: str, data: str, work: str, quick: bool, score: bool) -> dict[str, Any]:
    """Train (and for head mode score) once in THIS process; returns the figures."""
    import torch

    from ..prm.model import PRM
    from ..prm.train import TrainConfig, peak_rss_mb, train

    out = Path(work) / f"{Path(backbone).name}-{mode}"
    cfg = TrainConfig(
        mode=mode,
        output_dir=str(out),
        eval_fraction=0.2,
        max_length=512,
        batch_size=4 if mode != "head" else 8,
        max_steps=2 if quick and mode != "head" else -1,  # quick: 2 optimizer steps; else one epoch
        feature_cache=str(Path(work) / f"features-{os.getpid()}"),  # fresh: time the extraction
        save_steps=10_000,
    )
    t0 = time.perf_counter()
    m = train(cfg, data, backbone)
    res: dict[str, Any] = {
        "backbone": backbone,
        "mode": mode,
        "threads": torch.get_num_threads(),
        "train_wall_s": round(time.perf_counter() - t0, 2),
        "labelled_steps_per_s": round(float(m["labelled_steps_per_s"]), 3),
        "n_labelled_steps": m["n_train_steps"] + m["n_eval_steps"] if mode == "head" else None,
        "optimizer_steps": m.get("global_steps"),
        "eval_auc": round(float(m["eval_auc"]), 4) if m.get("eval_auc") == m.get("eval_auc") else None,
        "eval_accuracy": round(float(m["eval_accuracy"]), 4)
        if m.get("eval_accuracy") == m.get("eval_accuracy")
        else None,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    if mode == "head":
        res["feature_s"] = round(m["feature_seconds"], 2)
        res["head_fit_s"] = round(m["head_fit_seconds"], 2)
    if score:
        recs = [json.loads(x) for x in Path(data).read_text().splitlines() if x.strip()]
        prm = PRM.load(out)
        prm.score_batch(scoring_items(recs, 1, 2))  # warm-up
        reps = 1 if quick else 2
        for shape, items in (
            ("bon", scoring_items(recs, *((2, 4) if quick else (4, 4)))),
            ("tvd", tvd_items(recs, 1 if quick else 2, 8)),
        ):
            res.update({f"{shape}_{k}": v for k, v in time_scoring(prm, items, reps).items()})
        res["batched_vs_single_ratio"] = res["bon_batched_vs_single_ratio"]
        res["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return res


def _prepare(backbone: str) -> None:
    """Convert a GGUF backbone to its cached HF directory (not timed)."""
    from ..embedded_models import resolve_model

    p = resolve_model(backbone)
    if p.is_file():
        from ..backends.hf import gguf_to_hf

        gguf_to_hf(p)


def _subprocess(args: list[str], timeout: float | None) -> dict[str, Any]:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("TQDM_DISABLE", "1")
    # libgomp threads spin while waiting; on a shared 2-core machine a preempted spinner stalls every
    # parallel region (measured: 2 threads 14x slower than 1 under load). Passive waiting avoids it.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    proc = subprocess.run(
        [sys.executable, "-m", "adaptivestep.bench.prm", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    last = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not last:
        tail = (proc.stderr or proc.stdout)[-1500:]
        return {"error": f"exit {proc.returncode}: {tail}"}
    return json.loads(last[-1])


# --------------------------------------------------------------------------------------------- run


def run(
    quick: bool = False,
    *,
    backbones: Sequence[str] | None = None,
    modes: Sequence[str] | None = None,
    n_records: int | None = None,
    work_dir: str | None = None,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """Measure every (backbone, mode) pair in its own subprocess; return all figures.

    quick: 24 records, 2 optimizer steps (lora/full), 2x4 best-of-N + 1x8 TVD scoring items, one timing
    each. Full: 64 records, one epoch (lora/full), 4x4 + 2x8 items, best of 2 timings. Modes by default:
    head+lora+full for SmolLM2, head for the 0.5B (its full step needs ~12 GB; ask with ``modes``).
    """
    backbones = list(backbones or DEFAULT_BACKBONES)
    load0 = list(os.getloadavg())  # other jobs on the machine distort CPU timings: recorded beside them
    n = n_records or (24 if quick else 64)
    tmp = tempfile.TemporaryDirectory(prefix="prm-bench-") if work_dir is None else None
    work = Path(work_dir or tmp.name)  # type: ignore[union-attr]
    work.mkdir(parents=True, exist_ok=True)
    data = work / "synthetic-labeled.jsonl"
    with data.open("w") as f:
        for r in synthetic_records(n):
            f.write(json.dumps(r) + "\n")
    results: list[dict[str, Any]] = []
    for bb in backbones:
        if modes:
            bb_modes = list(modes)
        elif "135m" in bb.lower():
            bb_modes = ["head", "lora", "full"]
        else:
            bb_modes = ["head"]
        prep = _subprocess(["--prepare", bb], timeout_s)
        if "error" in prep:
            results.append({"backbone": bb, "mode": "prepare", **prep})
            print(f"{bb}: cannot prepare backbone: {prep['error'][-300:]}", flush=True)
            continue
        for mode in bb_modes:
            args = [
                "--one",
                json.dumps(
                    {
                        "backbone": bb,
                        "mode": mode,
                        "data": str(data),
                        "work": str(work),
                        "quick": quick,
                        "score": mode == "head",
                    }
                ),
            ]
            r = _subprocess(args, timeout_s)
            r.setdefault("backbone", bb)
            r.setdefault("mode", mode)
            results.append(r)
            _print_row(r)
    summary: dict[str, Any] = {
        "bench": "prm",
        "quick": quick,
        "records": n,
        "steps_per_record": round(sum(len(r["completions"]) for r in synthetic_records(n)) / n, 2),
        "cpu_count": os.cpu_count(),
        "loadavg_start": load0,
        "results": results,
    }
    for key in (
        "batched_vs_single_ratio",
        "tvd_batched_vs_single_ratio",
        "bon_batched_noshare_vs_single_ratio",
    ):
        vals = [r[key] for r in results if key in r]
        if vals:
            summary[key] = min(vals)  # the least favourable backbone
    summary["loadavg_end"] = list(os.getloadavg())
    summary["recommendation"] = recommend(results)
    print(f"recommendation: {summary['recommendation']['text']}", flush=True)
    if tmp is not None:
        tmp.cleanup()
    return summary


def recommend(results: Sequence[dict[str, Any]], budget_s: float = 300.0, steps: int = 500) -> dict[str, Any]:
    """Pick the embedded default PRM recipe from measured throughput: the strongest backbone/mode that
    trains on ``steps`` labelled steps within ``budget_s`` seconds (preferring the 0.5B backbone + head,
    then SmolLM2-135M full) and stays under 8 GB peak."""

    def est(r: dict[str, Any]) -> float:
        v = r.get("labelled_steps_per_s") or 0.0
        return steps / v if v > 0 else float("inf")

    order = [
        ("qwen2.5-coder-0.5b", "head"),
        ("smollm2-135m", "full"),
        ("smollm2-135m", "lora"),
        ("smollm2-135m", "head"),
    ]
    table = {(r.get("backbone"), r.get("mode")): r for r in results if "error" not in r}
    rows = []
    choice = None
    for key in order:
        r = table.get(key)
        if r is None:
            continue
        t = est(r)
        ok = t <= budget_s and r.get("peak_rss_mb", 1e9) <= 8192
        rows.append(
            {
                "backbone": key[0],
                "mode": key[1],
                "est_train_s": round(t, 1),
                "peak_rss_mb": r.get("peak_rss_mb"),
                "eval_auc": r.get("eval_auc"),
                "fits": ok,
            }
        )
        if ok and choice is None:
            choice = key
    if choice:
        est_s = next(x["est_train_s"] for x in rows if (x["backbone"], x["mode"]) == choice)
        text = f"{choice[0]} + {choice[1]}: est. {est_s} s for {steps} labelled steps on this machine"
    else:
        text = f"nothing measured trains {steps} labelled steps within {budget_s:.0f} s here"
    return {
        "choice": list(choice) if choice else None,
        "budget_s": budget_s,
        "labelled_steps": steps,
        "candidates": rows,
        "text": text,
    }


def _print_row(r: dict[str, Any]) -> None:
    if "error" in r:
        print(f"{r['backbone']:>20} {r['mode']:>5}: ERROR {r['error'][-400:]}", flush=True)
        return
    line = (
        f"{r['backbone']:>20} {r['mode']:>5}: train {r['labelled_steps_per_s']:8.2f} labelled steps/s  "
        f"peak RSS {r['peak_rss_mb']:8.0f} MiB  wall {r['train_wall_s']:6.1f} s  "
        f"held-out AUC {r.get('eval_auc')}"
    )
    for shape in ("bon", "tvd"):
        g = {k[len(shape) + 1 :]: v for k, v in r.items() if k.startswith(shape + "_")}
        if "batched_vs_single_ratio" in g:
            line += (
                f"\n{'':>27}score {shape} ({g['items']} items): single {g['single_steps_per_s']:.2f} "
                f"steps/s, batched {g['batched_steps_per_s']:.2f} steps/s -> ratio "
                f"{g['batched_vs_single_ratio']:.2f} (without prefix sharing "
                f"{g['batched_noshare_vs_single_ratio']:.2f}; max |diff| {g['max_abs_diff']:.1e})"
            )
    print(line, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry: ``adaptivestep bench prm [--quick] [--backbones a,b] [--modes m1,m2] [--records N]``."""
    ap = argparse.ArgumentParser(prog="adaptivestep bench prm", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small version (see run())")
    ap.add_argument(
        "--backbones", default=None, help=f"comma-separated (default: {','.join(DEFAULT_BACKBONES)})"
    )
    ap.add_argument(
        "--modes", default=None, help="comma-separated subset of head,lora,full (default: per backbone)"
    )
    ap.add_argument(
        "--records", type=int, default=None, help="synthetic labelled records (default 24 quick / 64)"
    )
    ap.add_argument("--work-dir", default=None, help="keep data and trained PRMs here (default: a temp dir)")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: one measurement (JSON args)
    ap.add_argument("--prepare", default=None, help=argparse.SUPPRESS)  # internal: convert a GGUF backbone
    a = ap.parse_args(list(argv) if argv is not None else None)
    if a.prepare:
        _prepare(a.prepare)
        print(json.dumps({"prepared": a.prepare}))
        return 0
    if a.one:
        print(json.dumps(measure_one(**json.loads(a.one))))
        return 0
    res = run(
        quick=a.quick,
        backbones=a.backbones.split(",") if a.backbones else None,
        modes=a.modes.split(",") if a.modes else None,
        n_records=a.records,
        work_dir=a.work_dir,
    )
    sys.stdout.flush()
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
