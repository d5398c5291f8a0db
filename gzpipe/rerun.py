"""The re-run contract: what a stage does when its output is already there. It is stated once, here, and every
stage (shard, train, features, boost, ensemble; predict and study through them) says it in these words.

=====================================  ========================================================================
The output holds                       A re-run of the stage
=====================================  ========================================================================
a finished run, the same settings      is skipped, and says so
a finished run, other settings         keeps it and is skipped; the line lists the differences and the flag that
                                       replaces it (``--restart`` for train, ``--force`` elsewhere)
a finished run whose inputs changed    is an error naming what changed and that flag (``gzpipe study`` rebuilds
                                       it itself, saying why)
an interrupted run                     resumes it where the stage can (shard: finished shards; train:
                                       checkpoints; features: finished splits) and says how much was reused
the replace flag                       checks every option and input first, then builds the new run *beside* the
                                       old one (``fileio.staging_dir``) and swaps it in only once it is
                                       complete: a failed or interrupted replacement leaves the finished run
                                       exactly as it was, and re-running the same command resumes the
                                       replacement where the stage can resume
=====================================  ========================================================================

Settings are the options that change what a stage writes (not ``--workers``, ``--device`` and the like).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

_MISSING = object()


def _shown(v) -> str:
    return "none" if v is None else (f"{v:g}" if isinstance(v, float) else str(v))


def differences(saved: Mapping, now: Mapping, keys: Iterable[str] | None = None) -> list[str]:
    """``key saved -> now`` for each setting that differs; a key the saved run does not record is not counted
    (an older run that predates it)."""
    out = []
    for k in (keys if keys is not None else now.keys()):
        old = saved.get(k, _MISSING)
        if old is _MISSING:
            continue
        new = now.get(k)
        if old != new:
            out.append(f"{k} {_shown(old)} -> {_shown(new)}")
    return out


def finished_line(what: str, where: str | Path, diff: list[str], flag: str, also: str = "") -> str:
    """The line a stage prints when it finds its run finished: skipped (the same settings) or kept (other
    settings, listed); ``flag`` replaces it, ``also`` is a stage's extra choice (train's ``--skip``)."""
    more = f", {also}" if also else ""
    if diff:
        return (f"{what}: a finished run with other settings is in {where} ({'; '.join(diff)}); kept and skipped: "
                f"{flag} replaces it{more}")
    return f"{what}: finished with these settings in {where}; skipped ({flag} replaces it{more})"


def stale_line(what: str, changes: list[str], fix: str) -> str:
    """A finished run whose inputs changed since it was built (an error: the stage does not guess); ``fix`` names
    the flag that replaces it."""
    return f"{what} is out of date: {'; '.join(changes)} since it was built; {fix}"


def resuming_line(what: str, reused: str) -> str:
    return f"{what}: resuming the interrupted run ({reused})"


def replacing_line(what: str, staged: Path, final: Path) -> str:
    return (f"{what}: building the replacement in {staged}; the finished run in {final} stays as it is until the "
            "new one is complete")


def say(line: str) -> None:
    print(line, flush=True)
