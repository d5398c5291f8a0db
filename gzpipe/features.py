"""`gzpipe features --backbone NAME`: penultimate features of every split, for the boosting stage.

Loads ``<out>/<backbone>/checkpoints/best_model.pth``, runs each split through the eval preset (inference mode;
AMP and channels-last on CUDA; the fastest loader available) and writes
``<out>/<backbone>/features/<split>.parquet``: ``id``, ``f0000 ... fNNNN`` (float16 by default, halving the
~2 GB that 240,000 x 2,048 float32 would take), the 30 targets and the 30 ``mask:`` columns. Rows are written
in row groups as batches arrive, so memory stays bounded whatever the dataset size. ``features/meta.json``
records the checkpoint's and the shards' sha256: an up-to-date set is skipped, a changed checkpoint or shard set is
re-extracted. A set is written in ``.features.replacing`` beside ``features/`` and swapped in whole.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gzpipe import rerun, runs, schema
from gzpipe.device import check_device_name, resolve_device
from gzpipe.errors import GzpipeError
from gzpipe.fileio import atomic_open, check_out_folder, finish_swap, local_path, remove_stale_tmp, staging_dir, swap_in, write_json
from gzpipe.loaders import check_backend_name
from gzpipe.manifest import manifest_digest
from gzpipe.models import BACKBONES, resolve_name
from gzpipe.progress import progress_bar
from gzpipe.stopping import STOP, ends_loading

SPLITS = ("train", "val", "test")
DTYPES = {"float16": (np.float16, pa.float16()), "float32": (np.float32, pa.float32())}


@dataclass
class FeaturesConfig:
    backbone: str
    out: str = "artifacts"
    shards: str | None = None  # default: the shards the backbone was trained on
    backend: str = "auto"
    batch_size: int = 128
    workers: int = 2
    device: str = "auto"
    dtype: str = "float16"
    amp: str = "bf16"
    force: bool = False
    tta: int | None = None  # views averaged per galaxy; None: the backbone run's own `tta` (1 when it has none)
    tta_kind: str | None = None


ROW_GROUP = 8192  # rows per parquet row group (8192 x 2048 float16 = 32 MB held before each write)


def feature_columns(width: int) -> list[str]:
    return [f"f{i:04d}" for i in range(width)]


def schema_for(width: int, dtype: str) -> pa.Schema:
    fields = [pa.field("id", pa.string())]
    fields += [pa.field(c, DTYPES[dtype][1]) for c in feature_columns(width)]
    fields += [pa.field(n, pa.float32()) for n in schema.TARGET_NAMES]
    fields += [pa.field(f"mask:{n}", pa.bool_()) for n in schema.TARGET_NAMES]
    return pa.schema(fields)


# What the features are compared on when they are found finished (``gzpipe.rerun``); the checkpoint's and the shards'
# digests are their inputs: when those change, the features are re-extracted (they describe the model beside them)
SETTINGS = ("dtype", "shards", "tta")
INPUTS = ("checkpoint_sha256", "shards_manifest_sha256")


def _read_meta(feat_dir: Path) -> dict:
    try:
        meta = json.loads((feat_dir / "meta.json").read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _complete(feat_dir: Path, meta: dict) -> bool:
    return all(s in meta.get("splits", {}) and (feat_dir / f"{s}.parquet").exists() for s in SPLITS)


def run_features(cfg: FeaturesConfig, force_hint: str = "--force") -> dict:
    """Extract every split's features, following the re-run contract (``gzpipe.rerun``): a finished, current set is
    skipped (or kept, with the differences listed); a new set - forced, or because the checkpoint or the shards
    changed - is written beside the old one and swapped in when every split is done. An interrupted extraction
    keeps its finished splits, and the same command resumes it."""
    from gzpipe.loaders.tta import check_tta  # torch loads here, not for the boosters that read the features

    name = resolve_name(cfg.backbone)
    if cfg.dtype not in DTYPES:
        raise GzpipeError(f"dtype must be one of {', '.join(DTYPES)}")
    check_device_name(cfg.device)
    check_backend_name(cfg.backend)
    check_out_folder(cfg.out)
    run_dir = runs.backbone_dir(cfg.out, name)
    best = runs.best_checkpoint(run_dir)
    if not best.exists():
        raise GzpipeError(f"no trained model at {best}; run `gzpipe train --backbone {name}` first")
    tcfg = runs.trained_config(run_dir)
    shards = cfg.shards or tcfg["shards"]
    if cfg.shards is not None and not (Path(cfg.shards) / "manifest.json").exists():
        raise GzpipeError(f"--shards {cfg.shards}: no manifest.json there; give a folder written by `gzpipe shard`")
    tta = {"views": cfg.tta or tcfg.get("tta", 1), "kind": cfg.tta_kind or tcfg.get("tta_kind", "dihedral")}
    check_tta(tta["views"], tta["kind"])
    final = runs.features_dir(run_dir)
    staged = staging_dir(final)
    finish_swap(final)
    remove_stale_tmp(final)
    remove_stale_tmp(staged)
    want = {"checkpoint_sha256": runs.digest(best), "dtype": cfg.dtype, "shards": str(shards),
            "shards_manifest_sha256": manifest_digest(shards), "tta": tta}
    have = _read_meta(final)
    what = f"{name} features"
    if _complete(final, have) and not cfg.force:
        changed = [k.split("_")[0] for k in INPUTS if have.get(k) != want[k]]
        if not changed:
            saved = {**{"tta": {"views": 1, "kind": "dihedral"}}, **have}
            rerun.say(rerun.finished_line(what, final, rerun.differences(saved, want, SETTINGS), force_hint))
            return have
        rerun.say(f"{what}: re-extracting: the {' and the '.join(changed)} changed since they were extracted; "
                  f"the old ones stay in {final} until the new ones are complete")
    meta = _read_meta(staged)
    if any(meta.get(k) != v for k, v in want.items()):  # another extraction's leftovers: start it over
        shutil.rmtree(staged, ignore_errors=True)
        meta = {**{k: want[k] for k in ("checkpoint_sha256", "dtype", "shards", "shards_manifest_sha256")},
                "backbone": name, "width": BACKBONES[name].features, "image_size": tcfg["image_size"],
                "tta": tta, "splits": {}}
    todo = [s for s in SPLITS if s not in meta["splits"] or not (staged / f"{s}.parquet").exists()]
    if len(todo) < len(SPLITS):
        rerun.say(rerun.resuming_line(what, f"{', '.join(s for s in SPLITS if s not in todo)} reused from {staged}"))
    trained = runs.load_trained(run_dir, resolve_device(cfg.device), amp=cfg.amp)
    for split in todo:
        meta["splits"][split] = _extract(cfg, trained, shards, split, tta, staged, tcfg["seed"])
        write_json(staged / "meta.json", meta)
    swap_in(staged, final)
    return meta


def _extract(cfg: FeaturesConfig, trained, shards: str, split: str, tta: dict, folder: Path, seed: int) -> dict:
    """One split's features to ``folder/<split>.parquet``, in row groups; returns its entry in meta.json."""
    import torch

    from gzpipe.loaders import create_loader
    from gzpipe.loaders.tta import ViewLoader

    name = trained.name
    np_dtype, _ = DTYPES[cfg.dtype]
    width = BACKBONES[name].features
    loader = ViewLoader(lambda turn: create_loader(shards, split, cfg.backend, trained.image_size, cfg.batch_size,
                                                   train=False, device=trained.device, workers=cfg.workers, seed=seed,
                                                   crop=trained.crop, channels=trained.channels, turn=turn),
                        tta["views"], tta["kind"])
    rows = 0
    path = folder / f"{split}.parquet"
    # the writer closes (its footer written) before atomic_open renames the file, or removes it after an error
    with atomic_open(path, "wb") as f, progress_bar(f"features {name} {split}", total=len(loader), unit="batch") \
            as bar, pq.ParquetWriter(f, schema_for(width, cfg.dtype)) as writer:
        # one row group per ROW_GROUP rows, not per batch: a writer keeps every row group's metadata for every
        # one of the ~2,000 columns until it closes, which grew its memory with the number of batches (+400 MB
        # from 10k to 50k rows at batch 256, benchmarks/RESULTS.md)
        pending: list[pa.Table] = []
        pending_rows = 0
        with ends_loading():
            for batch, vs in loader:
                STOP.check()  # the partial file is removed; finished splits are kept
                feats = torch.stack([trained.features_and_predictions(v)[0] for v in vs]).mean(0)
                pending.append(_table(batch.ids, feats.cpu().numpy().astype(np_dtype),
                                      batch.targets.cpu().numpy(), batch.mask.cpu().numpy(), writer.schema))
                rows += len(batch)
                pending_rows += len(batch)
                if pending_rows >= ROW_GROUP:
                    writer.write_table(pa.concat_tables(pending))
                    pending, pending_rows = [], 0
                bar.advance(1)
        if pending:
            writer.write_table(pa.concat_tables(pending))
    print(f"{name}: {split} features {rows} x {width} ({cfg.dtype}) -> {runs.features_dir(trained.run_dir) / path.name}",
          flush=True)
    return {"rows": rows, "file": path.name, "sha256": runs.digest(path)}


