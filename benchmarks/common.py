"""Helpers shared by the benchmarks: machine description, medians, JSON rows, locating the real sample."""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GZPIPE_SHARED", ROOT.parent / "shared"))
SAMPLE = SHARED / "data" / "gz2_sample"


def machine() -> str:
    from gzpipe.bench.machine import describe

    return describe()


def timed(fn, repeats: int = 3, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def emit(row: dict) -> None:
    print(json.dumps(row), flush=True)
