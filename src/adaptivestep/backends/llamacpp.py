"""llama.cpp backend (the CPU default): our own sampling loop over raw logits, batched over sequences.

The only module that imports ``llama_cpp``. It drives the low-level API directly:

- **Exact log-probs.** Each step reads the last-token logits (``llama_get_logits_ith``), takes
  :func:`adaptivestep.backends.sampler.log_softmax` (temperature 1) and draws with
  :func:`adaptivestep.backends.sampler.draw` from continuation ``j``'s own stream
  :func:`adaptivestep.seeds.rng_for` ``(seed, first_index + j)``. No ``logits_all``, no
  ``create_completion(logprobs=...)``.
- **Batched decoding.** Every running continuation (of one or several requests) is one llama.cpp sequence;
  one ``llama_decode`` advances several of them by a token each.
- **Prefix evaluated once.** The ``n`` continuations of a request evaluate the prompt on one sequence, copy
  its cache to the others (``llama_memory_seq_cp``) and draw their first tokens from the same logits row.
  Only the first continuation is charged ``prompt_tokens_evaluated``.
- **KV reuse across calls.** The tokens held by each sequence are tracked; a new prompt takes over the
  longest cached common prefix (from any sequence, truncated with ``llama_memory_seq_rm``) and only its
  suffix is run through the model.

Three properties of the llama.cpp build this targets (0.3.36) shape the design; all are checked by
``tests/integration/test_llamacpp.py``:

1. *Cells must stay in position order.* A token written into a freed cell *below* cells of its own sequence
   gets wrong attention (its logits are visibly off). So each sequence lives in its own KV stream
   (``kv_unified = False``), where it only ever grows at the end or is cut back from the end: its cells stay
   ``[0, len)`` in order. The price: the cache holds ``n_seq_max x n_ctx`` cells (Qwen2.5-0.5B: 12 KiB per
   cell) and a prefix copy between sequences copies a whole stream (tens of MB, milliseconds).
2. *Kernels change with the row count.* From 8 rows per ``llama_decode`` (4 with repacked weights) ggml
   switches matmul kernels whose rounding differs (by how much: ``docs/benchmarks.md``). With ``exact=True``
   (default) weight repacking is off and every call holds at most ``EXACT_ROWS`` tokens.
3. *Attention changes with the batch.* Without flash attention, a chunk of several prompt tokens gets other
   attention rounding than the same tokens one by one. With flash attention on, ggml
   splits the keys of a *lone* query (one sequence, one token in the call) across threads once the cache
   view reaches 512 cells, so a sequence past 256 tokens got other logits alone than beside other sequences
   (a resumed labelling job drew different rollouts). That split only happens when K and V have the same
   type, so ``exact=True`` turns flash attention on and stores V as bfloat16 (K stays float16; V is then
   accumulated in float32). How far this moves log-probs from the stock f16/f16 cache, and at what decode
   speed, was measured: see ``docs/benchmarks.md``.

With ``exact=True`` every logit is then computed by the same kernels whatever the batching, chunking, thread
count or cache history: generated log-probs equal :meth:`score` bit for bit, and a seeded continuation draws
the same tokens alone, in any batch, or in a resumed job (``tests/integration/test_llamacpp.py`` and the
labelling kill/resume test check this). ``exact=False`` keeps llama.cpp's defaults (full batches, repacked
weights, f16 cache): faster prompt evaluation and wide batches, without that invariance.

Not thread-safe: one backend per thread/process.
"""

from __future__ import annotations

import ctypes
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import llama_cpp as lc
import numpy as np

from adaptivestep.backends.base import Finished, Generation, GenRequest, SamplingConfig, collect, text_offsets
from adaptivestep.backends.sampler import draw, log_softmax, top_alternatives
from adaptivestep.seeds import rng_for

GGML_TYPE_BF16 = 30  # ggml.h's enum value; llama_cpp does not export the name