def _table(ids: list[str], x: np.ndarray, y: np.ndarray, m: np.ndarray, schema: pa.Schema) -> pa.Table:
    cols = [pa.array(ids, pa.string())]
    cols += [pa.array(x[:, j]) for j in range(x.shape[1])]
    cols += [pa.array(y[:, j].astype(np.float32)) for j in range(y.shape[1])]
    cols += [pa.array(m[:, j].astype(bool)) for j in range(m.shape[1])]
    return pa.Table.from_arrays(cols, schema=schema)


def features_meta(out: str | Path, backbone: str) -> Path:
    """The features' ``meta.json``: its digest names the checkpoint, the shards and each split's file."""
    return runs.features_dir(runs.backbone_dir(out, resolve_name(backbone))) / "meta.json"


def read_features(out: str | Path, backbone: str, split: str) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """(ids, X float32, targets, mask) of one split; for data that fits in memory (use ``iter_feature_batches``
    to stream)."""
    return gather_batches(iter_feature_batches(out, backbone, split), features_path(out, backbone, split))


def tasks_labelled(out: str | Path, backbone: str, split: str = "train") -> list[str]:
    """The tasks with at least one label in a split's features (its mask columns only are read): what a booster
    trained on them can have learned."""
    masks = [f"mask:{n}" for n in schema.TARGET_NAMES]
    m = pq.read_table(local_path(features_path(out, backbone, split)), columns=masks)
    has = [bool(np.asarray(m.column(c)).any()) for c in masks]
    return [t for t, s in schema.TASK_SLICES.items() if any(has[s])]


