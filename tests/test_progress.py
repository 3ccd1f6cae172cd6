"""Progress bars: a log (stderr not a terminal) gets a few whole lines, not hundreds of redraws."""

from __future__ import annotations

import io

from adaptivestep.progress import progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_a_fast_loop_writes_a_few_whole_lines() -> None:
    log = io.StringIO()
    bar = progress_bar(range(5000), desc="head", leave=False, stream=log)
    for i in bar:
        bar.set_postfix(loss=f"{1 / (i + 1):.4f}")  # what the head fit does every epoch
    text = log.getvalue()
    assert "\r" not in text and len(text.splitlines()) <= 3
    assert text.splitlines()[-1].startswith("head: 100%") and "5000/5000" in text


def test_on_a_terminal_it_is_an_ordinary_redrawing_bar() -> None:
    tty = _Terminal()
    for _ in progress_bar(range(3), desc="x", stream=tty):
        pass
    assert "\r" in tty.getvalue() and "3/3" in tty.getvalue()


def test_disabled_bar_is_silent_and_still_iterates() -> None:
    log = io.StringIO()
    bar = progress_bar(range(4), desc="x", enabled=False, stream=log)
    assert list(bar) == [0, 1, 2, 3]
    bar.set_postfix(a=1)
    bar.close()
    assert log.getvalue() == ""


def test_a_postfix_alone_shows_progress_once_the_interval_has_passed() -> None:
    """Labelling sets a postfix per rollout batch long before a sample finishes: it must show, throttled."""
    log = io.StringIO()
    bar = progress_bar(total=4, desc="label", stream=log)
    n0 = len(log.getvalue().splitlines())
    bar.set_postfix(rollouts=2)  # right after the start: not due yet
    assert len(log.getvalue().splitlines()) == n0
    bar.last_print_t -= 60  # as if a minute had passed
    bar.set_postfix(rollouts=4)
    assert "rollouts=4" in log.getvalue().splitlines()[-1]
    bar.close()