# Exact mode: most tokens per llama_decode call. Up to 7 rows ggml's CPU matmul computes each row with the
# same one-row kernel (checked bit for bit on one x86 AVX-512 build, see docs/benchmarks.md; on another build
# LlamaCppBackend.check_exact tells whether it still holds).
EXACT_ROWS = 7

_VERBOSE = False
_BACKEND_READY = False


_GGML_LOG_ERROR, _GGML_LOG_CONT = 4, 5  # ggml.h's ggml_log_level (3 is WARN: the vocab's tokenizer notes)
_last_shown = False  # whether the message a CONT line continues was shown


@lc.llama_log_callback
def _log_callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    # errors always reach the user; warnings (e.g. llama.cpp's notes on a GGUF's tokenizer, which we handle)
    # and info only when a backend was opened with verbose=True
    global _last_shown
    show = _VERBOSE or level == _GGML_LOG_ERROR or (level == _GGML_LOG_CONT and _last_shown)
    if level != _GGML_LOG_CONT:
        _last_shown = show
    if show:
        os.write(2, text)


def _init_backend(verbose: bool) -> None:
    global _VERBOSE, _BACKEND_READY
    _VERBOSE = verbose
    lc.llama_log_set(_log_callback, ctypes.c_void_p(0))
    if not _BACKEND_READY:
        lc.llama_backend_init()
        _BACKEND_READY = True


@dataclass
class RawRun:
    """Result of :meth:`LlamaCppBackend.raw_greedy`: greedy tokens and the seconds spent decoding them."""

    token_ids: list[int]
    decode_seconds: float


@dataclass
class _Cont:
    """One continuation being generated."""

    req: int
    j: int
    prompt: tuple[int, ...]
    cfg: SamplingConfig
    rng: np.random.Generator
    stops: tuple[bytes, ...]
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    tops: list[list[list[float]]] | None = None
    text: bytes = b""  # only kept when there are stop strings
    evaluated: int = 0
    finish: str | None = None


