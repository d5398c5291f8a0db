"""Progress bars (rich) with rate and ETA; quiet when not on a terminal unless asked."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)


class _Bar:
    def __init__(self, progress: Progress | None, task):
        self._p, self._t = progress, task

    def advance(self, n: float = 1) -> None:
        if self._p is not None:
            self._p.advance(self._t, n)

    def update(self, **fields) -> None:
        if self._p is not None:
            self._p.update(self._t, **fields)


def _enabled() -> bool:
    flag = os.environ.get("GZPIPE_PROGRESS", "auto")
    if flag in ("0", "off", "false"):
        return False
    return flag in ("1", "on", "true") or sys.stderr.isatty()


@contextlib.contextmanager
def progress_bar(description: str, total: float | None, unit: str = "items") -> Iterator[_Bar]:
    """A bar on stderr showing done/total, rate in ``unit``/s and ETA. Off when stderr is not a terminal
    (CI logs, pipes) unless ``GZPIPE_PROGRESS=1``."""
    if not _enabled():
        yield _Bar(None, None)
        return
    columns = [
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
        None,  # rate, set below
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
    ]
    columns[4] = _RateColumn(unit)
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
