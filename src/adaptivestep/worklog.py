"""Rollout work log: every finished rollout, in SQLite (WAL mode), so a killed labelling run loses nothing.

A rollout is keyed by the prefix it continues (problem id, sample index, prefix end in response tokens), its
index and its seed. Keying by prefix instead of by step number means two split methods that share a prefix
share its rollouts. Each insert is its own committed transaction: after SIGKILL the database holds exactly the
rollouts whose insert returned.

Guards of a labelling run's files (used by :func:`adaptivestep.label.label_files`):

- :class:`WorkLog` checks an existing log before trusting it (SQLite header, ``PRAGMA quick_check``, the
  table's columns, outcomes 0/1) and raises :class:`WorkLogError` naming the file and what is wrong: a
  truncated or corrupted log is reported, never read as "these rollouts were never done" or worse.
- :func:`output_lock`: an exclusive ``fcntl.flock`` on ``<output>.lock``; a second run on the same output
  stops at once with :class:`OutputLocked` (the kernel drops the lock when its holder dies, even by SIGKILL,
  so a killed run never blocks its resume).
- :func:`storage_errors`: a full disk or an unwritable file (``OSError``, SQLite's "disk is full" /
  "readonly") becomes one :class:`StorageError` that says what failed and that what was logged is kept.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .jsonl import DataError

# re-exported: rollouts are keyed by it, and the labelling engine imports it from here
from .seeds import stable_seed  # noqa: F401

_SQLITE_MAGIC = b"SQLite format 3\x00"
_COLUMNS = ["problem_id", "sample_index", "prefix_end", "idx", "seed", "outcome", "tokens", "prompt_evals",
            "wall_s", "text"]


class WorkLogError(DataError):
    """The work log is truncated, corrupted or not a work log: its rollouts cannot be trusted."""


class OutputLocked(DataError):
    """Another process is writing the same output."""


class StorageError(DataError):
    """Writing the output or the work log failed (disk full, read-only, permissions); logged work is kept."""


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
        existed = self.path.exists() and self.path.stat().st_size > 0
        if existed:
            with self.path.open("rb") as f:
                if f.read(len(_SQLITE_MAGIC)) != _SQLITE_MAGIC:
                    raise self._bad("it is not an SQLite database (wrong header: overwritten or not a work log)")
        try:
            self._db = sqlite3.connect(str(self.path), isolation_level=None, timeout=30.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a process kill (only an OS crash can lose the last commits)
            self._db.execute("PRAGMA synchronous=NORMAL")
            if existed:
                self._verify()
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
                raise
            raise self._bad(f"SQLite: {e}") from e

    def _bad(self, what: str) -> WorkLogError:
        return WorkLogError(
            f"work log {self.path} is damaged: {what}. Its rollouts are not trusted; restore the file, or move "
            f"it away (and the labels written from it) to label those samples again"
        )

    def _verify(self) -> None:
        """An existing log must pass SQLite's own check and hold our table with sane values."""
        problems = [r[0] for r in self._db.execute("PRAGMA quick_check").fetchall()]
        if problems != ["ok"]:
            raise self._bad("; ".join(map(str, problems[:3])))
        cols = [r[1] for r in self._db.execute("PRAGMA table_info(rollouts)").fetchall()]
        if cols and cols != _COLUMNS:
            raise self._bad(f"unexpected columns {cols}")
        if not cols:
            n_tables = self._db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]
            if n_tables:
                raise self._bad("it holds other tables but no rollouts table")
            return
        bad = self._db.execute(
            "SELECT COUNT(*) FROM rollouts WHERE outcome NOT IN (0, 1) OR tokens < 0 OR prompt_evals < 0"
        ).fetchone()[0]
        if bad:
            raise self._bad(f"{bad} rollout rows with impossible values")

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


@contextlib.contextmanager
def output_lock(out_path: str | Path) -> Iterator[Path]:
    """Hold an exclusive lock on ``<out_path>.lock`` for the body; :class:`OutputLocked` if another holds it."""
    out_path = Path(out_path)
    lock_path = out_path.with_name(out_path.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise OutputLocked(
                f"{out_path} is being written by another process (pid {holder}, lock {lock_path}); two runs "
                f"on one output would interleave their records: wait for it to finish or stop it, then re-run "
                f"to resume"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield lock_path
    finally:
        os.close(fd)  # closing drops the lock; the file stays (removing it would race with a waiting run)


_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EIO, errno.EACCES, errno.EPERM}
_SQLITE_STORAGE = ("disk is full", "readonly", "read-only", "unable to open", "disk i/o error")


@contextlib.contextmanager
def storage_errors(out_path: str | Path, worklog_path: str | Path) -> Iterator[None]:
    """Turn a failed write of the output or the work log into one clear :class:`StorageError`."""
    try:
        yield
    except OSError as e:
        if e.errno not in _WRITE_ERRNOS:
            raise
        what = errno.errorcode.get(e.errno or 0, "error")
        raise StorageError(
            f"cannot write {e.filename or out_path} ({what}: {e.strerror or e}); labelling stopped. Records "
            f"already in {out_path} and rollouts in {worklog_path} are kept: free space or fix permissions "
            f"and re-run the same command to resume"
        ) from e
    except sqlite3.OperationalError as e:
        if not any(k in str(e).lower() for k in _SQLITE_STORAGE):
            raise
        raise StorageError(
            f"cannot write the work log {worklog_path} (SQLite: {e}); labelling stopped. Rollouts committed "
            f"before are kept, as are the records in {out_path}: free space or fix permissions and re-run the "
            f"same command to resume"
        ) from e
