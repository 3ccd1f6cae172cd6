"""The backend interface every engine implements (llama.cpp, transformers; later vLLM, Ray actors).

Callers only use :class:`Backend`. A backend turns token-id prompts into sampled continuations with the
exact log-probability of each sampled token under the temperature-1 model distribution.

Determinism: continuation ``j`` of a request with seed ``s`` draws its random numbers from
:func:`adaptivestep.seeds.rng_for` ``(s, j)``, so its tokens do not depend on how requests are batched.
Together with deterministic logits this makes a rollout a pure function of (prefix, seed, j) - the property that
resumable labelling relies on.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class SamplingConfig:
    """How to draw tokens.

    temperature: softmax temperature used to *draw* tokens (1.0 = model distribution, 0.0 = greedy).
        Recorded log-probs are always under temperature 1, whatever this is.
    top_p: nucleus mass kept when drawing (1.0 = off).
    top_k: keep the k most likely tokens when drawing (0 = off).
    max_tokens: most tokens generated per continuation.
    top_logprobs: how many top alternatives (id, logprob) to return per position (0 = none).
    stop: strings that end a continuation (the stop string is kept in the text).
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int = 512
    top_logprobs: int = 0
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.top_k < 0 or self.top_logprobs < 0:
            raise ValueError("top_k and top_logprobs must be >= 0")


@dataclass(frozen=True)
class GenRequest:
    """``n`` continuations of ``prompt_ids`` (which may already hold part of a response: rollouts).

    Continuation ``j`` (0 <= j < n) draws from ``rng_for(seed, first_index + j)``: a resumed job asks for the
    missing continuations ``first_index .. first_index + n - 1`` and gets exactly what an uninterrupted run got.
    """

    prompt_ids: tuple[int, ...]
    n: int = 1
    seed: int = 0
    config: SamplingConfig = field(default_factory=SamplingConfig)
    first_index: int = 0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if not self.prompt_ids:
            raise ValueError("prompt_ids must not be empty")


@dataclass
class Generation:
    """One continuation: response tokens only (prompt excluded).

    End of sequence, the same in every backend (llama.cpp, transformers, the test doubles): a drawn
    end-of-generation token (``Backend.is_eos``) is KEPT as the last entry of ``token_ids``, with its
    log-prob in ``logprobs`` and its entry in ``token_end_chars`` (equal to the previous one), and it adds
    NO characters to ``text``; ``finish_reason`` is then ``"stop"``. A continuation cut by ``max_tokens`` or a stop string
    has no EOS. So ``len(token_ids) == len(logprobs) == len(token_end_chars)`` always, and callers that
    continue a response (rollouts, early rejection) drop a final EOS themselves.
    """

    token_ids: list[int]
    logprobs: list[float]  # temperature-1 log p of each sampled token
    finish_reason: str  # "stop" (EOS or stop string) | "length"
    text: str
    token_end_chars: list[int]  # len(decode(token_ids[:i+1])) for each i
    top_logprobs: list[list[list[float]]] | None = None  # per position [[id, logprob], ...]
    prompt_tokens_evaluated: int = 0  # prompt tokens this call actually ran through the model (cost)


