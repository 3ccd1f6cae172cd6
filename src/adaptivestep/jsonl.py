"""Streaming JSONL: read with file/line-numbered errors, append one flushed line at a time.

Files are never rewritten in place. A run killed mid-write can leave one truncated last line; readers
given ``tolerate_torn_tail=True`` skip it (it is the only line that can be torn, since every line is
written with a single ``write`` + flush + fsync), and :func:`repair_tail` trims it before appending.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from .records import RecordError, _Record

R = TypeVar("R", bound=_Record)


class DataError(ValueError):
    """Bad input data; the message names the file and line."""


def iter_json(path: str | Path, *, tolerate_torn_tail: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for every non-empty line of a JSONL file (``.gz``: gzip-compressed)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    with path.open("rb") as f:
        raw = f.read()
    if path.name.endswith(".gz"):
        import gzip

        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataError(f"{path}: not a readable gzip file ({e})") from None
    lines = raw.split(b"\n")
    last = len(lines)
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            torn = i == last and not raw.endswith(b"\n")
            if torn and tolerate_torn_tail:
                return
            raise DataError(f"{path}:{i}: malformed JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{i}: expected a JSON object, got {type(obj).__name__}")
        yield i, obj


def read_records(path: str | Path, cls: type[R], *, tolerate_torn_tail: bool = False) -> Iterator[R]:
    """Yield records of type ``cls``; a bad record raises :class:`DataError` with file and line."""
    for i, obj in iter_json(path, tolerate_torn_tail=tolerate_torn_tail):
        try:
            yield cls.from_dict(obj)
        except (RecordError, TypeError) as e:
            raise DataError(f"{path}:{i}: {e}") from None


def write_atomic(path: str | Path, records: Iterable[Any]) -> None:
    """Write a derived file whole (a split, scores): build it aside, then rename it over ``path``, so a reader
    never sees it half-written."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        tmp.unlink()
    with JsonlWriter(tmp, fsync=False) as w:
        w.write_all(records)
    os.replace(tmp, path)


def repair_tail(path: str | Path) -> int:
    """Drop a torn (unterminated, unparsable) last line left by a killed writer. Returns bytes removed."""
    path = Path(path)
    if not path.exists():
        return 0
    with path.open("rb+") as f:
        data = f.read()
        if not data or data.endswith(b"\n"):
            return 0
        cut = data.rfind(b"\n") + 1
        tail = data[cut:]
        try:
            json.loads(tail)
            f.write(b"\n")  # complete record that only lacks its newline
            return 0
        except json.JSONDecodeError:
            f.truncate(cut)
            return len(tail)


class JsonlWriter:
    """Append-only writer: each record is one ``write`` of a full line, flushed and fsynced."""

    def __init__(self, path: str | Path, *, fsync: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair_tail(self.path)
        self._f = self.path.open("ab")
        self._fsync = fsync

    def write(self, record: _Record | dict[str, Any]) -> None:
        obj = record.to_dict() if isinstance(record, _Record) else record
        line = json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n"
        self._f.write(line.encode("utf-8"))
        self._f.flush()
        if self._fsync:
            os.fsync(self._f.fileno())

    def write_all(self, records: Iterable[_Record | dict[str, Any]]) -> None:
        for r in records:
            self.write(r)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
