"""Seed derivation: every random stream of the project comes from these two functions.

A stream is keyed by *what it is for* (request seed and continuation index, problem id and sample index, ...)
and never by the order in which work is done, so batching, resuming or asking for a subset gives the same
numbers. :func:`stable_seed` turns any parts into a 32-bit seed (for a backend request);
:func:`rng_for` opens a numpy stream from a seed and integer or text keys.
"""

from __future__ import annotations

import hashlib
import zlib

import numpy as np


def stable_seed(*parts: object) -> int:
    """A 32-bit seed from any parts, stable across processes and Python versions (unlike ``hash``).

    >>> stable_seed("gsm8k/test/1", 0, 17) == stable_seed("gsm8k/test/1", 0, 17)
    True
    """
    h = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(h[:4], "little")


def rng_for(seed: int, *keys: int | str) -> np.random.Generator:
    """The numpy stream of ``keys`` under ``seed``: ``default_rng([seed mod 2**32, *keys])``.

    Integer keys are used as they are (>= 0); a text key (a problem id) becomes its CRC-32. Continuation
    ``j`` of a backend request is ``rng_for(seed, j)``.

    >>> float(rng_for(7, 3).random()) == float(np.random.default_rng([7, 3]).random())
    True
    >>> float(rng_for(0, "gsm8k/test/1", 2).random()) == float(rng_for(0, "gsm8k/test/1", 2).random())
    True
    """
    words = [int(seed) & 0xFFFFFFFF]
    for k in keys:
        words.append(zlib.crc32(k.encode("utf-8")) if isinstance(k, str) else int(k))
    return np.random.default_rng(words)