@runtime_checkable
class Backend(Protocol):
    """What the pipeline needs from an inference engine."""

    name: str  # "llamacpp" | "hf" | ...
    model_id: str  # path or name of the weights

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` (no BOS added, special tokens in the text are parsed)."""
        ...

    def detokenize(self, ids: Sequence[int]) -> str: ...

    def chat_prompt(self, user: str, system: str | None = None) -> str:
        """The model's own chat template applied to one user turn, ending with the assistant header."""
        ...

    def is_eos(self, token_id: int) -> bool: ...

    def generate(self, requests: Sequence[GenRequest]) -> list[list[Generation]]:
        """For each request, ``request.n`` continuations (same order)."""
        ...

    def score(self, prompt_ids: Sequence[int], token_ids: Sequence[int]) -> list[float]:
        """Temperature-1 log p of each of ``token_ids`` given ``prompt_ids`` and the tokens before it."""
        ...

    def next_logprobs(self, ids: Sequence[int]) -> np.ndarray:
        """Temperature-1 log-probabilities over the vocabulary for the token after ``ids``, shape (V,)."""
        ...

    def close(self) -> None: ...


Finished = tuple[int, int, "Generation"]  # (request index, continuation index j < request.n, continuation)


@runtime_checkable
class StreamingBackend(Backend, Protocol):
    """A backend that batches continuously: it yields each continuation as soon as it finishes and takes new
    requests between yields, so a caller that decides what to ask next from results keeps the engine full."""

    def generate_stream(self, requests: list[GenRequest]) -> Iterator[Finished]:
        """Every continuation of ``requests`` in the order they finish, as ``(request index, j, Generation)``.

        ``requests`` is read again after every yield: the caller submits work by appending to it, and the
        stream ends once every request appended so far is finished. Each entry is read once, when the stream
        first sees it, so a caller may replace an entry whose continuations are all back by ``None`` (to free
        its prompt). Continuation ``j`` is the one :meth:`Backend.generate` returns at ``[request index][j]``.
        """
        ...


def lockstep_stream(
    backend: Backend, requests: list[GenRequest], batched: bool = True, before_call: Callable[[], None] | None = None
) -> Iterator[Finished]:
    """:meth:`StreamingBackend.generate_stream` over plain :meth:`Backend.generate` calls: each call takes every
    request submitted so far (or one request when ``batched`` is False) and its continuations are yielded when
    the call returns. ``before_call`` runs before each call (e.g. to drop the KV cache)."""
    done = 0
    while done < len(requests):
        batch = list(requests[done:]) if batched else [requests[done]]
        if before_call is not None:
            before_call()
        for i, gens in enumerate(backend.generate(batch)):
            for j, g in enumerate(gens):
                yield done + i, j, g
        done += len(batch)


def generate_stream(backend: Backend, requests: list[GenRequest]) -> Iterator[Finished]:
    """The backend's own ``generate_stream`` when it has one, else :func:`lockstep_stream`."""
    if isinstance(backend, StreamingBackend):
        return backend.generate_stream(requests)
    return lockstep_stream(backend, requests)


class WithoutStreaming:
    """``backend`` seen without ``generate_stream``: callers fall back to lock-step :meth:`Backend.generate`
    calls (for comparing the two on the same engine)."""

    def __init__(self, backend: Backend):
        self._inner = backend

    def __getattr__(self, attr: str) -> object:
        if attr == "generate_stream":
            raise AttributeError(attr)
        return getattr(self._inner, attr)


def collect(stream: Iterator[Finished], requests: Sequence[GenRequest]) -> list[list[Generation]]:
    """A finished stream as :meth:`Backend.generate`'s result (continuations per request, in order)."""
    out: list[list[Generation | None]] = [[None] * r.n for r in requests]
    for r, j, g in stream:
        out[r][j] = g
    missing = [(r, j) for r, row in enumerate(out) for j, g in enumerate(row) if g is None]
    if missing:
        raise RuntimeError(f"stream ended without continuations {missing[:5]}")
    return [[g for g in row if g is not None] for row in out]


def text_offsets(decode: object, token_ids: Sequence[int]) -> tuple[str, list[int]]:
    """Decode tokens one by one into the full text and each token's end offset in it.

    ``decode`` maps a list of ids to *bytes*. An incremental UTF-8 decoder holds back the bytes of a
    character split over tokens, so the character lands on the token that completes it; invalid bytes become
    U+FFFD, identically in the text and in the offsets.
    """
    dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
    text = ""
    ends: list[int] = []
    for t in token_ids:
        text += dec.decode(decode([t]))  # type: ignore[operator]
        ends.append(len(text))
    text += dec.decode(b"", final=True)
    return text, ends
