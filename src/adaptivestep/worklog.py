"""Rollout work log: every finished rollout, in SQLite (WAL mode), so a killed labelling run loses nothing.

A rollout is keyed by the prefix it continues (problem id, sample index, prefix end in response tokens), its
index and its seed. Keying by prefix instead of by step number means two split methods that share a prefix
share its rollouts. Each insert is its own committed transaction: after SIGKILL the database holds exactly the
rollouts whose insert returned.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

# re-exported: rollouts are keyed by it, and the labelling engine imports it from here
from .seeds import stable_seed  # noqa: F401


@dataclass(frozen=True)
class Rollout:
    """One finished rollout: ``outcome`` 1 if its final answer was judged correct."""

    problem_id: str
    sample_index: int
    prefix_end: int  # response tokens in the prefix (the step's end offset)
    index: int  # rollout index j
    seed: int
    outcome: int
    tokens: int  # generated tokens
    prompt_evals: int  # prompt tokens run through the model for it
    wall_s: float
    text: str = ""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS rollouts (
  problem_id TEXT NOT NULL, sample_index INTEGER NOT NULL, prefix_end INTEGER NOT NULL,
  idx INTEGER NOT NULL, seed INTEGER NOT NULL, outcome INTEGER NOT NULL, tokens INTEGER NOT NULL,
  prompt_evals INTEGER NOT NULL, wall_s REAL NOT NULL, text TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (problem_id, sample_index, prefix_end, idx, seed)
);
"""


class WorkLog:
    """Append-only store of finished rollouts."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), isolation_level=None, timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a process kill (only an OS crash can lose the last commits)
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def add(self, r: Rollout) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO rollouts VALUES (?,?,?,?,?,?,?,?,?,?)",
            (r.problem_id, r.sample_index, r.prefix_end, r.index, r.seed, r.outcome, r.tokens,
             r.prompt_evals, r.wall_s, r.text),
        )

    def add_many(self, rs: list[Rollout]) -> None:
        for r in rs:  # one transaction each: a kill between two leaves the first one recorded
            self.add(r)

    def for_sample(self, problem_id: str, sample_index: int) -> dict[tuple[int, int, int], Rollout]:
        """Finished rollouts of one sample keyed by ``(prefix_end, index, seed)``."""
        cur = self._db.execute(
            "SELECT problem_id, sample_index, prefix_end, idx, seed, outcome, tokens, prompt_evals, wall_s, text "
            "FROM rollouts WHERE problem_id=? AND sample_index=?",
            (problem_id, sample_index),
        )
        out = {}
        for row in cur:
            r = Rollout(*row)
            out[(r.prefix_end, r.index, r.seed)] = r
        return out

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM rollouts").fetchone()[0])

    def close(self) -> None:
        self._db.close()