def cpu_has_amx(cpuinfo: str | None = None) -> bool:
    """Whether the CPU has Intel AMX tiles (the ``amx_tile`` flag of Linux's ``/proc/cpuinfo``; False where
    that file is absent). ``cpuinfo``: the file's text, for tests.

    >>> cpu_has_amx("flags : fpu avx512f amx_bf16 amx_tile amx_int8")
    True
    >>> cpu_has_amx("flags : fpu avx2")
    False
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return False
    return any(
        line.split(":", 1)[0].strip() == "flags" and "amx_tile" in line.split(":", 1)[-1].split()
        for line in cpuinfo.splitlines()
    )


def _lcp(a: Sequence[int], b: Sequence[int], cap: int) -> int:
    """Length of the common prefix of ``a`` and ``b``, at most ``cap``.

    >>> _lcp([1, 2, 3], [1, 2, 4], 10)
    2
    """
    n = min(len(a), len(b), cap)
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class LlamaCppBackend:
    """A GGUF model on llama.cpp implementing :class:`adaptivestep.backends.base.Backend`.

    model_path: GGUF file.
    n_ctx: most tokens of one sequence (prompt + generated); continuations reaching it end with "length".
        Rounded up to a multiple of 256. The KV cache holds ``n_seq_max`` such sequences (defaults with
        Qwen2.5-0.5B: 64k cells = 0.8 GB; measured process RSS: ``docs/benchmarks.md``).
    n_threads: CPU threads (default ``os.cpu_count()``). On a CPU shared with other busy processes use 1:
        ggml's threads spin at barriers and two of them can run far slower than one when oversubscribed
        (measured: ``docs/benchmarks.md``).
    n_batch: most tokens per ``llama_decode`` call when ``exact=False`` (must be >= ``n_seq_max``).
    n_seq_max: most continuations decoded together (and prefixes kept for reuse).
    exact: logits independent of batching, chunking and threads (see the module docstring); False = llama.cpp
        defaults, faster, not invariant. One default is left off: on a CPU with Intel AMX, ggml's AMX weight
        buffer (one of the "extra" buffer types) crashes ``llama_decode`` with a segmentation fault in this
        build (seen with both embedded models; llama.cpp issue 20824 reports a crash in
        ``ggml_backend_amx_mul_mat``), so there ``exact=False`` keeps plain weights (``extra_bufts`` False).
    n_gpu_layers: layers offloaded to a GPU build of llama.cpp (0 = CPU).
    """

    name = "llamacpp"
    _model = None  # class defaults: close() works even if __init__ failed early
    _ctx = None
    _batch: lc.llama_batch | None = None

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_batch: int = 512,
        n_seq_max: int = 16,
        verbose: bool = False,
        exact: bool = True,
        n_gpu_layers: int = 0,
    ) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"LlamaCppBackend: model file {path} does not exist")
        if n_ctx < 16 or not 1 <= n_seq_max <= 256 or n_batch < n_seq_max:
            raise ValueError(
                f"LlamaCppBackend: need n_ctx >= 16, 1 <= n_seq_max <= 256 and n_batch >= n_seq_max; got "
                f"n_ctx={n_ctx}, n_batch={n_batch}, n_seq_max={n_seq_max}"
            )
        self.model_id = str(path)
        _init_backend(verbose)

        mparams = lc.llama_model_default_params()
        mparams.n_gpu_layers = n_gpu_layers
        # repacked weights switch kernels from 4 rows on; AMX's crashes (see the class docstring)
        self.extra_bufts = not exact and not cpu_has_amx()
        mparams.use_extra_bufts = self.extra_bufts
        self._model = lc.llama_model_load_from_file(str(path).encode(), mparams)
        if not self._model:
            raise RuntimeError(f"LlamaCppBackend: llama.cpp could not load {path} (not a GGUF model?)")
        self._vocab = lc.llama_model_get_vocab(self._model)
        self.n_vocab = int(lc.llama_vocab_n_tokens(self._vocab))

        threads = n_threads or os.cpu_count() or 1
        per_seq = -(-n_ctx // 256) * 256
        cparams = lc.llama_context_default_params()
        cparams.n_ctx = per_seq * n_seq_max
        cparams.n_batch = n_batch
        cparams.n_ubatch = n_batch
        cparams.n_seq_max = n_seq_max
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        cparams.kv_unified = False  # one stream per sequence: cells stay in position order
        if exact:  # property 3 of the module docstring
            cparams.flash_attn_type = lc.LLAMA_FLASH_ATTN_TYPE_ENABLED
            cparams.type_v = GGML_TYPE_BF16
        cparams.no_perf = True
        self._ctx = lc.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            self.close()
            raise RuntimeError(
                f"LlamaCppBackend: could not create a context (n_ctx={n_ctx} x n_seq_max={n_seq_max} cells)"
            )
        self.n_ctx = int(lc.llama_n_ctx_seq(self._ctx))
        self.n_batch = int(lc.llama_n_batch(self._ctx))
        self.n_seq_max = int(lc.llama_n_seq_max(self._ctx))
        self.n_threads = threads
        self.exact = exact
        self.rows_per_decode = min(EXACT_ROWS, self.n_batch) if exact else self.n_batch
        self._mem = lc.llama_get_memory(self._ctx)

        self._batch = lc.llama_batch_init(self.n_batch, 0, 1)
        b = self._batch
        self._b_tok = np.ctypeslib.as_array(b.token, shape=(self.n_batch,))
        self._b_pos = np.ctypeslib.as_array(b.pos, shape=(self.n_batch,))
        self._b_logits = np.ctypeslib.as_array(b.logits, shape=(self.n_batch,))
        np.ctypeslib.as_array(b.n_seq_id, shape=(self.n_batch,))[:] = 1

        self._cache: list[list[int]] = [[] for _ in range(self.n_seq_max)]  # tokens each sequence holds
        self._busy: dict[int, _Cont] = {}  # sequence -> running continuation (inside generate only)
        self._piece: dict[int, bytes] = {}
        self._eog: dict[int, bool] = {}
        self._bos = int(lc.llama_vocab_bos(self._vocab))
        self._add_bos = bool(lc.llama_vocab_get_add_bos(self._vocab)) and self._bos >= 0
        self._template: object | None = None

    # ------------------------------------------------------------------ tokens and text

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text``; special tokens in the text are parsed. BOS is added only when the model
        requires one (GGUF ``add_bos``; not Qwen) and the text does not already start with it."""
        data = text.encode("utf-8")
        cap = len(data) + 8
        buf = (lc.llama_token * cap)()
        n = lc.llama_tokenize(self._vocab, data, len(data), buf, cap, False, True)
        if n < 0:
            cap = -n
            buf = (lc.llama_token * cap)()
            n = lc.llama_tokenize(self._vocab, data, len(data), buf, cap, False, True)
            if n < 0:
                raise RuntimeError(f"llama.cpp failed to tokenize {text[:60]!r}...")
        ids = list(buf[:n])
        if self._add_bos and (not ids or ids[0] != self._bos):
            ids.insert(0, self._bos)
        return ids

    def _piece_bytes(self, token_id: int) -> bytes:
        p = self._piece.get(token_id)
        if p is None:
            size = 64
            buf = ctypes.create_string_buffer(size)
            n = lc.llama_token_to_piece(self._vocab, token_id, buf, size, 0, True)
            if n < 0:
                size = -n
                buf = ctypes.create_string_buffer(size)
                n = lc.llama_token_to_piece(self._vocab, token_id, buf, size, 0, True)
            p = buf.raw[: max(n, 0)]
            self._piece[token_id] = p
        return p

    def _check_ids(self, ids: Sequence[int], what: str) -> None:
        for t in ids:
            if not 0 <= int(t) < self.n_vocab:
                raise ValueError(f"{what}: token id {t} outside the vocabulary [0, {self.n_vocab})")

    def detokenize(self, ids: Sequence[int]) -> str:
        """Text of ``ids``, special tokens rendered (so ``tokenize(detokenize(ids))`` round-trips)."""
        self._check_ids(ids, "detokenize")
        return b"".join(self._piece_bytes(int(t)) for t in ids).decode("utf-8", errors="replace")

    def _response_bytes(self, ids: Sequence[int]) -> bytes:
        # generated text: end-of-generation tokens render as nothing (they are kept in token_ids)
        return b"".join(b"" if self.is_eos(t) else self._piece_bytes(t) for t in ids)

    def is_eos(self, token_id: int) -> bool:
        """Whether ``token_id`` ends generation (any end-of-generation token of the vocab, e.g. Qwen's
        ``<|im_end|>`` and ``<|endoftext|>``)."""
        r = self._eog.get(token_id)
        if r is None:
            r = self._eog[token_id] = bool(lc.llama_vocab_is_eog(self._vocab, token_id))
        return r

    def metadata(self, key: str) -> str | None:
        """A GGUF metadata value as a string (None when absent)."""
        size = 1 << 16
        while True:
            buf = ctypes.create_string_buffer(size)
            n = lc.llama_model_meta_val_str(self._model, key.encode(), buf, size)
            if n < 0:
                return None
            if n < size:
                return buf.value.decode("utf-8", errors="replace")
            size = n + 1

    def chat_prompt(self, user: str, system: str | None = None) -> str:
        """The GGUF's own chat template (``tokenizer.chat_template``) rendered with jinja2 for one user turn,
        ending with the assistant header (``add_generation_prompt=True``)."""
        if self._template is None:
            source = self.metadata("tokenizer.chat_template")
            if not source:
                raise ValueError(
                    f"{self.model_id}: the GGUF has no tokenizer.chat_template; build the prompt yourself"
                )
            import jinja2
            import jinja2.ext
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            env = ImmutableSandboxedEnvironment(
                loader=jinja2.BaseLoader(),
                trim_blocks=True,
                lstrip_blocks=True,
                extensions=[jinja2.ext.loopcontrols],
            )
            self._template = env.from_string(source)

        def raise_exception(message: str) -> None:
            raise ValueError(f"{self.model_id}: chat template: {message}")

        messages = ([{"role": "system", "content": system}] if system is not None else []) + [
            {"role": "user", "content": user}
        ]
        eos = int(lc.llama_vocab_eos(self._vocab))
        return self._template.render(  # type: ignore[attr-defined]
            messages=messages,
            add_generation_prompt=True,
            bos_token=self.detokenize([self._bos]) if self._bos >= 0 else "",
            eos_token=self.detokenize([eos]) if eos >= 0 else "",
            raise_exception=raise_exception,
        )

    # ------------------------------------------------------------------ KV cache management

    def reset_cache(self) -> None:
        """Forget every cached prefix (the next call evaluates its prompts from scratch)."""
        lc.llama_memory_clear(self._mem, False)  # metadata only: stale data is never read
        self._cache = [[] for _ in range(self.n_seq_max)]

    def _drop(self, seq: int) -> None:
        lc.llama_memory_seq_rm(self._mem, seq, -1, -1)
        self._cache[seq] = []

    def _take_prefix(self, seq: int, ids: Sequence[int], cap: int) -> int:
        """Make ``seq`` hold the longest cached prefix of ``ids`` (at most ``cap`` tokens); return its length.

        Only cuts from the end or copies a whole stream, so the sequence's cells stay in position order.
        """
        best, src = _lcp(self._cache[seq], ids, cap), seq
        for s in range(self.n_seq_max):
            if s != seq:
                n = _lcp(self._cache[s], ids, cap)
                if n > best:
                    best, src = n, s
        if src != seq:
            self._drop(seq)
            lc.llama_memory_seq_cp(self._mem, src, seq, -1, -1)  # across streams: the whole sequence
            self._cache[seq] = list(self._cache[src])
        if len(self._cache[seq]) > best:
            if not lc.llama_memory_seq_rm(self._mem, seq, best, -1):
                self._drop(seq)
                return 0
            del self._cache[seq][best:]
        return best

    def _decode(self, n: int) -> None:
        """Run the first ``n`` entries of the batch."""
        self._batch.n_tokens = n  # type: ignore[union-attr]
        ret = lc.llama_decode(self._ctx, self._batch)
        if ret != 0:
            raise RuntimeError(
                f"llama_decode failed with code {ret}"
                + (" (no KV slot: a sequence outgrew n_ctx)" if ret == 1 else "")
            )

    def _logits_row(self, i: int) -> np.ndarray:
        ptr = lc.llama_get_logits_ith(self._ctx, i)
        if not ptr:
            raise RuntimeError(f"llama.cpp returned no logits for batch entry {i}")
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def _eval(
        self, seq: int, ids: Sequence[int], logits_from: int, on_row: Callable[[int, np.ndarray], None]
    ) -> int:
        """Make ``seq`` hold ``ids``, running what is not cached through the model; ``on_row(pos, logits)``
        gets the raw logits (float32 view, shape (V,), valid until the next decode) of every position
        >= ``logits_from``. Returns the number of tokens run through the model."""
        if not 0 <= logits_from < len(ids):
            raise ValueError(f"logits_from={logits_from} outside [0, {len(ids)})")
        if len(ids) > self.n_ctx:
            raise ValueError(f"{len(ids)} tokens do not fit the context (n_ctx={self.n_ctx} per sequence)")
        start = self._take_prefix(seq, ids, logits_from)
        cache = self._cache[seq]
        step = self.rows_per_decode
        for c0 in range(start, len(ids), step):
            c1 = min(c0 + step, len(ids))
            n = c1 - c0
            self._b_tok[:n] = ids[c0:c1]
            self._b_pos[:n] = np.arange(c0, c1)
            self._b_logits[:n] = 0
            lo = max(logits_from, c0)
            self._b_logits[lo - c0 : n] = 1
            for i in range(n):
                self._batch.seq_id[i][0] = seq  # type: ignore[union-attr]
            self._decode(n)
            cache.extend(ids[c0:c1])
            for p in range(lo, c1):
                on_row(p, self._logits_row(p - c0))
        return len(ids) - start

    def _free_seq(self, ids: Sequence[int]) -> int:
        """An idle sequence, preferring the one whose cache shares the longest prefix with ``ids``."""
        idle = [s for s in range(self.n_seq_max) if s not in self._busy]
        return max(idle, key=lambda s: (_lcp(self._cache[s], ids, len(ids)), -len(self._cache[s])))

    def check_exact(self, text: str = "The quick brown fox jumps over the lazy dog, then naps.") -> float:
        """Largest |difference| between logits computed one token per ``llama_decode`` and in chunks of
        ``rows_per_decode`` tokens: 0.0 means the batch shape does not change results on this machine.

        Uses (and empties) the last sequence.
        """
        ids = self.tokenize(text)
        seq = self.n_seq_max - 1
        if seq in self._busy:
            raise RuntimeError("check_exact cannot run during generate")
        chunked: list[np.ndarray] = []
        self._drop(seq)
        self._eval(seq, ids, 0, lambda p, row: chunked.append(row.copy()))
        self._drop(seq)
        single: list[np.ndarray] = []
        for k in range(1, len(ids) + 1):
            self._eval(seq, ids[:k], k - 1, lambda p, row: single.append(row.copy()))
        self._drop(seq)
        return float(max(np.abs(a - b).max() for a, b in zip(chunked, single)))

    # ------------------------------------------------------------------ scoring

    def next_logprobs(self, ids: Sequence[int]) -> np.ndarray:
        """Temperature-1 log-probabilities (float64, shape (V,)) of the token after ``ids``."""
        if not ids:
            raise ValueError("next_logprobs: ids must not be empty")
        self._check_ids(ids, "next_logprobs")
        out: list[np.ndarray] = []
        self._eval(
            self._free_seq(ids),
            [int(t) for t in ids],
            len(ids) - 1,
            lambda p, row: out.append(log_softmax(row)),
        )
        return out[0]

    def score(self, prompt_ids: Sequence[int], token_ids: Sequence[int]) -> list[float]:
        """Teacher-forced temperature-1 log p of each of ``token_ids`` after ``prompt_ids`` (one pass, logits
        requested only for the scored positions)."""
        if not prompt_ids:
            raise ValueError("score: prompt_ids must not be empty")
        if not token_ids:
            return []
        ids = [int(t) for t in (*prompt_ids, *token_ids)]
        self._check_ids(ids, "score")
        p0 = len(prompt_ids)
        out: list[float] = []

        def take(pos: int, row: np.ndarray) -> None:
            out.append(float(log_softmax(row)[ids[pos + 1]]))  # the same arithmetic as generation

        # logits of the last token are not needed: evaluate up to it only
        self._eval(self._free_seq(ids), ids[:-1], p0 - 1, take)
        return out

    # ------------------------------------------------------------------ generation

    def generate(self, requests: Sequence[GenRequest]) -> list[list[Generation]]:
        """``request.n`` continuations of each request, decoded together (see the module docstring)."""
        reqs = list(requests)
        return collect(self.generate_stream(reqs), reqs)

    def _check_request(self, r: int, req: GenRequest) -> None:
        if not req.prompt_ids:
            raise ValueError(f"request {r}: empty prompt_ids")
        if len(req.prompt_ids) >= self.n_ctx:
            raise ValueError(
                f"request {r}: prompt of {len(req.prompt_ids)} tokens is too long for the context "
                f"(n_ctx={self.n_ctx} per sequence; at least one token must be left to generate)"
            )
        if req.n < 1:
            raise ValueError(f"request {r}: n must be >= 1, got {req.n}")
        self._check_ids(req.prompt_ids, f"request {r}")

    def generate_stream(self, requests: list[GenRequest]) -> Iterator[Finished]:
        """Continuous batching (:meth:`adaptivestep.backends.base.StreamingBackend.generate_stream`): a sequence
        that finishes is yielded at once and its slot goes to the next waiting continuation, including those of
        requests appended to ``requests`` meanwhile. One stream at a time per backend."""
        queue: deque[_Cont] = deque()
        taken = 0
        finished: deque[Finished] = deque()
        prompt_lp: dict[int, np.ndarray] = {}  # request -> log-probs after its prompt, while some still wait
        self._busy = {}
        try:
            while True:
                for r in range(taken, len(requests)):
                    req = requests[r]
                    self._check_request(r, req)
                    queue.extend(
                        _Cont(
                            req=r,
                            j=j,
                            prompt=tuple(int(t) for t in req.prompt_ids),
                            cfg=req.config,
                            rng=rng_for(req.seed, req.first_index + j),
                            stops=tuple(s.encode("utf-8") for s in req.config.stop if s),
                            tops=[] if req.config.top_logprobs else None,
                        )
                        for j in range(req.n)
                    )
                taken = len(requests)
                while queue and len(self._busy) < self.n_seq_max:
                    self._admit(queue, prompt_lp, finished)
                if finished:
                    while finished:  # the caller may append requests here: admitted before the next step
                        yield finished.popleft()
                    continue
                if not self._busy:
                    if taken == len(requests) and not queue:
                        return
                    continue
                self._step(finished)
        finally:
            self._busy = {}

    def _finish(self, c: _Cont, done: deque[Finished]) -> None:
        text, ends = text_offsets(self._response_bytes, c.tokens)
        done.append((c.req, c.j, Generation(
            token_ids=c.tokens,
            logprobs=c.logprobs,
            finish_reason=c.finish or "length",
            text=text,
            token_end_chars=ends,
            top_logprobs=c.tops,
            prompt_tokens_evaluated=c.evaluated,
        )))

    def _push(self, c: _Cont, lp: np.ndarray) -> None:
        """Draw ``c``'s next token from temperature-1 log-probs ``lp`` (shape (V,)) and update its state."""
        cfg = c.cfg
        t = draw(lp, c.rng, temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k)
        c.tokens.append(t)
        c.logprobs.append(float(lp[t]))
        if c.tops is not None:
            c.tops.append(top_alternatives(lp, cfg.top_logprobs))
        if self.is_eos(t):
            c.finish = "stop"
            return
        if c.stops:
            piece = self._piece_bytes(t)
            c.text += piece
            # a stop string completed by this token lies within its length + the piece's
            tail = c.text[-(max(map(len, c.stops)) + len(piece)) :]
            if any(s in tail for s in c.stops):
                c.finish = "stop"
                return
        if len(c.tokens) >= cfg.max_tokens or len(c.prompt) + len(c.tokens) >= self.n_ctx:
            c.finish = "length"

    def _admit(
        self, queue: deque[_Cont], prompt_lp: dict[int, np.ndarray], done: deque[Finished]
    ) -> None:
        """Start the head of the queue and the following continuations of the same request on idle
        sequences: one prompt evaluation, copied to the others."""
        head = queue.popleft()
        group = [head]
        while queue and queue[0].req == head.req and len(self._busy) + len(group) < self.n_seq_max:
            group.append(queue.popleft())
        ids = head.prompt
        seq = self._free_seq(ids)
        lp = prompt_lp.get(head.req)
        if lp is not None and self._take_prefix(seq, ids, len(ids)) == len(ids):
            pass  # prompt cached and its log-probs known (an earlier group of this request): nothing to run
        else:
            rows: list[np.ndarray] = []
            head.evaluated += self._eval(seq, ids, len(ids) - 1, lambda p, row: rows.append(log_softmax(row)))
            lp = rows[0]
        if queue and queue[0].req == head.req:
            prompt_lp[head.req] = lp
        else:
            prompt_lp.pop(head.req, None)

        idle = [s for s in range(self.n_seq_max) if s not in self._busy and s != seq]
        idle.sort(key=lambda s: len(self._cache[s]))  # overwrite the least cached first
        for k, c in enumerate(group):
            s = seq if k == 0 else idle[k - 1]
            if k > 0:
                self._drop(s)
                lc.llama_memory_seq_cp(self._mem, seq, s, -1, -1)
                self._cache[s] = list(ids)
            self._push(c, lp)
            if c.finish:
                self._finish(c, done)
            else:
                self._busy[s] = c

    def _step(self, done: deque[Finished]) -> None:
        """Advance every running continuation by one token: one ``llama_decode`` per group of at most
        ``rows_per_decode`` sequences (groups of balanced size)."""
        todo = list(self._busy)
        n_groups = -(-len(todo) // self.rows_per_decode)
        for g in range(n_groups):
            group = todo[g * len(todo) // n_groups : (g + 1) * len(todo) // n_groups]
            for i, s in enumerate(group):
                self._b_tok[i] = self._busy[s].tokens[-1]
                self._b_pos[i] = len(self._cache[s])
                self._batch.seq_id[i][0] = s  # type: ignore[union-attr]
            self._b_logits[: len(group)] = 1
            self._decode(len(group))
            for i, s in enumerate(group):
                c = self._busy[s]
                self._cache[s].append(c.tokens[-1])
                self._push(c, log_softmax(self._logits_row(i)))
                if c.finish:
                    del self._busy[s]
                    self._finish(c, done)

    # ------------------------------------------------------------------ raw engine (benchmark baseline)

    def raw_greedy(self, prompt_ids: Sequence[int], max_tokens: int) -> RawRun:
        """The engine alone: greedy decoding with llama.cpp's own C sampler, no log-probs, no EOS stop.

        The prompt is evaluated first (not timed); ``decode_seconds`` covers ``max_tokens`` single-token
        ``llama_decode`` calls plus the C argmax. For benchmarks.
        """
        ids = [int(t) for t in prompt_ids]
        if not ids or len(ids) + max_tokens > self.n_ctx:
            raise ValueError("raw_greedy: empty prompt or prompt + max_tokens exceeds n_ctx")
        seq = self._free_seq(ids)
        evaluated = self._eval(seq, ids, len(ids) - 1, lambda p, row: None)
        idx = (evaluated - 1) % self.rows_per_decode  # batch entry of the last prompt token
        smpl = lc.llama_sampler_init_greedy()
        out: list[int] = []
        try:
            self._batch.seq_id[0][0] = seq  # type: ignore[union-attr]
            self._b_logits[0] = 1
            pos = len(ids)
            t0 = time.perf_counter()
            for _ in range(max_tokens):
                t = int(lc.llama_sampler_sample(smpl, self._ctx, idx))
                out.append(t)
                self._b_tok[0] = t
                self._b_pos[0] = pos
                self._decode(1)
                self._cache[seq].append(t)
                pos += 1
                idx = 0
            dt = time.perf_counter() - t0
        finally:
            lc.llama_sampler_free(smpl)
        return RawRun(out, dt)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Free the context, batch and model (idempotent)."""
        if self._batch is not None:
            lc.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx:
            lc.llama_free(self._ctx)
            self._ctx = None
        if self._model:
            lc.llama_model_free(self._model)
            self._model = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()
