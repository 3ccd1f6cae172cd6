"""Torch device and dtype names: the one place that maps a config's ``device`` / ``dtype`` strings to torch.

Used by the transformers backend (:mod:`adaptivestep.backends.hf`), the PRM (:mod:`adaptivestep.prm.model`)
and the Math-Shepherd interop scorer; imports torch, so only modules that need torch anyway import it.
"""

from __future__ import annotations

import torch

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype called ``name`` (a key of :data:`DTYPES`); ValueError naming the choices otherwise.

    >>> torch_dtype("bfloat16")
    torch.bfloat16
    """
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    return DTYPES[name]


def resolve_device(device: str | None = None) -> str:
    """``device`` when given, else ``"cuda"`` when a GPU is visible to torch, else ``"cpu"``.

    >>> resolve_device("cpu")
    'cpu'
    """
    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"
