"""A continuously batching toy backend: FakeBackend's continuations, finishing slot by slot like llama.cpp's."""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from collections.abc import Iterator, Sequence

from fakes import FakeBackend

from adaptivestep.backends.base import Finished, Generation, GenRequest, collect


class StreamingFakeBackend(FakeBackend):
    """``slots`` continuations run at once, each taking one step (``step_s`` seconds) per token; one that
    finishes is yielded at once and its slot refilled, with requests appended meanwhile. Continuation ``j``
    is exactly what ``FakeBackend.generate`` returns for it.

    finished_file: a line is appended (and flushed) for every continuation the moment it finishes, before it
    is yielded: what a killed caller could at best have recorded.
    """

    name = "fake-stream"

    def __init__(self, slots: int = 4, step_s: float = 0.0, finished_file: str | None = None, **kw):  # type: ignore[no-untyped-def]
        super().__init__(**kw)
        self.slots = slots
        self.step_s = step_s
        self.finished_file = finished_file
        self.admitted_mid_stream = 0  # requests that joined a stream after it had yielded
        self.streams = 0

    def generate(self, requests: Sequence[GenRequest]) -> list[list[Generation]]:
        reqs = list(requests)
        return collect(self.generate_stream(reqs), reqs)

    def _one(self, req: GenRequest, j: int) -> Generation:
        calls = self.calls
        g = FakeBackend.generate(self, [dataclasses.replace(req, n=1, first_index=req.first_index + j)])[0][0]
        self.calls = calls
        if j:  # the prefix is evaluated once per request
            self.prompt_evals -= g.prompt_tokens_evaluated
            g.prompt_tokens_evaluated = 0
        return g

    def generate_stream(self, requests: list[GenRequest]) -> Iterator[Finished]:
        self.streams += 1
        queue: deque[tuple[int, int, Generation]] = deque()
        busy: list[list] = []  # [steps left, request, j, generation]
        taken, yielded = 0, False
        out = open(self.finished_file, "a") if self.finished_file else None  # noqa: SIM115
        try:
            while True:
                for r in range(taken, len(requests)):
                    self.admitted_mid_stream += yielded
                    queue.extend((r, j, self._one(requests[r], j)) for j in range(requests[r].n))
                taken = len(requests)
                while queue and len(busy) < self.slots:
                    r, j, g = queue.popleft()
                    busy.append([max(1, len(g.token_ids)), r, j, g])
                if not busy:
                    return
                if self.step_s:
                    time.sleep(self.step_s)
                for s in busy:
                    s[0] -= 1
                finished = [s for s in busy if s[0] == 0]
                busy = [s for s in busy if s[0] > 0]
                for _, r, j, g in finished:
                    if out is not None:
                        out.write(f"{r} {j}\n")
                        out.flush()
                    yielded = True
                    yield r, j, g
        finally:
            if out is not None:
                out.close()
