"""Which policy model and engine: :class:`PolicyConfig` and :func:`open_policy`, shared by every verb that
generates and by the main job (the CLI's model options are this dataclass's fields)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .backends import BACKENDS
from .backends.base import Backend

BACKEND_CHOICES: tuple[str, ...] = ("auto", *BACKENDS)


@dataclass
class PolicyConfig:
    """The policy model.

    model: 'default' (embedded Qwen2.5-Coder-0.5B-Instruct GGUF), 'qwen2.5-coder-1.5b' (extra policy-1-5b),
        'smollm2-135m', a .gguf file, or a local Hugging Face model directory.
    backend: inference engine; auto = llamacpp for GGUF files, hf for directories.
    n_ctx: llama.cpp context per sequence in tokens (prompt + response); 16 sequences share the cache.
    threads: CPU threads (None = all cores).
    ray: None = the engine runs in this process; a Ray address (host:port, "auto") or "local" = the engine
        calls run on a pool of Ray actors, each holding this backend.
    ray_actors: actors in that pool (None = one per CPU of the cluster).
    tensor_parallel_size: vllm: GPUs one model is split over (vLLM's tensor_parallel_size).
    """

    model: str = "default"
    backend: str = "auto"
    n_ctx: int = 4096
    threads: int | None = None
    ray: str | None = None
    ray_actors: int | None = None
    tensor_parallel_size: int = 1

    def __post_init__(self) -> None:
        if self.n_ctx <= 0:
            raise ValueError(f"--n-ctx must be > 0, got {self.n_ctx}")
        if self.threads is not None and self.threads <= 0:
            raise ValueError(f"--threads must be > 0, got {self.threads}")
        if self.ray_actors is not None and self.ray_actors <= 0:
            raise ValueError(f"--ray-actors must be > 0, got {self.ray_actors}")
        if self.tensor_parallel_size <= 0:
            raise ValueError(f"--tensor-parallel-size must be > 0, got {self.tensor_parallel_size}")


def open_policy(cfg: PolicyConfig) -> Backend:
    """Open the policy model with its engine (llama.cpp options go to GGUF files only)."""
    from .backends import load_backend
    from .embedded_models import ModelError, resolve_model

    path = resolve_model(cfg.model)
    opts: dict[str, Any] = {}
    if cfg.backend == "vllm":  # n_ctx -> max_model_len; threads -> the CPU build's OpenMP threads
        opts = {"n_ctx": cfg.n_ctx, "tensor_parallel_size": cfg.tensor_parallel_size, "n_threads": cfg.threads}
    elif not path.is_dir():
        opts["n_ctx"] = cfg.n_ctx
        if cfg.threads:
            opts["n_threads"] = cfg.threads
    try:
        return load_backend(cfg.backend, str(path), ray=cfg.ray, ray_actors=cfg.ray_actors, **opts)
    except ModelError:
        raise
    except RuntimeError as e:  # the engine could not load the file (corrupt, truncated, unsupported)
        raise ModelError(f"model {cfg.model!r}: {e}") from e
