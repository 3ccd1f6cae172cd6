"""Score steps through a running vLLM pooling server that serves an exported PRM (``--prm-server URL``).

The project's only HTTP client (standard library ``urllib``; every call has a timeout). The server is
``vllm serve DIR --runner pooling ...`` on a directory from ``adaptivestep export-prm PRM --format vllm``
(layout: :mod:`adaptivestep.prm.export`). :class:`PRMServerScorer` has :class:`~adaptivestep.scoring.
StepScorer`'s ``score_batch``, so Best-of-N, ``score`` and value-guided decoding use it like a local PRM.

Each (question, steps) item is laid out by :func:`adaptivestep.prm.data.encode_item` - the same token ids,
chunks and step-end positions as :meth:`adaptivestep.prm.model.PRM.score` - and the chunks go to
``POST /pooling`` as token ids with ``task="token_classify"``; the score of a step is the served per-token
probability at its last token.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .data import Chunk, encode_item
from .export import read_manifest

START_HINT = (
    "start one with: vllm serve DIR --runner pooling --dtype float32 --host 127.0.0.1 --port PORT "
    "(DIR from 'adaptivestep export-prm PRM --format vllm --out DIR')"
)


class PRMServerError(ConnectionError):
    """The PRM server is unreachable, answers with an error, or serves something that is not our PRM."""


def _request(url: str, body: dict[str, Any] | None, timeout: float, what: str) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")[:400]
        raise PRMServerError(f"--prm-server: {what} {url} failed: HTTP {e.code}: {detail}") from None
    except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as e:
        reason = getattr(e, "reason", e)
        raise PRMServerError(
            f"--prm-server: no PRM server answered at {url} within {timeout:g} s ({reason}); {START_HINT}"
        ) from None
    except ValueError as e:
        raise PRMServerError(f"--prm-server: {what} {url} did not return JSON ({e})") from None


def step_scores_from_tokens(chunks: Sequence[Chunk], token_scores: Sequence[Sequence[Any]], n_steps: Sequence[int]) -> list[list[float]]:
    """Per-item step scores from per-chunk per-token scores (``token_scores[c][t]``: a float or ``[float]``).

    >>> c = [Chunk([1, 2, 3], [1, 2], [0, 1], item=0)]
    >>> step_scores_from_tokens(c, [[[0.1], [0.2], [0.3]]], [2])
    [[0.2, 0.3]]
    """
    out: list[list[float]] = [[0.0] * n for n in n_steps]
    for c, row in zip(chunks, token_scores):
        if len(row) != len(c.input_ids):
            raise PRMServerError(
                f"--prm-server returned {len(row)} token scores for a {len(c.input_ids)}-token input; "
                "is it serving with --runner pooling and the token_classify task?"
            )
        for pos, k in zip(c.positions, c.step_indices):
            v = row[pos]
            out[c.item][k] = float(v[0] if isinstance(v, list) else v)
    return out


class PRMServerScorer:
    """A :class:`~adaptivestep.scoring.StepScorer` backed by a vLLM pooling server.

    url: the server's base URL (``http://127.0.0.1:8000``).
    model_dir: the exported directory (for its tokenizer and ``adaptivestep_prm.json``); default: the path the
        server reports for its model (``/v1/models`` ``root``), when it exists on this machine.
    timeout: seconds allowed for any one HTTP call (a scoring call of ``batch`` chunks included).
    batch: chunks per ``/pooling`` call.
    """

    def __init__(
        self, url: str, model_dir: str | Path | None = None, *, timeout: float = 120.0, batch: int = 16
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise PRMServerError(f"--prm-server: {url!r} is not an http(s) URL (e.g. http://127.0.0.1:8000)")
        if timeout <= 0 or batch < 1:
            raise ValueError("PRMServerScorer: timeout must be > 0 and batch >= 1")
        self.url = url.rstrip("/")
        self.timeout = float(timeout)
        self.batch = batch
        models = _request(f"{self.url}/v1/models", None, min(self.timeout, 10.0), "listing models at")
        served = models.get("data") or []
        if not served:
            raise PRMServerError(f"--prm-server {self.url} serves no model; {START_HINT}")
        self.model = str(served[0]["id"])
        root = served[0].get("root") or self.model
        where = Path(model_dir) if model_dir is not None else Path(root)
        if not where.is_dir():
            raise PRMServerError(
                f"--prm-server {self.url} serves {root!r}, which is not a directory here; pass the exported "
                "directory (--prm DIR) so its tokenizer lays out inputs as the server expects"
            )
        self.manifest = read_manifest(where)
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(where), local_files_only=True)
        self.prompt_format = str(self.manifest["prompt_format"])
        self.max_length = int(self.manifest["max_length"])
        self.model_dir = where

    def token_scores(self, inputs: Sequence[Sequence[int]]) -> list[list[Any]]:
        """The served per-token scores of each token-id input (one ``/pooling`` call per ``batch``)."""
        out: list[list[Any]] = []
        for a in range(0, len(inputs), self.batch):
            part = [list(map(int, x)) for x in inputs[a : a + self.batch]]
            body = {"model": self.model, "input": part, "task": "token_classify"}
            resp = _request(f"{self.url}/pooling", body, self.timeout, "scoring at")
            data = sorted(resp.get("data") or [], key=lambda d: d.get("index", 0))
            if len(data) != len(part):
                raise PRMServerError(f"--prm-server returned {len(data)} results for {len(part)} inputs")
            out += [d["data"] for d in data]
        return out

    def score_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        chunks: list[Chunk] = []
        for i, (question, steps) in enumerate(items):
            if steps:
                chunks += encode_item(
                    self.tokenizer,
                    question,
                    list(steps),
                    prompt_format=self.prompt_format,
                    max_length=self.max_length,
                    item=i,
                    where=f"item {i}",
                )
        rows = self.token_scores([c.input_ids for c in chunks]) if chunks else []
        return step_scores_from_tokens(chunks, rows, [len(s) for _, s in items])

    def score(self, question: str, steps: Sequence[str]) -> list[float]:
        return self.score_batch([(question, steps)])[0]
