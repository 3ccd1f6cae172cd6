"""Labelling throughput on one llama.cpp engine: the streaming labelling engine vs lock-step rounds.

A row of ``adaptivestep bench throughput``: GSM8K train questions are sampled, newline-split and labelled with
the main job's savers (early stop in waves + first-error search, M rollouts), once through the backend's
``generate_stream`` (continuous batching: each finished rollout is judged and logged, and the plans' next
requests join the running batch) and once through lock-step ``generate`` rounds (the engine before streaming).
Tokens/s = rollout tokens generated / wall time of ``label_files``, so prefix evaluation, judging and work-log
writes count against it. ``*_engine_s`` is the part of that wall time spent inside the backend's stream
(decoding, prefix evaluation, sampling); the rest is judging, work-log writes and the plans. Both runs draw
the same seeded rollouts, so their labels must be equal.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any


def run(be: Any, quick: bool) -> dict[str, Any]:
    """Sample, split and label on backend ``be`` (left with its cache reset); tokens/s of both engines."""
    from ..backends.base import SamplingConfig, WithoutStreaming
    from ..checkers import get_checker
    from ..jsonl import JsonlWriter, read_records
    from ..label import LabelConfig, label_files
    from ..records import LabeledRecord, Sample
    from ..sample import sample_problems
    from ..split import SplitParams, split_samples
    from ..tasks import load_tasks, render_prompt

    n_q, resp_tokens, roll_tokens = (4, 128, 96) if quick else (10, 320, 256)
    cfg = LabelConfig(rollouts=4, max_tokens=roll_tokens, early_stop=True, wave=2, first_error_search=True)
    problems = load_tasks("gsm8k", split="train", limit=n_q)
    checker = get_checker("math")
    judge = lambda p, t: checker.check(p, t).correct  # noqa: E731
    res: dict[str, Any] = {"labelling_questions": n_q, "labelling_rollouts_per_step": cfg.rollouts,
                           "labelling_rollout_max_tokens": roll_tokens}
    labels = {}
    with tempfile.TemporaryDirectory(prefix="bench-labelling-") as tmp:
        d = Path(tmp)
        sample_problems(be, problems, d / "samples.jsonl", n=1, seed=0, render=lambda p: render_prompt(p, be),
                        config=SamplingConfig(max_tokens=resp_tokens), progress=False)
        samples = list(read_records(d / "samples.jsonl", Sample))
        with JsonlWriter(d / "splits.jsonl", fsync=False) as w:
            w.write_all(split_samples(samples, "newline", SplitParams()))
        for mode, backend in (("stream", be), ("lockstep", WithoutStreaming(be))):
            be.reset_cache()  # both start cold: the second run must not reuse the first one's prefixes
            out = d / f"labels-{mode}.jsonl"
            t0 = time.perf_counter()
            summary = label_files(backend, judge, {p.id: p for p in problems}, d / "samples.jsonl",
                                  d / "splits.jsonl", out, cfg, progress=False)
            wall = time.perf_counter() - t0
            tokens = summary.cost.get("generated_tokens", 0.0)
            engine = summary.cost.get("rollout_wall_s", 0.0)  # time inside the backend's stream
            res[f"labelling_{mode}_tok_s"] = round(tokens / max(1e-9, wall), 2)
            res[f"labelling_{mode}_tokens"] = int(tokens)
            res[f"labelling_{mode}_wall_s"] = round(wall, 1)
            res[f"labelling_{mode}_engine_s"] = round(engine, 1)
            res[f"labelling_{mode}_engine_tok_s"] = round(tokens / max(1e-9, engine), 2)
            res[f"labelling_{mode}_prefix_tokens"] = int(summary.cost.get("prefix_tokens_evaluated", 0.0))
            res[f"labelling_{mode}_rollouts"] = int(summary.cost.get("rollouts", 0.0))
            labels[mode] = [(r.problem_id, r.sample_index, r.hard_labels, r.rollouts)
                            for r in read_records(out, LabeledRecord)]
    be.reset_cache()
    res["labelling_samples"] = len(labels["stream"])
    res["labelling_stream_equals_lockstep"] = labels["stream"] == labels["lockstep"]
    return res
