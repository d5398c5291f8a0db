"""Progress of long stages: done / total, rate and ETA.

On a terminal, a live bar (rich). Elsewhere - a scheduler's job log, ``nohup``, a pipe - plain lines at a modest
pace, so a multi-hour stage shows it is advancing: a line at each further 10% (at most one per
``MIN_GAP_S`` seconds) and at least one every ``GZPIPE_PROGRESS_INTERVAL`` seconds (default 30), then a last
line when the stage ends. ``GZPIPE_PROGRESS=0`` silences both; ``=1`` forces the bar, ``=lines`` the lines.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Iterator

from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

MIN_GAP_S = 2.0


def _mode() -> str:
    flag = os.environ.get("GZPIPE_PROGRESS", "auto").lower()
    if flag in ("0", "off", "false", "no"):
        return "off"
    if flag in ("1", "on", "true", "yes", "bar"):
        return "bar"
    if flag == "lines":
        return "lines"
    return "bar" if sys.stderr.isatty() else "lines"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class _Bar:
    def __init__(self, progress: Progress | None, task):
        self._p, self._t = progress, task

    def advance(self, n: float = 1) -> None:
        if self._p is not None:
            self._p.advance(self._t, n)

    def update(self, **fields) -> None:
        if self._p is not None:
            self._p.update(self._t, **fields)


class _Lines:
    """Plain progress lines on stderr (see the module docstring)."""

    def __init__(self, description: str, total: float | None, unit: str, interval: float):
        self.description, self.total, self.unit, self.interval = description, total, unit, interval
        self.done = 0.0
        self.t0 = self.last = time.monotonic()
        self.next_step = 0.1
        self.lines = 0

    def advance(self, n: float = 1) -> None:
        self.done += n
        now = time.monotonic()
        share = self.done / self.total if self.total else None
        crossed = share is not None and share >= self.next_step
        finished = bool(self.total) and self.done >= self.total  # the closing line says it
        if not finished and ((crossed and now - self.last >= MIN_GAP_S) or now - self.last >= self.interval):
            self._line(now)
        if crossed:
            self.next_step = (int(share * 10) + 1) / 10

    def update(self, description: str | None = None, **fields) -> None:
        if description:
            self.description = description

    def _line(self, now: float, final: str = "") -> None:
        elapsed = max(now - self.t0, 1e-9)
        rate = self.done / elapsed
        parts = [f"{self.description}: {self.done:,.0f}" + (f"/{self.total:,.0f}" if self.total else "") + f" {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.done / self.total:.0f}%)"
        parts.append(f"{rate:,.1f} {self.unit}/s")
        if final:
            parts.append(f"{final} after {_duration(elapsed)}")
        elif self.total and rate > 0:
            parts.append(f"eta {_duration((self.total - self.done) / rate)}")
        print(", ".join(parts), file=sys.stderr, flush=True)
        self.last = now
        self.lines += 1

    def close(self, how: str = "done") -> None:
        if self.lines:  # a stage that said it was under way also says how it ended
            self._line(time.monotonic(), final=how)


@contextlib.contextmanager
def progress_bar(description: str, total: float | None, unit: str = "items") -> Iterator[_Bar | _Lines]:
    """Progress of one stage (see the module docstring); ``advance(n)`` as work is done."""
    mode = _mode()
    if mode == "off":
        yield _Bar(None, None)
        return
    if mode == "lines":
        lines = _Lines(description, total, unit, float(os.environ.get("GZPIPE_PROGRESS_INTERVAL", "30")))
        try:
            yield lines
        except BaseException:
            lines.close("stopped")
            raise
        lines.close()
        return
    columns = [
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
        _RateColumn(unit), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
    ]
    with Progress(*columns, transient=False, refresh_per_second=4) as p:
        yield _Bar(p, p.add_task(description, total=total))


class _RateColumn(TextColumn):
    def __init__(self, unit: str):
        super().__init__("")
        self.unit = unit

    def render(self, task):  # noqa: D401 - rich API
        from rich.text import Text

        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.1f} {self.unit}/s" if speed else f"-- {self.unit}/s", style="cyan")
