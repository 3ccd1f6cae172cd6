"""A pool of Ray actors, each holding any backend, behind the Backend Protocol (``--ray [ADDRESS]``); and a
pool of actors each holding the same PRM, behind the StepScorer Protocol (``score --ray``).

The only module that imports ``ray``. The driver keeps the job: it plans the work, writes every output and the
work log; actors only turn requests into continuations. A request with ``n`` continuations is cut into pieces
(continuation ``j`` is a pure function of prefix, seed and ``first_index + j``, so any cut draws the same
tokens), and :class:`ray.util.ActorPool` hands a bundle of pieces to whichever actor is idle, so one pool call
of :meth:`RayPoolBackend.generate_stream` keeps every actor busy while the labelling engine feeds it.

Failures are Ray's to handle: actors are created with ``max_restarts`` / ``max_task_retries``, so when an
actor's process dies (SIGKILL, a lost node) Ray starts it again (on any node with a free CPU) and re-runs the
call it was serving. Nothing is lost or repeated on the driver's side: a piece is yielded only once its call
returned, and a re-run call draws the same tokens.

Every node needs adaptivestep and the backend's engine installed, and the model at the same path. Labels equal
to a one-process run also need one CPU kind across the nodes: llama.cpp's kernels round differently on
different instruction sets (AVX2 vs AVX-512 / AMX), so the same seeded rollout drawn on two kinds of CPU
diverges (docs/benchmarks.md, "Bit-reproducible on one kind of CPU").
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import ray
from ray.util import ActorPool

from adaptivestep.backends.base import Finished, Generation, GenRequest, collect

LOCAL = "local"  # --ray without an address: start a Ray instance inside this process


class RayUnavailable(ValueError):
    """A bad ``--ray`` setting: the cluster cannot be reached or cannot host the actors."""


class _Worker:
    """What runs inside one actor: a backend opened by :func:`adaptivestep.backends.load_backend`."""

    def __init__(self, name: str, model: str, options: dict[str, Any]):
        from adaptivestep.backends import load_backend

        self.backend = load_backend(name, model, **options)

    def ready(self) -> int:
        return os.getpid()

    def generate(self, bundle: tuple[int, list[GenRequest]]) -> tuple[int, list[list[Generation]]]:
        key, requests = bundle
        return key, self.backend.generate(requests)

    def call(self, method: str, *args: Any) -> Any:
        return getattr(self.backend, method)(*args)


def _check_reachable(address: str, timeout_s: float) -> None:
    """Fail fast on a dead address: Ray's own connect retries for a long time."""
    host, _, port = address.rpartition(":")
    if address == "auto" or not port.isdigit():
        return  # "auto" / "ray://" forms are resolved by Ray itself
    try:
        socket.create_connection((host.removeprefix("ray://") or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise RayUnavailable(
            f"--ray {address}: no Ray cluster answers there ({e}); start one with `ray start --head --port "
            f"{port}` or pass the address `ray status` prints"
        ) from None


def connect(address: str = LOCAL, timeout_s: float = 10.0, num_cpus: int | None = None) -> None:
    """Join the Ray cluster at ``address`` (``host:port``, ``auto``) or start a local one (:data:`LOCAL`, with
    ``num_cpus`` CPUs, default all). Nothing to do when this process has joined one already."""
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"log_to_driver": False, "include_dashboard": False, "num_cpus": num_cpus}
    if address != LOCAL:
        _check_reachable(address, timeout_s)
        kwargs = {"address": address, "log_to_driver": False}
    main_thread = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if main_thread else None
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise RayUnavailable(f"--ray {address}: could not join the Ray cluster: {e}") from e
    finally:
        if main_thread and sigterm is not None:
            # ray.init sets a SIGTERM handler of its own in the driver (a bare exit); keep the caller's, e.g. the
            # CLI's stop-as-Ctrl-C one, which exits just as cleanly (Ray's own shutdown runs at exit either way)
            signal.signal(signal.SIGTERM, sigterm)


def disconnect() -> None:
    """Leave the cluster (and stop a Ray that :func:`connect` started here)."""
    ray.shutdown()


class _ScorerWorker:
    """What runs inside one scoring actor: a PRM opened by :func:`adaptivestep.scoring.open_scorer`."""

    def __init__(self, prm: str, math_shepherd: bool, threads: int):
        try:
            import torch

            torch.set_num_threads(threads)  # the CPUs Ray reserved for this actor, not the whole node's
        except ImportError:
            pass
        from adaptivestep.scoring import open_scorer

        self.scorer = open_scorer(prm, math_shepherd=math_shepherd)

    def ready(self) -> int:
        return os.getpid()

    def score(self, chunk: tuple[int, list[tuple[str, list[str]]]]) -> tuple[int, list[list[float]]]:
        key, items = chunk
        return key, [[float(x) for x in sc] for sc in self.scorer.score_batch(items)]


def _start_actors(cls: type, args: tuple[Any, ...], address: str, actors: int | None, cpus_per_actor: int,
                  restarts: int, start_timeout_s: float, what: str) -> tuple[list[Any], list[int]]:
    """``actors`` (default: one per ``cpus_per_actor`` CPUs of the cluster) Ray actors ``cls(*args)`` that Ray
    restarts when their process dies (and re-runs the call they were serving), and their process ids, once
    all have started."""
    if cpus_per_actor < 1 or (actors is not None and actors < 1):
        raise ValueError("--ray: cpus_per_actor and actors must be >= 1")
    connect(address)
    if actors is None:
        actors = max(1, int(ray.cluster_resources().get("CPU", 1)) // cpus_per_actor)
    remote = ray.remote(num_cpus=cpus_per_actor, max_restarts=restarts, max_task_retries=restarts)(cls)
    started = [remote.remote(*args) for _ in range(actors)]
    try:
        pids = ray.get([a.ready.remote() for a in started], timeout=start_timeout_s)
    except ray.exceptions.GetTimeoutError:
        for a in started:
            ray.kill(a, no_restart=True)
        raise RayUnavailable(
            f"--ray {address}: {actors} actors of {cpus_per_actor} CPU(s) did not start within "
            f"{start_timeout_s:.0f} s (cluster CPUs: {ray.cluster_resources().get('CPU', 0)}); "
            "use fewer actors or add nodes"
        ) from None
    except ray.exceptions.RayActorError as e:
        for a in started:
            ray.kill(a, no_restart=True)
        raise RayUnavailable(f"--ray: an actor could not open {what}: {e}") from e
    return started, pids


class RayPoolScorer:
    """``actors`` Ray actors each holding the PRM in ``prm`` (:func:`adaptivestep.scoring.open_scorer`); a
    StepScorer itself. ``score_batch`` cuts its items into chunks of ``chunk`` responses, which idle actors
    score, and returns the scores in item order. The driver writes every output. An actor whose process dies
    is restarted by Ray, which re-runs the chunk it was scoring (a pure function of the PRM and the items).
    Every node needs adaptivestep, torch and the PRM directory at the same path."""

    def __init__(self, prm: str, *, math_shepherd: bool = False, address: str = LOCAL, actors: int | None = None,
                 cpus_per_actor: int = 1, chunk: int = 16, restarts: int = 4, start_timeout_s: float = 600.0):
        if chunk < 1:
            raise ValueError("--ray: the chunk of responses per actor call must be >= 1")
        self._actors, _ = _start_actors(_ScorerWorker, (prm, math_shepherd, cpus_per_actor), address, actors,
                                     cpus_per_actor, restarts, start_timeout_s, f"the PRM {prm}")
        self._pool = ActorPool(list(self._actors))
        self.chunk = chunk

    def score_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        chunks = [(k, [(q, list(st)) for q, st in items[i: i + self.chunk]])
                  for k, i in enumerate(range(0, len(items), self.chunk))]
        out: list[list[float]] = []
        for _, scores in self._pool.map(lambda a, v: a.score.remote(v), chunks):  # results in chunk order
            out.extend(scores)
        return out

    def close(self) -> None:
        for a in getattr(self, "_actors", []):
            ray.kill(a, no_restart=True)
        self._actors = []


class RayPoolBackend:
    """``actors`` Ray actors each holding ``load_backend(name, model, **options)``; a Backend itself.

    name: the backend every actor opens (llamacpp, hf...); model: its model path (the same on every node).
    address: Ray cluster address, or :data:`LOCAL` for a Ray started in this process.
    actors: how many (default: one per ``cpus_per_actor`` CPUs of the cluster).
    cpus_per_actor: CPUs Ray reserves for each actor; llama.cpp actors get as many threads unless
        ``options`` sets ``n_threads``.
    bundle: most continuations sent to an actor in one call (the actor decodes them as one batch).
    restarts: how often Ray restarts a dead actor and re-runs the call it was serving (each, per actor).
    start_timeout_s: most seconds to wait for the actors to open their backends.
    """

    name = "ray"

    def __init__(
        self,
        name: str,
        model: str,
        address: str = LOCAL,
        actors: int | None = None,
        cpus_per_actor: int = 1,
        bundle: int = 8,
        restarts: int = 4,
        start_timeout_s: float = 600.0,
        **options: Any,
    ) -> None:
        if bundle < 1:
            raise ValueError("--ray: bundle must be >= 1")
        if name == "llamacpp":
            options.setdefault("n_threads", cpus_per_actor)
        self._actors, self.pids = _start_actors(_Worker, (name, model, options), address, actors, cpus_per_actor,
                                                restarts, start_timeout_s, f"{name} {model}")
        self._pool = ActorPool(list(self._actors))
        self.model_id = model
        self.backend_name = name
        self.bundle = bundle
        self._eos: dict[int, bool] = {}
        self._next = 0

    # ------------------------------------------------------------------ calls served by one actor

    def _call(self, method: str, *args: Any) -> Any:
        actor = self._actors[self._next % len(self._actors)]
        self._next += 1
        return ray.get(actor.call.remote(method, *args))

    def tokenize(self, text: str) -> list[int]:
        return self._call("tokenize", text)  # type: ignore[no-any-return]

    def detokenize(self, ids: Sequence[int]) -> str:
        return self._call("detokenize", list(ids))  # type: ignore[no-any-return]

    def chat_prompt(self, user: str, system: str | None = None) -> str:
        return self._call("chat_prompt", user, system)  # type: ignore[no-any-return]

    def is_eos(self, token_id: int) -> bool:
        r = self._eos.get(token_id)
        if r is None:  # asked per generated token by decoders: one round trip per distinct token
            r = self._eos[token_id] = bool(self._call("is_eos", token_id))
        return r

    def score(self, prompt_ids: Sequence[int], token_ids: Sequence[int]) -> list[float]:
        return self._call("score", list(prompt_ids), list(token_ids))  # type: ignore[no-any-return]

    def next_logprobs(self, ids: Sequence[int]) -> np.ndarray:
        return self._call("next_logprobs", list(ids))  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ generation over the pool

    def generate(self, requests: Sequence[GenRequest]) -> list[list[Generation]]:
        reqs = list(requests)
        return collect(self.generate_stream(reqs), reqs)

    def generate_stream(self, requests: list[GenRequest]) -> Iterator[Finished]:
        """Bundles of request pieces go to idle actors; a bundle's continuations are yielded when its call
        returns, and requests appended meanwhile join the next bundles."""
        waiting: deque[tuple[int, int, GenRequest]] = deque()  # (request, first continuation, piece) not sent
        sent: dict[int, list[tuple[int, int]]] = {}  # bundle key -> (request, first continuation) per piece
        taken = key = 0
        while True:
            for r in range(taken, len(requests)):
                req = requests[r]  # read once, as the Protocol promises
                waiting.extend((r, j0, replace(req, n=min(self.bundle, req.n - j0), first_index=req.first_index + j0))
                               for j0 in range(0, req.n, self.bundle))
            taken = len(requests)
            while waiting and self._pool.has_free():
                pieces: list[tuple[int, int, GenRequest]] = []
                size = 0
                while waiting and size + waiting[0][2].n <= self.bundle:
                    pieces.append(waiting.popleft())
                    size += pieces[-1][2].n
                sent[key] = [(r, j0) for r, j0, _ in pieces]
                self._pool.submit(lambda a, v: a.generate.remote(v), (key, [p for _, _, p in pieces]))
                key += 1
            if not sent:
                return
            done_key, outs = self._pool.get_next_unordered()
            for (r, j0), gens in zip(sent.pop(done_key), outs):
                for k, g in enumerate(gens):
                    yield r, j0 + k, g

    def close(self) -> None:
        for a in getattr(self, "_actors", []):
            ray.kill(a, no_restart=True)
        self._actors = []
