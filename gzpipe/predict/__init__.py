"""`gzpipe predict --model artifacts/<name> IMAGES...`: any trained model on new galaxies, from a handful of files to
a survey's millions.

Inputs (``gzpipe.predict.inputs``): image files, folders, tar files, shard folders, catalogues with an id and an
image path column. Images reach the model through the same loader backends, reduction and eval preset as in
training (``--backend``: DALI or nvJPEG on a GPU, Pillow on CPU workers). ``--tta N`` averages N views (the exact
dihedral views by default). The work is done in parts (``gzpipe.predict.parts``), each written as soon as it is
finished, so a killed run re-does only unfinished parts; under ``torchrun`` the ranks share the parts.

Output: one row per input, in input order: ``id``, ``path``, ``error`` (empty, or why the image could not be used -
the rest go on), the 30 fractions under their Hart16 answer names and, with ``cumulative``, the Kaggle-style
cumulative fractions (``Class1.1`` ...), and for a model whose boosters learnt several catalogues' labels, ``catalogue``
(whose convention each row follows: ``--catalogue``). Parquet (the default beyond ``CSV_MAX_ROWS`` rows) or CSV, by the
suffix of ``--out``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from gzpipe import schema
from gzpipe.boost.catalogues import OWN, catalogue_of
from gzpipe.device import check_device_name
from gzpipe.errors import GzpipeError
from gzpipe.fileio import atomic_open, local_path, remove_stale_tmp, write_json
from gzpipe.loaders import check_backend_name
from gzpipe.loaders.tta import check_tta
from gzpipe.predict.inputs import collect_inputs
from gzpipe.predict.parts import Part, plan_digest, plan_parts, share
from gzpipe.progress import progress_bar
from gzpipe.stopping import STOP, ends_loading

CSV_MAX_ROWS = 5000
SUFFIXES = (".csv", ".parquet")


@dataclass
class PredictConfig:
    model: str
    inputs: list[str]
    out: str | None = None  # None: predictions.csv, or predictions.parquet beyond CSV_MAX_ROWS rows
    tta: int = 1
    tta_kind: str = "dihedral"
    cumulative: bool = False
    batch_size: int = 32
    workers: int = 2
    device: str = "auto"
    backend: str = "auto"
    part_size: int = 10_000
    images: str | None = None  # base folder of a catalogue's relative paths
    id_column: str | None = None
    path_column: str | None = None
    keep_parts: bool = False
    catalogue: str | None = None  # by-catalogue boosters: whose labels to predict (None: their largest; "own":
    #                                each galaxy's, by its id's prefix)
    spread: bool = False  # an ensemble: each target's spread across its members (``<target>_spread`` columns)


@dataclass
class PredictResult:
    out: Path
    rows: int
    errors: int
    seconds: float
    skipped: list[str] = field(default_factory=list)

    def frame(self) -> pd.DataFrame:
        """The whole output as a DataFrame (reads it back: for outputs that fit in memory)."""
        if self.out.suffix != ".csv":
            return pd.read_parquet(local_path(self.out))
        df = pd.read_csv(self.out, keep_default_na=False, dtype={"id": str, "path": str, "error": str,
                                                                 "catalogue": str})
        for c in df.columns[3:].drop("catalogue", errors="ignore"):
            df[c] = pd.to_numeric(df[c], errors="coerce")  # an error row's empty cells are NaN
        return df


def check_output(out: Path) -> None:
    """Before any work: a file name with a known suffix, in a folder that exists (or can be made), not a folder."""
    if out.exists() and out.is_dir():
        raise GzpipeError(f"--out {out} is a folder; give a file name such as {out / 'predictions.parquet'}")
    if out.suffix.lower() not in SUFFIXES:
        raise GzpipeError(f"--out {out}: give a file name ending in {' or '.join(SUFFIXES)}")
    parent = out.parent
    if parent.exists() and not parent.is_dir():
        raise GzpipeError(f"--out {out}: {parent} is a file, not a folder")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise GzpipeError(f"--out {out}: cannot create {parent} ({e.strerror or e})") from None
    if not os.access(parent, os.W_OK):
        raise GzpipeError(f"--out {out}: {parent} is not writable")


def _validate(cfg: PredictConfig) -> None:
    check_tta(cfg.tta, cfg.tta_kind)
    check_device_name(cfg.device)
    check_backend_name(cfg.backend)
    for key, low in (("batch_size", 1), ("workers", 0), ("part_size", 1)):
        if getattr(cfg, key) < low:
            raise GzpipeError(f"{key} must be at least {low}, got {getattr(cfg, key)}")
    if cfg.out is not None:
        check_output(Path(cfg.out))


def _note_fewer_views(predictor, cfg: PredictConfig) -> None:
    """A backbone whose figures were measured on more test-time views than asked for here: say so, and how to match
    them (its recorded figures are for those views, not for the fewer asked for)."""
    for name, b in predictor.backbones.items():
        n, kind = int(b.config.get("tta") or 1), b.config.get("tta_kind") or "dihedral"
        if n > cfg.tta:
            print(f"note: {name}'s figures were measured averaging {n} views; add --tta {n} --tta-kind {kind} to "
                  f"predict as it was scored (slower, {n}x the forward passes)", flush=True)


def _columns(cumulative: bool) -> list[str]:
    return ["id", "path", "error", *schema.TARGET_NAMES, *(schema.KAGGLE_COLUMNS if cumulative else ())]


def _part_table(ids: list[str], paths: list[str], errors: list[str], pred: np.ndarray, cumulative: bool,
                conventions=None, spread: np.ndarray | None = None) -> pa.Table:
    cols = {"id": pa.array(ids, pa.string()), "path": pa.array(paths, pa.string()),
            "error": pa.array(errors, pa.string())}
    for j, n in enumerate(schema.TARGET_NAMES):
        cols[n] = pa.array(pred[:, j], pa.float32())
    if cumulative:  # Kaggle's 37 columns in its order; task 8 (Class8.x) is not among GZ2's 30 targets: empty
        cum = schema.conditional_to_cumulative(pred)
        empty = np.full(len(pred), np.nan, np.float32)
        for c in schema.KAGGLE_COLUMNS:
            j = schema.KAGGLE_TARGET_COLUMNS.index(c) if c in schema.KAGGLE_TARGET_COLUMNS else None
            cols[c] = pa.array(cum[:, j] if j is not None else empty, pa.float32())
    if conventions is not None:  # a model that learnt several catalogues' labels: whose each row follows
        cols["catalogue"] = pa.array(list(conventions), pa.string())
    if spread is not None:  # an ensemble: how far its members are from each other, per target
        for j, n in enumerate(schema.TARGET_NAMES):
            cols[f"{n}_spread"] = pa.array(spread[:, j], pa.float32())
    return pa.table(cols)


def _run_part(part: Part, predictor, cfg: PredictConfig, bar) -> pa.Table:
    """Predict one part: every (image size, crop) view its members need, then the weighted sum; error rows are NaN."""
    from gzpipe.loaders import Units, create_loader, create_unit_loader
    from gzpipe.loaders.tta import ViewLoader

    acc: np.ndarray | None = None
    order: dict[str, int] = {}
    errors: list[str] = []
    first = True
    want_spread = cfg.spread and len(predictor.members) > 1
    members: dict[str, np.ndarray] = {}
    for view in predictor.views:
        size, crop, channels = view
        device = next(iter(predictor.backbones.values())).device

        def make(turn: float, size=size, crop=crop, channels=channels, view=view):
            if part.kind == "files":
                return create_unit_loader(Units(part.chunks(predictor.stretch, predictor.stored(view)), part.rows),
                                          cfg.backend, size, cfg.batch_size, device=device, workers=cfg.workers,
                                          crop=crop, channels=channels, turn=turn)
            return create_loader(part.shards, part.shards.split, cfg.backend, size, cfg.batch_size, train=False,
                                 device=device, workers=cfg.workers, rank=0, world_size=1, crop=crop,
                                 channels=channels, turn=turn)

        loader = ViewLoader(make, cfg.tta, cfg.tta_kind)
        if acc is None:
            acc = np.zeros((part.rows, schema.N_TARGETS))
            errors = [""] * part.rows
        with ends_loading():
            for batch, vs in loader:
                STOP.check()  # a safe point: the part's file is written only when the part is whole
                if part.kind == "files":
                    pos = [int(i) for i in batch.ids]
                else:
                    if first:
                        for i in batch.ids:
                            order.setdefault(i, len(order))
                    pos = [order[i] for i in batch.ids]
                gids = [part.items[q].id for q in pos] if part.kind == "files" else list(batch.ids)
                got: dict | None = {} if want_spread else None
                acc[pos] += predictor.predict(vs, view, cfg.tta, cfg.tta_kind, gids, got)
                for name, p in (got or {}).items():
                    members.setdefault(name, np.zeros((part.rows, schema.N_TARGETS)))[pos] = p
                if batch.errors:
                    for q, e in zip(pos, batch.errors):
                        if e:
                            errors[q] = e
                if first:
                    bar.advance(len(batch))
        first = False
    if part.kind == "files":
        ids = [it.id for it in part.items]
        paths = [it.path for it in part.items]
    else:
        ids = sorted(order, key=order.get)
        paths = [part.folder] * len(ids)
    bad = np.array([bool(e) for e in errors])[:, None]
    pred = np.where(bad, np.nan, np.clip(acc, 0.0, 1.0))
    for t in predictor.untrained():  # a question the model had no labels for: empty, not a confident-looking 0.5
        pred[:, schema.TASK_SLICES[t]] = np.nan
    spread = np.where(bad | np.isnan(pred), np.nan, predictor.spread(members, pred)) if want_spread else None
    return _part_table(ids, paths, errors, pred, cfg.cumulative, predictor.conventions(ids), spread)


def _merge(parts_dir: Path, parts: list[Part], out: Path) -> tuple[int, int, str, Counter]:
    """Stream the part files, in order, into ``out`` (Parquet row groups, or CSV chunks); returns (rows, errors, the
    first error's text, rows per (catalogue convention, the catalogue the id names))."""
    rows = errors = 0
    first = ""
    convention: Counter = Counter()
    with atomic_open(out, "wb" if out.suffix == ".parquet" else "w") as f, contextlib.ExitStack() as stack:
        writer = None
        for i, p in enumerate(parts):
            t = pq.read_table(local_path(parts_dir / f"{p.name}.parquet"))
            rows += t.num_rows
            failed = [e for e in t.column("error").to_pylist() if e]
            errors += len(failed)
            first = first or (failed[0] if failed else "")
            if "catalogue" in t.column_names:
                convention.update(zip(t.column("catalogue").to_pylist(), catalogue_of(t.column("id").to_pylist())))
            if out.suffix == ".parquet":
                writer = writer or stack.enter_context(pq.ParquetWriter(f, t.schema))
                writer.write_table(t)
            else:
                t.to_pandas().to_csv(f, index=False, header=(i == 0), float_format="%.6f")
    return rows, errors, first, convention


def run_predict(cfg: PredictConfig) -> PredictResult:
    from gzpipe import runs
    from gzpipe.device import resolve_device
    from gzpipe.predict.model import load_predictor
    from gzpipe.train import distributed as ddp

    _validate(cfg)
    runs.model_kind(Path(cfg.model))  # a clear word about the model folder before the inputs are read
    found = collect_inputs(cfg.inputs, Path(cfg.images) if cfg.images else None, cfg.id_column, cfg.path_column)
    total = found.count
    out = Path(cfg.out) if cfg.out else Path("predictions" + (".parquet" if total > CSV_MAX_ROWS else ".csv"))
    check_output(out)
    d = ddp.setup("cpu")  # gloo, for the barrier between ranks; each rank predicts its own parts
    try:
        device = resolve_device(cfg.device, d.local_rank if d.enabled else None)
        predictor = load_predictor(cfg.model, device)
        predictor.use_catalogue(cfg.catalogue)
        if d.main:
            _note_fewer_views(predictor, cfg)
        parts = plan_parts(found.items, found.shard_folders, cfg.part_size)
        settings = {"model": str(Path(cfg.model).resolve()), "tta": cfg.tta, "tta_kind": cfg.tta_kind,
                    "cumulative": cfg.cumulative, "catalogue": predictor.catalogue, "inputs": runs.input_record(
                        {m: t.checkpoint for m, t in predictor.backbones.items()}, Path(cfg.model))}
        digest = plan_digest(parts, settings)
        parts_dir = out.with_name(out.name + ".parts")
        if d.main:
            _prepare_parts_dir(parts_dir, digest, len(parts))
        ddp.barrier(d)
        # the parts still to do, shared round-robin: shared before dropping the finished ones, a resumed run could
        # give one rank every part left and the others none (they would time out at the barrier below)
        left = [p for p in parts if not (parts_dir / f"{p.name}.parquet").exists()]
        todo = share(left, d.rank, d.world)
        ddp.barrier(d)  # every rank has read the folder before any writes a new part into it
        if len(left) < len(parts) and d.main:
            print(f"predict: {len(parts) - len(left)} of {len(parts)} parts already done in {parts_dir}; resuming",
                  flush=True)
        t0 = time.perf_counter()
        with progress_bar(f"predict {predictor.name}", total=sum(p.rows for p in todo), unit="img") as bar:
            for p in todo:
                table = _run_part(p, predictor, cfg, bar)
                with atomic_open(parts_dir / f"{p.name}.parquet", "wb") as f:
                    pq.write_table(table, f)
        ddp.barrier(d)
        if not d.main:
            return PredictResult(out, 0, 0, time.perf_counter() - t0, found.skipped)
        rows, errors, first_error, convention = _merge(parts_dir, parts, out)
        if not cfg.keep_parts:
            shutil.rmtree(parts_dir, ignore_errors=True)
        seconds = time.perf_counter() - t0
    finally:
        ddp.cleanup(d)
    res = PredictResult(out, rows, errors, seconds, found.skipped)
    _summary(res, predictor, cfg, found, convention)
    if rows and errors == rows:  # like `shard` with nothing written: the output stays, for its error column
        raise GzpipeError(f"no image could be predicted: all {rows} input(s) were unreadable (e.g. {first_error[:160]});"
                          f" each with its reason in the error column of {out}")
    return res


def _prepare_parts_dir(parts_dir: Path, digest: str, n: int) -> None:
    plan = parts_dir / "plan.json"
    if parts_dir.exists():
        import json

        try:
            same = json.loads(plan.read_text()).get("digest") == digest
        except (OSError, ValueError):
            same = False
        if not same:  # parts of another plan (other inputs, model or options): start over
            shutil.rmtree(parts_dir)
    parts_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(parts_dir)
    if not plan.exists():
        write_json(plan, {"digest": digest, "parts": n})


def _summary(res: PredictResult, predictor, cfg: PredictConfig, found, convention: Counter) -> None:
    notes = []
    if res.errors:
        notes.append(f"{res.errors} could not be read (see the error column)")
    if found.skipped:
        shown = "; ".join(found.skipped[:3]) + (f"; and {len(found.skipped) - 3} more" if len(found.skipped) > 3 else "")
        notes.append(f"skipped {len(found.skipped)} file(s) that are not images: {shown}")
    if found.duplicates:
        notes.append(f"{found.duplicates} duplicate input path(s) were predicted once")
    if predictor.catalogue == OWN:
        counts = [f"{n} as {c}" for (c, named), n in sorted(convention.items()) if c == named]
        counts += [f"{n} whose id names no catalogue it learnt, as {c}" for (c, named), n in sorted(convention.items())
                   if c != named]
        notes.append(f"each galaxy as its own catalogue labels it, by its id's prefix ({', '.join(counts)}; the "
                     f"column catalogue; its boosters learnt {', '.join(predictor.catalogues())})")
    elif predictor.catalogue:
        notes.append(f"as the {predictor.catalogue} catalogue labels galaxies (its boosters learnt "
                     f"{', '.join(predictor.catalogues())}; --catalogue picks, own: each galaxy's)")
    if predictor.untrained():
        notes.append(f"left empty (NaN): {', '.join(predictor.untrained())}, which the model had no training "
                     "labels for")
    rate = (res.rows / res.seconds) if res.seconds > 0 else 0.0
    print(f"predicted {res.rows - res.errors} image(s) with {predictor.name} ({predictor.kind}"
          + (f", TTA x{cfg.tta} {cfg.tta_kind}" if cfg.tta > 1 else "") + f"; {rate:,.0f} img/s) -> {res.out}"
          + ("; " + "; ".join(notes) if notes else ""), flush=True)
