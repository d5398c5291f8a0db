"""Fault injection for the reliability suite: run a `gzpipe` command in a subprocess, kill it at random points
of its real work, and check what it leaves behind.

A kill point is drawn uniformly over the command's working phase: the helper waits until a stage-specific sign of
work appears (``started``), then sleeps a random share of how long that phase took in an uninterrupted run. The
seed comes from ``GZPIPE_CHAOS_SEED`` (default 0), and each draw is printed so that a failure can be replayed.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ENV = {**os.environ, "GZPIPE_PROGRESS": "0", "PYTHONUNBUFFERED": "1"}
SEED = int(os.environ.get("GZPIPE_CHAOS_SEED", "0"))


def gzpipe(*args: str) -> list[str]:
    return [sys.executable, "-m", "gzpipe", *map(str, args)]


def run_ok(cmd: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr[-3000:]}"
    return r


def cli_ready(pid: int) -> bool:
    """True once the process catches SIGTERM (bit 15 of SigCgt in /proc/PID/status): gzpipe's main() is running
    and every signal from here on is handled by gzpipe, not by the interpreter's start-up."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    except OSError:
        pass
    return False


def _wait_ready(p: subprocess.Popen, timeout: float = 120) -> float:
    t0 = time.perf_counter()
    while p.poll() is None and not cli_ready(p.pid):
        if time.perf_counter() - t0 > timeout:
            raise AssertionError("the command never started")
        time.sleep(0.002)
    return time.perf_counter()


@dataclass
class Timing:
    """An uninterrupted run: seconds from gzpipe's main() starting to the process ending (``work``)."""

    work: float


def timed_run(cmd: list[str], timeout: float = 600) -> Timing:
    """Run to completion; time the part after start-up (the part a kill point is drawn from)."""
    errf = tempfile.TemporaryFile("w+")
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errf, text=True, env=ENV)
    ready = _wait_ready(p)
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        raise AssertionError(f"{' '.join(cmd)} took over {timeout}s") from None
    errf.seek(0)
    err = errf.read()
    assert p.returncode == 0, f"{' '.join(cmd)} failed ({p.returncode}):\n{err[-3000:]}"
    return Timing(max(time.perf_counter() - ready, 0.05))


@dataclass
class KillLog:
    kills: list[float] = field(default_factory=list)  # seconds into the working phase
    finished_early: int = 0
    stderr: list[str] = field(default_factory=list)
    returncodes: list[int] = field(default_factory=list)


def kill_at_random_points(cmd: list[str], timing: Timing, kills: int, after_each: Callable[[], None] | None = None,
                          sig: int = signal.SIGKILL, salt: str = "",
                          fresh: Callable[[], None] | None = None) -> KillLog:
    """Start ``cmd`` up to ``kills`` times, each time sending ``sig`` to its process group at a random point of
    its work, and call ``after_each`` (the leftovers check) after every stop. Draws are seeded by command and salt.

    A run can be faster than the timed one (a loaded machine), so it may finish before its draw, or take a stop
    signal only as it exits (status 0). With ``fresh`` (which removes that run's outputs), such a run before any
    stop has landed does not use up a try: the outputs are removed, the next draws come from the run's own
    duration, and it starts again (at most ``kills`` extra times)."""
    rng = random.Random(f"{SEED}:{salt}:{' '.join(cmd[3:5])}")
    log = KillLog()
    work, tries, extra = timing.work, 0, 0
    while tries < kills:
        delay = rng.uniform(0.0, 0.75) * work  # leave margin: a loaded machine runs faster or slower
        errf = tempfile.TemporaryFile("w+")
        # its own process group, signalled as a whole: what a batch scheduler or Ctrl-C in a terminal does
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errf, text=True, env=ENV, start_new_session=True)
        ready = _wait_ready(p)
        try:
            p.wait(timeout=delay)
            log.finished_early += 1  # the remaining work was shorter than the draw
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, sig)
            log.kills.append(round(delay, 3))
        p.wait(timeout=180)
        took = time.perf_counter() - ready
        errf.seek(0)
        log.stderr.append(errf.read())
        log.returncodes.append(p.returncode)
        print(f"chaos seed {SEED} {cmd[3]}: signal {sig} after {delay:.3f}s of {work:.2f}s work "
              f"({'stopped' if p.returncode != 0 else f'finished first, in {took:.2f}s'})", flush=True)
        if after_each is not None:
            after_each()
        if p.returncode == 0 and fresh is not None and extra < kills and not any(log.returncodes[:-1]):
            fresh()  # start again from nothing, with draws inside this run's own duration
            work, extra = min(work, took), extra + 1
            continue
        tries += 1
    return log