def gather_batches(batches, path: Path) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """A split's (ids, x, y, mask) batches, from the features file at ``path``, as whole arrays, each batch written
    into arrays sized from the file's row count: one copy in memory, not the batches and their concatenation
    (3.1 GB instead of 1.6 at GZ2's 190,000 train rows x 2,048 features). ``x`` may be a transform of the file's
    features (a booster's reduction), so its width is the first batch's."""
    n = pq.ParquetFile(local_path(path)).metadata.num_rows
    ids: list[str] = []
    x = y = m = None
    for i, xb, yb, mb in batches:
        if x is None:
            x, y, m = (np.empty((n, b.shape[1]), b.dtype) for b in (xb, yb, mb))
        a = len(ids)
        x[a:a + len(xb)], y[a:a + len(xb)], m[a:a + len(xb)] = xb, yb, mb
        ids += i
    if x is None:
        raise GzpipeError(f"{path} holds no galaxies; every split needs some (shard again with other --val / "
                          "--test shares)")
    return ids, x, y, m


def features_path(out: str | Path, backbone: str, split: str) -> Path:
    p = runs.features_dir(runs.backbone_dir(out, resolve_name(backbone))) / f"{split}.parquet"
    if not p.exists():
        raise GzpipeError(f"{p} not found; run `gzpipe features --backbone {backbone}` first")
    return p


def iter_feature_batches(out: str | Path, backbone: str, split: str, batch_rows: int = 8192):
    """Stream (ids, X float32, targets float32, mask bool) in row batches straight from the parquet file."""
    pf = pq.ParquetFile(local_path(features_path(out, backbone, split)))
    names = pf.schema_arrow.names
    fcols = [c for c in names if c.startswith("f") and c[1:].isdigit()]
    for rb in pf.iter_batches(batch_size=batch_rows):
        t = pa.Table.from_batches([rb])
        ids = t.column("id").to_pylist()
        x = np.column_stack([t.column(c).to_numpy() for c in fcols]).astype(np.float32)
        y = np.column_stack([t.column(n).to_numpy() for n in schema.TARGET_NAMES]).astype(np.float32)
        m = np.column_stack([t.column(f"mask:{n}").to_numpy() for n in schema.TARGET_NAMES]).astype(bool)
        yield ids, x, y, m
