"""A scripted toy backend for fast tests: a deterministic 'language model' over a tiny character vocabulary."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from adaptivestep.backends.base import Generation, GenRequest, text_offsets
from adaptivestep.sampling import draw, log_softmax, rng_for

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
                    if t == EOS:
                        reason = "stop"
                        break
                    toks.append(t)
                    lps.append(float(lp[t]))
                    ids.append(t)
                text, ends = text_offsets(lambda x: self.detokenize(x).encode(), toks)
                pe = len(r.prompt_ids) if j == 0 else 0
                self.prompt_evals += pe
                gens.append(Generation(toks, lps, reason, text, ends, None, pe))
            result.append(gens)
        return result

    def close(self) -> None:
        pass
