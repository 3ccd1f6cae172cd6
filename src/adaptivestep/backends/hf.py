"""Hugging Face transformers backend: the *reference* implementation of :class:`~.base.Backend`.

Of the backends, this one and vLLM's import torch / transformers (so do the PRM modules and
``adaptivestep.devices``). It is written to be obviously correct, not fast: requests run one after another;
the ``n`` continuations of one request share one evaluation of the prompt (its KV cache is copied ``n``
ways) and decode together as a batch of at most ``max_batch`` rows. Use the llama.cpp backend (CPU) or vLLM (GPU) for volume; use this one to check them
and for training-side scoring.

GGUF files (the embedded models) are converted once into an ordinary HF directory under
``cache_dir()/hf/<gguf stem>`` (weights dequantized to float32 + tokenizer + generation config); later loads
read that directory and take seconds. Nothing is ever downloaded (``HF_HUB_OFFLINE=1``,
``local_files_only=True``).

Text: each token id is mapped to its exact *bytes* (byte-level BPE: ``convert_ids_to_tokens`` + the GPT-2
byte decoder; added/special tokens: their literal content; SentencePiece-style vocabularies: ``<0xHH>``
byte tokens and ``▁`` -> space), and :func:`~.base.text_offsets` decodes the accumulated bytes, so a
multi-byte character split over several tokens lands on the token that completes it. In generated text an
end-of-sequence token contributes no characters (the token, its log-prob and its offset are kept);
:meth:`HFBackend.detokenize` renders special tokens literally so that ``tokenize`` round-trips.
"""

from __future__ import annotations

import codecs
import contextlib
import copy
import functools
import inspect
import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported: never reach a hub

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache, GgufConfig
from transformers.utils import logging as hf_logging

from adaptivestep.backends.base import Generation, GenRequest, text_offsets
from adaptivestep.backends.hf_text import TokenBytes, TokenizerText, collect_eos_ids
from adaptivestep.backends.sampler import draw, log_softmax, top_alternatives
from adaptivestep.devices import resolve_device, torch_dtype
from adaptivestep.embedded_models import ModelError, cache_dir, resolve_model
from adaptivestep.seeds import rng_for

SCORE_CHUNK = 256  # rows of (positions, vocab) log-softmax computed at once in score(): bounds memory
_SOURCE_FILE = "adaptivestep_source.json"  # written into a converted directory: which GGUF it came from

# transformers draws a "Loading weights" bar on every load (and one per GGUF conversion): the user should see
# our progress, not theirs (loads of the backend and of the PRM backbone go through this module).
hf_logging.disable_progress_bar()


# ----------------------------------------------------------------------------------------------- loading


@functools.cache
def cache_arg() -> str:
    """Name of the KV-cache argument of a transformers model's ``forward``: ``cache`` in current releases,
    ``past_key_values`` before (which current releases still accept, with a deprecation warning per run).

    >>> cache_arg() in ("cache", "past_key_values")
    True
    """
    from transformers import LlamaModel  # any decoder: the argument is named the same in every model

    return "cache" if "cache" in inspect.signature(LlamaModel.forward).parameters else "past_key_values"


def _source_stamp(gguf: Path) -> dict[str, Any]:
    st = gguf.stat()
    return {"gguf": str(gguf.resolve()), "size": st.st_size}


def converted_dir(gguf: str | Path) -> Path:
    """Where :func:`gguf_to_hf` puts the HF copy of ``gguf``: ``cache_dir()/hf/<file stem>``."""
    return cache_dir() / "hf" / Path(gguf).stem


def _is_current(out: Path, gguf: Path) -> bool:
    stamp = out / _SOURCE_FILE
    if not (out / "config.json").exists() or not stamp.exists():
        return False
    try:
        return json.loads(stamp.read_text()).get("size") == gguf.stat().st_size
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def _quiet_gguf_reader() -> Iterator[None]:
    """transformers' GGUF reader draws its own tqdm bar per tensor (not behind ``disable_progress_bar``): the
    user sees our progress, not 291 lines of it in a log."""
    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        yield
        return
    bar = getattr(gguf_utils, "tqdm", None)
    gguf_utils.tqdm = lambda it, *a, **k: it  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if bar is not None:
            gguf_utils.tqdm = bar  # type: ignore[attr-defined]


