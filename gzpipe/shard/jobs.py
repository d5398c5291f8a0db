"""One shard's work, run in a worker process: read and check each JPEG, write the tar and its DALI index, and record
a done-file so that a rerun from the same plan reuses the shard (``gzpipe.shard.stage`` plans the jobs).
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gzpipe.fileio import atomic_open, sha256_file
from gzpipe.pixels import DEFAULT_STRETCH
from gzpipe.progress import progress_bar
from gzpipe.stopping import worker_map
from gzpipe.shard.images import ImageRejected
from gzpipe.shard.store import load_jpeg
from gzpipe.shard.tarwrite import ShardInfo, write_shard

MANIFEST_VERSION = 1  # also part of every job's plan digest: a new format rebuilds every shard
DONE_DIR = ".done"


@dataclass
class Job:
    """One shard's work. Its rows' metadata travel as columns (``meta_cols`` / ``meta_values``): the worker builds
    the per-sample JSON, so the main process does no per-row Python work for it."""

    name: str
    split: str
    rows: list[int]
    keys: list[str]
    paths: list  # a file path each, or the image's bytes (a catalogue that carries its images)
    targets: np.ndarray
    masks: np.ndarray
    ids: list[str]
    meta_cols: list[str]
    meta_values: list[list]  # one list per column, the rows' values
    resize: int | None = None
    quality: int = 90
    verify: str = "decode"
    stretch: str = DEFAULT_STRETCH  # deep images and FITS to 8 bits (gzpipe.pixels.stretch)

    @property
    def meta(self) -> list[dict]:
        cols = [_column(c) for c in self.meta_values]
        return [{"id": gid, "row": int(r), **{c: col[k] for c, col in zip(self.meta_cols, cols)}}
                for k, (gid, r) in enumerate(zip(self.ids, self.rows))]


@dataclass
class Rejection:
    row: int
    id: str
    reason: str
    code: str
    labels: dict | None = None  # a duplicate row whose labels differ from the kept row's: how (union.row_difference)


def _column(values: list) -> list:
    """A metadata column's values as JSON-ready Python values (NaN and NA as None), converting per value only the
    columns that need it."""
    if all(type(v) in (str, int, bool) for v in values):
        return values
    if all(type(v) in (float, int) for v in values):
        return [None if v != v else v for v in values]
    return [_py(v) for v in values]


def _py(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return None if math.isnan(float(v)) else float(v)
    if v is None or (isinstance(v, str) is False and pd.isna(v)):
        return None
    return v


def _digest(job: Job, meta: list[dict]) -> str:
    h = hashlib.sha256()
    paths = [p if isinstance(p, str) else "sha256:" + hashlib.sha256(p).hexdigest() for p in job.paths]
    # the stretch only where it is not the default: shards planned before it existed keep their digest (and are reused)
    extra = [job.stretch] if job.stretch != DEFAULT_STRETCH else []
    h.update(json.dumps([job.name, job.keys, paths, meta, job.resize, job.quality, job.verify,
                         MANIFEST_VERSION, *extra], default=str).encode())
    h.update(job.targets.astype("<f4").tobytes())
    h.update(job.masks.astype("u1").tobytes())
    return h.hexdigest()


def execute(jobs: list[Job], out: Path, workers: int) -> tuple[list[ShardInfo], list[Rejection], list[Rejection], int]:
    """Every job's shard, written or reused: (infos, rejections, conversions, how many shards were reused)."""
    total = sum(len(j.rows) for j in jobs)
    reused = 0
    infos: list[ShardInfo] = []
    rejections: list[Rejection] = []
    converted: list[Rejection] = []
    workers = max(1, min(workers, len(jobs) or 1))
    global _FORKED_JOBS
    # Forked workers inherit the plan: they are sent a shard's number, not its thousand rows (pickling them cost
    # seconds at 240,000 rows). Other start methods get each job as it is.
    forked = workers > 1 and multiprocessing.get_start_method() == "fork"
    _FORKED_JOBS = jobs if forked else []
    fn, args = (_run_forked_job, range(len(jobs))) if forked else (_run_job, jobs)
    try:
        with progress_bar("shard", total=total, unit="img") as bar, \
                worker_map(fn, args, [out] * len(jobs), workers=workers) as results:
            for job, (info, rej, conv, was_reused) in zip(jobs, results):
                reused += was_reused
                infos.append(info)
                rejections += rej
                converted += conv
                bar.advance(len(job.rows))
    finally:
        _FORKED_JOBS = []
    return infos, rejections, converted, reused


_FORKED_JOBS: list = []
_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"))  # one encoder, not one per sample


def _run_forked_job(index: int, out: Path):
    return _run_job(_FORKED_JOBS[index], out)


def _run_job(job: Job, out: Path) -> tuple[ShardInfo, list[Rejection], list[Rejection], bool]:
    """Write one shard, or reuse it when a previous run already finished it from the same plan (its tar and index
    checked against the sha256 the run recorded, so a file a crash left incomplete is rewritten: shards are written
    without a flush each, and the run syncs them once at its end)."""
    done = out / DONE_DIR / f"{job.name}.json"
    tar = out / job.name
    metas = job.meta
    plan_digest = _digest(job, metas)
    if done.exists() and tar.exists() and tar.with_suffix(".idx").exists():
        try:
            rec = json.loads(done.read_text())
            if (rec["plan"] == plan_digest and rec["info"]["sha256"] == sha256_file(tar)
                    and rec["index_sha256"] == sha256_file(tar.with_suffix(".idx"))):
                return (ShardInfo(**rec["info"]), [Rejection(**r) for r in rec["rejected"]],
                        [Rejection(**r) for r in rec["converted"]], True)
        except (ValueError, KeyError, TypeError):
            pass  # unreadable record: rebuild the shard
    samples, rejected, converted = [], [], []
    targets = job.targets.astype("<f4")
    masks = job.masks.astype("u1")
    for i, row in enumerate(job.rows):
        try:
            src = job.paths[i]  # a file's path, or the image's bytes where the catalogue carries them
            jpg, note = load_jpeg(src, job.verify, job.resize, job.quality,
                                  name=f"the image of galaxy {job.ids[i]}" if isinstance(src, bytes) else None,
                                  stretch=job.stretch)
        except ImageRejected as e:
            rejected.append(Rejection(row, job.ids[i], str(e), e.code))
            continue
        meta = metas[i]
        if note:
            converted.append(Rejection(row, meta["id"], note, "converted"))
            meta = {**meta, "converted": note}
        samples.append((job.keys[i], {
            "jpg": jpg,
            "targets": targets[i].tobytes(),
            "mask": masks[i].tobytes(),
            "json": _JSON.encode(meta).encode(),
        }))
    info = write_shard(tar, job.split, samples, durable=False)
    rec = {"plan": plan_digest, "info": asdict(info), "index_sha256": sha256_file(tar.with_suffix(".idx")),
           "rejected": [asdict(r) for r in rejected],
           "converted": [asdict(r) for r in converted]}
    with atomic_open(done, "w", durable=False) as f:
        json.dump(rec, f)
    return info, rejected, converted, False