def stage_times(cmd: list[str], root: Path, marks: list[str], timeout: float = 600) -> list[float]:
    """Run ``cmd`` to completion and return, for each glob in ``marks`` (in the order the command makes them, under
    ``root``), the seconds after start-up at which it first matched: where each stage of the run ends."""
    errf = tempfile.TemporaryFile("w+")  # not a pipe: nothing reads it while the command runs
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errf, text=True, env=ENV)
    ready = _wait_ready(p)
    seen: dict[int, float] = {}
    while p.poll() is None:
        for i, pattern in enumerate(marks):
            if i not in seen and any(root.glob(pattern)):
                seen[i] = time.perf_counter() - ready
        if time.perf_counter() - ready > timeout:
            p.kill()
            raise AssertionError(f"{' '.join(cmd)} took over {timeout}s")
        time.sleep(0.01)
    end = time.perf_counter() - ready
    errf.seek(0)
    assert p.returncode == 0, f"{' '.join(cmd)} failed ({p.returncode}):\n{errf.read()[-3000:]}"
    return [seen.get(i, end) for i in range(len(marks))]


def kill_in_every_stage(cmd: list[str], root: Path, marks: list[str], ends: list[float],
                        after_each: Callable[[], None] | None = None, sig: int = signal.SIGKILL) -> KillLog:
    """Stop a resumable command once inside each of its stages, in order, re-running it after every stop.

    Stage k runs from mark k-1 (or start-up) to mark k; ``ends`` are the marks' times in an uninterrupted run
    (``stage_times``). Try k waits for mark k-1 to appear (the stage before, which the last stop had interrupted, is
    finished by this run), then sends ``sig`` to the process group a random share (0 to 0.9) of stage k's duration
    later. Draws over the whole run would mostly fall after the end of what a resumed run has left to do; these land
    in every stage, each at its own random point."""
    rng = random.Random(f"{SEED}:stages:{' '.join(cmd[3:5])}")
    log = KillLog()
    starts = [0.0, *ends[:-1]]
    for k, (start, end) in enumerate(zip(starts, ends)):
        errf = tempfile.TemporaryFile("w+")
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errf, text=True, env=ENV, start_new_session=True)
        ready = _wait_ready(p)
        while k and p.poll() is None and not any(root.glob(marks[k - 1])):
            time.sleep(0.005)
        delay = rng.uniform(0.0, 0.9) * (end - start)
        try:
            p.wait(timeout=delay)
            log.finished_early += 1
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, sig)
            log.kills.append(round(time.perf_counter() - ready, 3))
        p.wait(timeout=180)
        errf.seek(0)
        log.stderr.append(errf.read())
        log.returncodes.append(p.returncode)
        print(f"chaos seed {SEED} {cmd[3]}: stage {k + 1} of {len(marks)} (before {marks[k]!r}): signal {sig} "
              f"{delay:.3f}s into it ({'stopped' if p.returncode != 0 else 'finished first'})", flush=True)
        if after_each is not None:
            after_each()
    return log


# ---- what a run leaves behind --------------------------------------------------------------------------------

def _check_tar(p: Path) -> None:
    with tarfile.open(p) as t:
        for m in t:
            if m.isfile():
                t.extractfile(m).read()


def _check_idx(p: Path) -> None:
    lines = p.read_text().splitlines()
    version, n = lines[0].split()
    assert version == "v1.2" and int(n) == len(lines) - 1, p


def _check_parquet(p: Path) -> None:
    import pyarrow.parquet as pq

    pq.read_table(p)


def _check_pth(p: Path) -> None:
    import torch

    torch.load(p, map_location="cpu", weights_only=True)


def _check_png(p: Path) -> None:
    from PIL import Image

    with Image.open(p) as im:
        im.load()


