"""Test doubles of the Backend and StepScorer Protocols, for fast tests that need no model.

Both backends follow the end-of-sequence rule of the real ones (``Generation``'s docstring in
``adaptivestep/backends/base.py``): a drawn EOS token is the last entry of ``token_ids``, with its log-prob
in ``logprobs`` and an offset in ``token_end_chars``, and it adds no characters to ``text``.

- :class:`FakeBackend`: a deterministic pseudo-random 'language model' over a tiny character vocabulary.
- :class:`ScriptedBackend`: a character policy whose next-token distribution a test scripts exactly.
- :class:`ScriptedScorer`: a PRM whose step scores a test scripts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import numpy as np

from adaptivestep.backends.base import Generation, GenRequest, text_offsets
from adaptivestep.backends.sampler import draw, log_softmax
from adaptivestep.seeds import rng_for

VOCAB = list("0123456789 +=\n") + ["<eos>"]
EOS = len(VOCAB) - 1


class FakeBackend:
    """Next-token logits are a fixed pseudo-random function of the last 3 tokens and the length."""

    name = "fake"
    model_id = "fake-lm"

    def __init__(self, eos_bias: float = -1.0, delay_s: float = 0.0):
        self.eos_bias = eos_bias
        self.delay_s = delay_s  # sleep per generate call: lets tests kill a job mid-run
        self.calls = 0
        self.prompt_evals = 0

    def tokenize(self, text: str) -> list[int]:
        return [VOCAB.index(c) if c in VOCAB else VOCAB.index(" ") for c in text]

    def detokenize(self, ids: Sequence[int]) -> str:
        return "".join(VOCAB[i] for i in ids if i != EOS)

    def chat_prompt(self, user: str, system: str | None = None) -> str:
        return user[:20] + "\n"

    def is_eos(self, token_id: int) -> bool:
        return token_id == EOS

    def next_logprobs(self, ids: Sequence[int]) -> np.ndarray:
        key = ",".join(map(str, list(ids)[-3:])) + f"|{len(ids) % 7}"
        seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little")
        logits = np.random.default_rng(seed).normal(0, 2.0, len(VOCAB))
        logits[EOS] += self.eos_bias + 0.15 * len(ids)
        return log_softmax(logits)

    def score(self, prompt_ids: Sequence[int], token_ids: Sequence[int]) -> list[float]:
        ids = list(prompt_ids)
        out = []
        for t in token_ids:
            out.append(float(self.next_logprobs(ids)[t]))
            ids.append(t)
        return out

    def generate(self, requests: Sequence[GenRequest]) -> list[list[Generation]]:
        self.calls += 1
        if self.delay_s:
            import time

            time.sleep(self.delay_s)
        result = []
        for r in requests:
            gens = []
            for j in range(r.n):
                rng = rng_for(r.seed, r.first_index + j)
                ids = list(r.prompt_ids)
                toks, lps, reason = [], [], "length"
                for _ in range(r.config.max_tokens):
                    lp = self.next_logprobs(ids)
                    t = draw(lp, rng, temperature=r.config.temperature)
                    toks.append(t)  # EOS too: the real backends keep it (see the module docstring)
                    lps.append(float(lp[t]))
                    ids.append(t)
                    if t == EOS:
                        reason = "stop"
                        break
                text, ends = text_offsets(lambda x: self.detokenize(x).encode(), toks)
                pe = len(r.prompt_ids) if j == 0 else 0
                self.prompt_evals += pe
                gens.append(Generation(toks, lps, reason, text, ends, None, pe))
            result.append(gens)
        return result

    def close(self) -> None:
        pass


Dist = Callable[[str], dict[str, float]]  # response text so far -> {char: probability}


class ScriptedBackend:
    """A character-level fake policy: token i is ``vocab[i]``; the last id is EOS (decodes to "").

    ``dist(response_text)`` gives the next-token distribution as ``{char: prob}`` ("$" = EOS; unlisted tokens
    get a tiny mass), where the response is everything after the first ``prompt_len`` ids. Every
    ``next_logprobs`` prefix is recorded in ``calls``. ``generate`` samples with the same per-continuation
    streams as the real backends (``rng_for(seed, first_index + j)``) and keeps a drawn EOS in ``token_ids``
    as they do.
    """

    name = "scripted"
    model_id = "scripted"

    def __init__(self, dist: Dist, vocab: str = "abcdx?") -> None:
        self.vocab = list(vocab)
        self.eos_id = len(self.vocab)
        self.dist = dist
        self.prompt_len = 1
        self.calls: list[tuple[int, ...]] = []

    def tokenize(self, text: str) -> list[int]:
        return [self.vocab.index(ch) for ch in text]

    def detokenize(self, ids: Sequence[int]) -> str:
        return "".join(self.vocab[i] for i in ids if i != self.eos_id)

    def chat_prompt(self, user: str, system: str | None = None) -> str:
        return "?"

    def is_eos(self, token_id: int) -> bool:
        return token_id == self.eos_id

    def next_logprobs(self, ids: Sequence[int]) -> np.ndarray:
        self.calls.append(tuple(ids))
        d = self.dist(self.detokenize(list(ids)[self.prompt_len:]))
        p = np.full(self.eos_id + 1, 1e-9)
        for ch, q in d.items():
            p[self.eos_id if ch == "$" else self.vocab.index(ch)] = q
        return np.log(p / p.sum())

    def score(self, prompt_ids: Sequence[int], token_ids: Sequence[int]) -> list[float]:
        ids = list(prompt_ids)
        out = []
        for t in token_ids:
            out.append(float(self.next_logprobs(ids)[t]))
            ids.append(t)
        return out

    def generate(self, requests: Sequence[GenRequest]) -> list[list[Generation]]:
        res = []
        for r in requests:
            gens = []
            for j in range(r.n):
                rng = rng_for(r.seed, r.first_index + j)
                ids, toks, lps, reason = list(r.prompt_ids), [], [], "length"
                for _ in range(r.config.max_tokens):
                    lp = self.next_logprobs(ids)
                    c = r.config
                    t = draw(lp, rng, temperature=c.temperature, top_p=c.top_p, top_k=c.top_k)
                    toks.append(t)
                    lps.append(float(lp[t]))
                    ids.append(t)
                    if self.is_eos(t) or any(self.detokenize(toks).endswith(s) for s in r.config.stop):
                        reason = "stop"
                        break
                text, ends = text_offsets(lambda x: self.detokenize(x).encode(), toks)
                gens.append(Generation(toks, lps, reason, text, ends,
                                       prompt_tokens_evaluated=len(r.prompt_ids)))
            res.append(gens)
        return res

    def close(self) -> None:
        return None


class ScriptedScorer:
    """A fake PRM: ``step_score(question, steps_so_far)`` gives the score of the last of ``steps_so_far``.
    Records every batch it is given."""

    def __init__(self, step_score: Callable[[str, list[str]], float]) -> None:
        self.step_score = step_score
        self.batches: list[list[tuple[str, list[str]]]] = []

    def score_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        self.batches.append([(q, list(s)) for q, s in items])
        return [[self.step_score(q, list(steps[: i + 1])) for i in range(len(steps))] for q, steps in items]


def by_position(table: list[dict[str, float]], after: dict[str, float] | None = None) -> Dist:
    """Distribution = table[len(response)], then ``after`` (default: EOS for sure)."""
    return lambda resp: table[len(resp)] if len(resp) < len(table) else (after or {"$": 1.0})


PROMPT = [5]  # "?"
