"""Progress bars: the one helper every bar of the project goes through.

On a terminal it is an ordinary tqdm bar. When stderr is not a terminal (a CI log, ``2>&1 | tee run.log``,
a batch job) a redrawing bar would write hundreds of ``\\r`` updates a second into the file, so the bar is
throttled to one update every :data:`LOG_INTERVAL_S` seconds and each update is written as its own line.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TextIO

from tqdm import tqdm

LOG_INTERVAL_S = 10.0  # off a terminal: at most one progress line per bar this often (plus first and last)
_LOG_NCOLS = 100  # no terminal width to follow: a fixed, readable line


class _Lines:
    """A file for tqdm that turns its carriage-return redraws into whole lines (for logs)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, s: str) -> int:
        line = s.replace("\r", "").rstrip()
        if line:
            self.stream.write(line + "\n")
        return len(s)

    def flush(self) -> None:
        self.stream.flush()


class _Bar(tqdm):  # type: ignore[type-arg]
    """tqdm whose ``set_postfix`` redraws only when ``mininterval`` has passed since the last redraw, like
    ``update`` does (plain tqdm redraws on every call: a postfix set every epoch of a 300-epoch fit redrew
    300 times a second into the log)."""

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None:
        if self.disable:
            return
        due = refresh and self._time() - self.last_print_t >= self.mininterval
        super().set_postfix(ordered_dict, refresh=due, **kwargs)


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed streams
        return False


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    enabled: bool = True,
    leave: bool = True,
    stream: TextIO | None = None,
) -> tqdm:  # type: ignore[type-arg]
    """A tqdm bar over ``iterable`` (or updated by hand up to ``total``), written to ``stream`` (stderr).

    ``enabled=False`` gives a silent bar with the same methods. ``leave``: keep the finished bar on a
    terminal (off a terminal it is always kept). Off a terminal: one line at most every
    :data:`LOG_INTERVAL_S` seconds, plus the first and the last (see the module docstring).

    >>> import io
    >>> log = io.StringIO()
    >>> bar = progress_bar(range(1000), desc="demo", stream=log)
    >>> for i in bar:
    ...     bar.set_postfix(i=i)
    >>> len(log.getvalue().splitlines()) <= 3, "1000/1000" in log.getvalue()
    (True, True)
    """
    out = stream if stream is not None else sys.stderr
    if _is_tty(out):
        return _Bar(iterable, total=total, desc=desc, unit=unit, disable=not enabled, leave=leave,
                    file=out, dynamic_ncols=True)
    # leave=True: a log cannot erase a line, and its last line should say how the bar ended
    return _Bar(iterable, total=total, desc=desc, unit=unit, disable=not enabled, leave=True,
                file=_Lines(out), mininterval=LOG_INTERVAL_S, maxinterval=LOG_INTERVAL_S, ncols=_LOG_NCOLS)
