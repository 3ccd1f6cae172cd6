"""``adaptivestep bench ray``: the speed-up of 2 Ray actors over 1 on the same labelling job.

GSM8K train questions are sampled once in this process, fixed-split, and labelled exhaustively (M rollouts per
step) three times with fresh work logs: on one in-process llama.cpp engine (one thread), on a Ray pool of one
actor and on a pool of two (one CPU and one llama.cpp thread each). Wall time covers ``label_files`` only
(actors are started before). The labels of all three must be equal (a rollout is a pure function of prefix,
seed and index). Without ``--address`` a Ray with 2 CPUs is started inside this process. Human-readable lines
first; the LAST line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def run(quick: bool = False, model: str | None = "smollm2-135m", address: str | None = None) -> dict[str, Any]:
    from ..backends.base import SamplingConfig
    from ..backends.llamacpp import LlamaCppBackend
    from ..backends.ray_pool import LOCAL, RayPoolBackend, connect, disconnect
    from ..checkers import get_checker
    from ..embedded_models import resolve_model
    from ..jsonl import JsonlWriter, read_records
    from ..label import LabelConfig, label_files
    from ..records import LabeledRecord, Sample
    from ..sample import sample_problems
    from ..split import SplitParams, split_samples
    from ..tasks import load_tasks, render_prompt

    path = resolve_model(model)
    n_q, resp, roll = (3, 64, 48) if quick else (8, 192, 128)
    cfg = LabelConfig(rollouts=4, max_tokens=roll)
    opts: dict[str, Any] = {"n_ctx": 1024, "n_seq_max": 8}
    problems = load_tasks("gsm8k", split="train", limit=n_q)
    by_id = {p.id: p for p in problems}
    checker = get_checker("math")
    judge = lambda p, t: checker.check(p, t).correct  # noqa: E731
    connect(address or LOCAL, num_cpus=2)
    res: dict[str, Any] = {"bench": "ray", "model": path.name, "quick": quick, "questions": n_q,
                           "rollouts_per_step": cfg.rollouts, "rollout_max_tokens": roll,
                           "address": address or "local (2 CPUs)"}
    labels: dict[str, list[Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        d = Path(tmp)
        single = LlamaCppBackend(path, n_threads=1, **opts)
        try:
            sample_problems(single, problems, d / "samples.jsonl", n=1, seed=0,
                            render=lambda p: render_prompt(p, single), config=SamplingConfig(max_tokens=resp),
                            progress=False)
            samples = list(read_records(d / "samples.jsonl", Sample))
            with JsonlWriter(d / "splits.jsonl", fsync=False) as w:
                w.write_all(split_samples(samples, "fixed", SplitParams(k=16)))
            res["samples"] = len(samples)

            def label(name: str, backend: Any) -> None:
                t0 = time.perf_counter()
                s = label_files(backend, judge, by_id, d / "samples.jsonl", d / "splits.jsonl", d / f"{name}.jsonl",
                                cfg, progress=False)
                wall = time.perf_counter() - t0
                res[f"{name}_wall_s"] = round(wall, 1)
                res[f"{name}_tok_s"] = round(s.cost.get("generated_tokens", 0.0) / max(1e-9, wall), 2)
                labels[name] = [(r.problem_id, r.sample_index, r.hard_labels, r.rollouts)
                                for r in read_records(d / f"{name}.jsonl", LabeledRecord)]

            single.reset_cache()
            label("single_process", single)
        finally:
            single.close()
        for n in (1, 2):
            pool = RayPoolBackend("llamacpp", str(path), address=address or LOCAL, actors=n, **opts)
            try:
                label(f"ray_{n}_actors", pool)
            finally:
                pool.close()
    disconnect()
    res["ray_2_vs_1_actors_ratio"] = round(res["ray_1_actors_wall_s"] / max(1e-9, res["ray_2_actors_wall_s"]), 3)
    res["ray_1_actor_vs_single_process_ratio"] = round(
        res["single_process_wall_s"] / max(1e-9, res["ray_1_actors_wall_s"]), 3)
    res["labels_equal"] = labels["ray_1_actors"] == labels["single_process"] == labels["ray_2_actors"]
    return res


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry: ``adaptivestep bench ray [--quick] [--model M] [--address HOST:PORT]``."""
    ap = argparse.ArgumentParser(prog="adaptivestep bench ray", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 questions, 48-token rollouts (else 8, 128)")
    ap.add_argument("--model", default="smollm2-135m", help="embedded model name or .gguf file")
    ap.add_argument("--address", default=None, help="a running Ray cluster (default: a 2-CPU Ray in this process)")
    a = ap.parse_args(list(argv) if argv is not None else None)
    res = run(quick=a.quick, model=a.model, address=a.address)
    print(f"model {res['model']}  {res['samples']} samples  M={res['rollouts_per_step']}  "
          f"rollouts <= {res['rollout_max_tokens']} tokens  Ray: {res['address']}")
    for name in ("single_process", "ray_1_actors", "ray_2_actors"):
        print(f"{name:<16}: {res[f'{name}_wall_s']:7.1f} s  {res[f'{name}_tok_s']:7.2f} tok/s")
    print(f"2 actors vs 1: {res['ray_2_vs_1_actors_ratio']:.2f} x faster; 1 actor vs in-process: "
          f"{res['ray_1_actor_vs_single_process_ratio']:.2f} x; labels equal: {res['labels_equal']}")
    sys.stdout.flush()
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
