"""Token sampling from raw logits, in numpy: exact temperature-1 log-probs, then a draw.

Shared by every backend that exposes logits (llama.cpp, transformers) so they sample identically.
"""

from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities over the last axis, computed in float64 for stability.

    >>> lp = log_softmax(np.array([0.0, 0.0]))
    >>> np.allclose(np.exp(lp), [0.5, 0.5])
    True
    """
    x = np.asarray(logits, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    z = x - m
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def draw(
    logprobs: np.ndarray,
    rng: np.random.Generator,
    *,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
) -> int:
    """Draw one token id from temperature-1 ``logprobs`` (shape (V,)) reshaped by temperature/top-k/top-p.

    temperature 0 is greedy (argmax; ties go to the lowest id).
    """
    if temperature == 0.0:
        return int(np.argmax(logprobs))
    lp = logprobs / temperature if temperature != 1.0 else logprobs
    idx: np.ndarray | None = None
    if top_k and top_k < lp.shape[-1]:
        idx = np.argpartition(-lp, top_k - 1)[:top_k]
        lp = lp[idx]
    p = np.exp(lp - lp.max())
    p /= p.sum()
    if top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        csum = np.cumsum(p[order])
        keep = order[: int(np.searchsorted(csum, top_p) + 1)]
        mask = np.zeros_like(p)
        mask[keep] = p[keep]
        p = mask / mask.sum()
    # inverse-CDF with one uniform: stable across numpy versions and cheap for a 150k vocab
    u = rng.random()
    j = int(np.searchsorted(np.cumsum(p), u * p.sum(), side="right"))
    j = min(j, p.shape[-1] - 1)
    return int(idx[j]) if idx is not None else j


def top_alternatives(logprobs: np.ndarray, k: int) -> list[list[float]]:
    """The ``k`` most likely tokens as ``[[id, logprob], ...]``, most likely first."""
    if k <= 0:
        return []
    idx = np.argpartition(-logprobs, k - 1)[:k]
    idx = idx[np.argsort(-logprobs[idx], kind="stable")]
    return [[int(i), float(logprobs[i])] for i in idx]
