"""Inference backends behind one Protocol (:class:`~adaptivestep.backends.base.Backend`).

Each engine lives in its own module and is imported only when chosen, so installing one engine is enough.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from .base import Backend, Generation, GenRequest, SamplingConfig

# name -> (module, class): chosen from this table, never by an if-chain on names
BACKENDS: dict[str, tuple[str, str]] = {
    "llamacpp": ("adaptivestep.backends.llamacpp", "LlamaCppBackend"),
    "hf": ("adaptivestep.backends.hf", "HFBackend"),
    "vllm": ("adaptivestep.backends.vllm", "VLLMBackend"),
}
_INSTALL = {
    "llamacpp": "pip install 'adaptivestep[llamacpp]'",
    "hf": "pip install torch==2.13.0 'adaptivestep[hf]'",
    "vllm": "pip install 'adaptivestep[vllm]' (GPU), or on a CPU scripts/vllm-venv.sh and .venv-vllm/bin/python",
    "ray": "pip install 'adaptivestep[ray]'",
}


def load_backend(
    name: str, model: str | None = None, ray: str | None = None, ray_actors: int | None = None, **options: Any
) -> Backend:
    """Open ``model`` (embedded name, .gguf file or HF directory) with backend ``name`` ("auto" picks
    llamacpp for GGUF files and hf for directories; vllm is only chosen by name).

    ray: None = in this process; otherwise a Ray cluster address (``host:port``, ``auto``) or ``"local"`` (a Ray
    started here): a pool of ``ray_actors`` actors (default one per CPU) each holding the backend.
    """
    from ..embedded_models import resolve_model

    path = resolve_model(model)
    if name == "auto":
        name = "hf" if Path(path).is_dir() else "llamacpp"
    if name not in BACKENDS:
        raise ValueError(f"--backend: unknown backend {name!r}; choose from {', '.join(BACKENDS)} or auto")
    if name == "llamacpp" and Path(path).is_dir():
        raise ValueError(f"--backend llamacpp needs a .gguf file, got the directory {path}")
    if ray is not None:
        try:
            from .ray_pool import RayPoolBackend
        except ImportError as e:
            raise ImportError(f"--ray needs Ray ({e}); run: {_INSTALL['ray']}") from e
        return RayPoolBackend(name, str(path), address=ray, actors=ray_actors, **options)
    mod_name, cls_name = BACKENDS[name]
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise ImportError(f"backend {name!r} is not installed ({e}); run: {_INSTALL[name]}") from e
    return getattr(mod, cls_name)(path, **options)  # type: ignore[no-any-return]


__all__ = ["BACKENDS", "Backend", "GenRequest", "Generation", "SamplingConfig", "load_backend"]