def gguf_to_hf(gguf: str | Path, out: str | Path | None = None) -> Path:
    """Convert a GGUF file once into a Hugging Face model directory and return that directory.

    transformers dequantizes the GGUF weights to float32; ``save_pretrained`` refuses such a GGUF-loaded
    model, so its state dict is copied into a fresh ``from_config`` model, which is saved with the
    tokenizer (chat template included) and the generation config. The directory is written under a
    temporary name and renamed into place, so a killed or concurrent conversion never leaves a half
    directory. An existing conversion of a file of the same size is reused.

    gguf: path of a ``.gguf`` file. out: target directory (default :func:`converted_dir`).
    Cost: one full load and save of the fp32 model (time and peak RAM measured for the 0.5B:
    ``docs/benchmarks.md``); reuse is free.
    """
    gguf = Path(gguf)
    if not gguf.is_file():
        raise ModelError(f"GGUF file {gguf} does not exist")
    out = Path(out) if out is not None else converted_dir(gguf)
    if _is_current(out, gguf):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    kw: dict[str, Any] = {"gguf_file": gguf.name, "local_files_only": True}
    try:
        with _quiet_gguf_reader():
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), **kw)
            src = AutoModelForCausalLM.from_pretrained(
                str(gguf.parent), dtype=torch.float32, quantization_config=GgufConfig(dequantize=True), **kw
            )
    except Exception as e:  # transformers raises many types (ValueError, KeyError, OSError, RuntimeError)
        raise ModelError(f"cannot load GGUF file {gguf} with transformers: {type(e).__name__}: {e}") from e
    config = copy.deepcopy(src.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = str(out)
    # built on the meta device and given src's tensors (assign=True): no second copy of the weights in RAM.
    # Its non-persistent buffers (rotary tables) stay on meta; dst is only saved, and reloading rebuilds them.
    with torch.device("meta"):
        dst = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = dst.load_state_dict(src.state_dict(), strict=False, assign=True)
    missing = [k for k in missing if k not in _tied_keys(dst)]
    if missing or unexpected:
        raise ModelError(
            f"converting {gguf}: weights do not match the config (missing {missing[:5]}, "
            f"unexpected {unexpected[:5]})"
        )
    dst.generation_config = src.generation_config
    del src
    try:
        dst.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        (tmp / _SOURCE_FILE).write_text(json.dumps({**_source_stamp(gguf), "converted_at": time.time()}))
        if out.exists():  # stale copy (different source file) or a concurrent writer finished first
            if _is_current(out, gguf):
                shutil.rmtree(tmp)
                return out
            old = out.parent / f".{out.name}.old{os.getpid()}"
            os.replace(out, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _tied_keys(model: Any) -> set[str]:
    keys = getattr(model, "_tied_weights_keys", None) or {}
    return set(keys) if not isinstance(keys, dict) else set(keys) | set(keys.values())


def load_hf_model(model: str | Path, dtype: str = "float32", device: str = "cpu") -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` in eval mode on ``device``.

    model: a local HF model directory, a ``.gguf`` file (converted once with :func:`gguf_to_hf`), or an
        embedded model name (see ``adaptivestep.embedded_models``). dtype: ``float32`` | ``bfloat16`` | ``float16``.
    Raises :class:`ModelError` when nothing loadable is there.

    >>> model, tok = load_hf_model("smollm2-135m")  # doctest: +SKIP
    """
    dtype_ = torch_dtype(dtype)
    path = resolve_model(str(model))
    hf_dir = gguf_to_hf(path) if path.is_file() else path
    try:
        tok = AutoTokenizer.from_pretrained(str(hf_dir), local_files_only=True)
        net = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=dtype_, local_files_only=True)
    except Exception as e:
        raise ModelError(f"cannot load Hugging Face model from {hf_dir}: {type(e).__name__}: {e}") from e
    return net.to(device).eval(), tok  # type: ignore[arg-type]  # transformers types .to() oddly


# ------------------------------------------------------------------------------------------- the backend


class HFBackend(TokenizerText):
    """:class:`~.base.Backend` on a transformers causal LM (the reference backend; see the module doc).

    model: HF directory, ``.gguf`` file or embedded name (as :func:`load_hf_model`). dtype: weights dtype.
    device: torch device (default: cuda if available, else cpu). max_batch: most continuations decoded
    together; more are decoded in chunks that each start from a copy of the prompt's KV cache.
    threads: if given, ``torch.set_num_threads(threads)`` (process-wide). On a CPU shared with other busy
    processes, 1 thread can be many times faster than OpenMP threads waiting on each other.

    Cost reporting: ``prompt_tokens_evaluated`` is the request's prompt length on its first continuation
    and 0 on the others (the prompt is run through the model once per request), so summing the field over
    all generations gives the prompt tokens actually evaluated.
    """

    name = "hf"

    def __init__(
        self,
        model: str | Path,
        dtype: str = "float32",
        device: str | None = None,
        max_batch: int = 8,
        threads: int | None = None,
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if threads is not None:
            if threads < 1:
                raise ValueError(f"threads must be >= 1, got {threads}")
            torch.set_num_threads(threads)
        path = resolve_model(str(model))  # model_id = the weights' path, as the llama.cpp backend reports it
        net, tok = load_hf_model(path, dtype=dtype, device=resolve_device(device))
        self._setup(net, tok, str(path), max_batch)

    @classmethod
    def from_loaded(cls, model: Any, tokenizer: Any, model_id: str, max_batch: int = 8) -> HFBackend:
        """Wrap an already loaded model and tokenizer (e.g. one being trained) without reloading."""
        self = cls.__new__(cls)
        self._setup(model, tokenizer, model_id, max_batch)
        return self

    def _setup(self, model: Any, tokenizer: Any, model_id: str, max_batch: int) -> None:
        self.model = model.eval()
        self.tok = tokenizer
        self.model_id = model_id
        self.max_batch = max_batch
        self.device = next(model.parameters()).device
        self.token_bytes = TokenBytes(tokenizer)
        self.eos_ids = self._eos_ids()

    def _eos_ids(self) -> frozenset[int]:
        return collect_eos_ids((getattr(self.model, "generation_config", None), self.model.config), self.tok)

    # -- model calls ---------------------------------------------------------------------------------

    def _ids(self, rows: Sequence[Sequence[int]]) -> torch.Tensor:
        return torch.tensor(rows, dtype=torch.long, device=self.device)

    @torch.inference_mode()
    def next_logprobs(self, ids: Sequence[int]) -> np.ndarray:
        if len(ids) == 0:
            raise ValueError("next_logprobs needs at least one token of context")
        out = self.model(input_ids=self._ids([list(ids)]), use_cache=False, logits_to_keep=1)
        return log_softmax(out.logits[0, -1].float().cpu().numpy())  # (V,)

    @torch.inference_mode()
    def score(self, prompt_ids: Sequence[int], token_ids: Sequence[int]) -> list[float]:
        if len(prompt_ids) == 0:
            raise ValueError("score needs a non-empty prompt (the first token has no context otherwise)")
        t = len(token_ids)
        if t == 0:
            return []
        ids = list(prompt_ids) + list(token_ids)
        # logits at positions L-1 .. L+T-2 predict token_ids; the last position predicts nothing
        logits = self.model(input_ids=self._ids([ids]), use_cache=False, logits_to_keep=t + 1).logits[0, :-1]
        target = self._ids([list(token_ids)])[0]
        out: list[float] = []
        for a in range(0, t, SCORE_CHUNK):  # (chunk, V) in float64, as sampler.log_softmax does
            lp = torch.log_softmax(logits[a : a + SCORE_CHUNK].double(), dim=-1)
            out += lp.gather(1, target[a : a + SCORE_CHUNK, None])[:, 0].cpu().tolist()
        return out

    def generate(self, requests: Sequence[GenRequest]) -> list[list[Generation]]:
        return [self._generate_request(r) for r in requests]

    @torch.inference_mode()
    def _generate_request(self, req: GenRequest) -> list[Generation]:
        if len(req.prompt_ids) == 0:
            raise ValueError("generate needs a non-empty prompt_ids")
        if req.n < 1:
            raise ValueError(f"n must be >= 1, got {req.n}")
        cache = DynamicCache(config=self.model.config)
        out = self.model(
            input_ids=self._ids([list(req.prompt_ids)]),
            **{cache_arg(): cache},
            use_cache=True,
            logits_to_keep=1,
        )
        first = log_softmax(out.logits[0, -1].float().cpu().numpy())  # (V,) shared by all continuations
        gens: list[Generation] = []
        for a in range(0, req.n, self.max_batch):
            rows = list(range(a, min(req.n, a + self.max_batch)))
            last_chunk = rows[-1] == req.n - 1
            gens += self._decode(cache if last_chunk else copy.deepcopy(cache), first, rows, req)
        gens[0].prompt_tokens_evaluated = len(req.prompt_ids)
        return gens

    def _decode(self, cache: Any, first: np.ndarray, js: list[int], req: GenRequest) -> list[Generation]:
        """Continuations ``js`` of ``req`` from the prompt's cache (batch 1) and its next-token log-probs."""
        cfg = req.config
        k = len(js)
        rngs = [rng_for(req.seed, req.first_index + j) for j in js]
        toks: list[list[int]] = [[] for _ in js]
        lps: list[list[float]] = [[] for _ in js]
        tops: list[list[list[list[float]]]] = [[] for _ in js]
        # incremental 'replace' decoding: sees exactly the final text, holding back an incomplete character
        decoders = [codecs.getincrementaldecoder("utf-8")(errors="replace") for _ in js]
        texts = [""] * k
        reason = ["length"] * k
        max_stop = max((len(s) for s in cfg.stop), default=0)
        if k > 1:
            cache.batch_repeat_interleave(k)
        active = list(range(k))  # cache row r holds continuation active[r]
        rows_lp = np.broadcast_to(first, (k, first.shape[0]))
        for step in range(cfg.max_tokens):
            still: list[int] = []
            for r, i in enumerate(active):
                lp = rows_lp[r]
                t = draw(lp, rngs[i], temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k)
                toks[i].append(t)
                lps[i].append(float(lp[t]))
                if cfg.top_logprobs:
                    tops[i].append(top_alternatives(lp, cfg.top_logprobs))
                if self.is_eos(t):
                    reason[i] = "stop"
                    continue
                if cfg.stop:
                    start = max(0, len(texts[i]) - max_stop + 1)  # a new match must end in the new chars
                    texts[i] += decoders[i].decode(self.token_bytes(t))
                    tail = texts[i][start:]
                    if any(s in tail for s in cfg.stop):
                        reason[i] = "stop"
                        continue
                still.append(r)
            if not still or step == cfg.max_tokens - 1:
                break
            if len(still) < len(active):
                cache.batch_select_indices(torch.tensor(still, device=self.device))
                active = [active[r] for r in still]
            out = self.model(
                input_ids=self._ids([[toks[i][-1]] for i in active]), **{cache_arg(): cache}, use_cache=True
            )
            rows_lp = log_softmax(out.logits[:, -1].float().cpu().numpy())  # (rows, V)
        gens = []
        for i in range(k):
            text, ends = text_offsets(lambda ids: self.token_bytes.join(ids, skip=self.is_eos), toks[i])
            gens.append(
                Generation(
                    token_ids=toks[i],
                    logprobs=lps[i],
                    finish_reason=reason[i],
                    text=text,
                    token_end_chars=ends,
                    top_logprobs=tops[i] if cfg.top_logprobs else None,
                )
            )
        return gens

    def close(self) -> None:
        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