def _check_model_txt(p: Path) -> None:
    if p.parent.name == "models":  # LightGBM's text format
        import lightgbm as lgb

        lgb.Booster(model_file=str(p))
    else:
        assert p.read_text().strip(), p


def _check_ubj(p: Path) -> None:
    import xgboost as xgb

    xgb.Booster(model_file=str(p))


def _check_csv(p: Path) -> None:
    import pandas as pd

    pd.read_csv(p)


def _check_yaml(p: Path) -> bool:
    import yaml
    return isinstance(yaml.safe_load(p.read_text()), dict)


CHECKS = {".tar": _check_tar, ".idx": _check_idx, ".json": lambda p: json.loads(p.read_text()),
          ".parquet": _check_parquet, ".pth": _check_pth, ".png": _check_png, ".jpg": _check_png,
          ".txt": _check_model_txt, ".ubj": _check_ubj, ".csv": _check_csv,
          ".html": lambda p: p.read_text().rstrip().endswith("</html>"), ".yaml": _check_yaml}


def final_files(root: Path) -> list[Path]:
    """Files under their final names: not dot-files (temporaries are ``.NAME.tmp-PID``)."""
    return sorted(p for p in root.rglob("*") if p.is_file() and not any(part.startswith(".") for part in
                                                                          p.relative_to(root).parts))


def assert_no_half_written_files(root: Path) -> int:
    """Every file under a final name opens and reads completely with its own reader; returns how many."""
    files = final_files(root) if root.exists() else []
    for p in files:
        check = CHECKS.get(p.suffix)
        assert check is not None, f"no completeness check for {p}"
        try:
            ok = check(p)
        except Exception as e:  # noqa: BLE001
            raise AssertionError(f"half-written or corrupt file under its final name: {p} ({type(e).__name__}: {e})")
        assert ok is not False, f"half-written file under its final name: {p}"
    return len(files)


def temporaries(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob(".*.tmp-*")) if root.exists() else []


def digests(root: Path, skip: Callable[[Path], bool] = lambda p: False) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in final_files(root) if not skip(p)}


# ---- the commands under test -----------------------------------------------------------------------------------

def shard_cmd(release: Path, out: Path, *extra: str) -> list[str]:
    return gzpipe("shard", "--catalog", release / "gz2_hart16.csv", "--mapping", release / "gz2_filename_mapping.csv",
                  "--images", release / "images", "--out", out, "--shard-size", "8", "--val", "0.2", "--test", "0.2",
                  *extra)


TRAIN_FLAGS = ("--epochs", "3", "--image-size", "32", "--batch-size", "4", "--workers", "1", "--device", "cpu",
               "--warmup-epochs", "1", "--backend", "pil", "--checkpoint-minutes", "0")


def train_cmd(shards: Path, out: Path, backbone: str = "resnet50") -> list[str]:
    return gzpipe("train", "--backbone", backbone, "--shards", shards, "--out", out, *TRAIN_FLAGS)


# ---- a full disk, injected -------------------------------------------------------------------------------------

class FullDisk:
    """Files opened by gzpipe's atomic writer raise ENOSPC once ``budget`` bytes have been written in total."""

    def __init__(self, budget: int):
        self.budget = budget

    def open(self, path, mode="r", *a, **kw):
        import errno

        f = open(path, mode, *a, **kw)
        disk = self

        class Limited:
            def __getattr__(self, name):
                return getattr(f, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                f.close()

            def write(self, data):
                disk.budget -= len(data)
                if disk.budget < 0:
                    raise OSError(errno.ENOSPC, "No space left on device", str(path))
                return f.write(data)

        return Limited()


def full_disk_cmd(budget: int, *args: str) -> list[str]:
    """`gzpipe ARGS` in a subprocess whose atomic writes hit a full disk after ``budget`` bytes."""
    return [sys.executable, str(Path(__file__)), "--full-disk", str(budget), *map(str, args)]


if __name__ == "__main__":  # python chaos.py --full-disk BYTES gzpipe-args...
    from gzpipe import fileio
    from gzpipe.cli import main

    assert sys.argv[1] == "--full-disk"
    fileio.open = FullDisk(int(sys.argv[2])).open
    main(sys.argv[3:])
