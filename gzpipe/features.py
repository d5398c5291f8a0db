"""`gzpipe features --backbone NAME`: penultimate features of every split, for the boosting stage.

Loads ``<out>/<backbone>/checkpoints/best_model.pth``, runs each split through the eval preset (inference mode;
AMP and channels-last on CUDA; the fastest loader available) and writes
``<out>/<backbone>/features/<split>.parquet``: ``id``, ``f0000 ... fNNNN`` (float16 by default, halving the
~2 GB that 240,000 x 2,048 float32 would take), the 30 targets and the 30 ``mask:`` columns. Rows are written
in row groups as batches arrive, so memory stays bounded whatever the dataset size. ``features/meta.json``
records the checkpoint's sha256: an up-to-date split is skipped, a changed checkpoint is re-extracted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from gzpipe import schema
from gzpipe.errors import GzpipeError
from gzpipe.fileio import atomic_open, remove_stale_tmp, sha256_file, write_json
from gzpipe.loaders import create_loader
from gzpipe.models import BACKBONES, create_model, resolve_name
from gzpipe.progress import progress_bar
from gzpipe.train import checkpoint as ckpt
from gzpipe.train.loop import amp_context

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


def feature_columns(width: int) -> list[str]:
    return [f"f{i:04d}" for i in range(width)]


def schema_for(width: int, dtype: str) -> pa.Schema:
    fields = [pa.field("id", pa.string())]
    fields += [pa.field(c, DTYPES[dtype][1]) for c in feature_columns(width)]
    fields += [pa.field(n, pa.float32()) for n in schema.TARGET_NAMES]
    fields += [pa.field(f"mask:{n}", pa.bool_()) for n in schema.TARGET_NAMES]
    return pa.schema(fields)


def run_features(cfg: FeaturesConfig) -> dict:
    name = resolve_name(cfg.backbone)
    if cfg.dtype not in DTYPES:
        raise GzpipeError(f"--dtype must be one of {', '.join(DTYPES)}")
    run_dir = Path(cfg.out) / name
    best = run_dir / "checkpoints" / ckpt.BEST
    if not best.exists():
        raise GzpipeError(f"no trained model at {best}; run `gzpipe train --backbone {name}` first")
    digest = sha256_file(best)
    state = ckpt.load(best)
    tcfg = state["config"]
    shards = cfg.shards or tcfg["shards"]
    feat_dir = run_dir / "features"
    remove_stale_tmp(feat_dir)
    meta_path = feat_dir / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if meta.get("checkpoint_sha256") != digest or meta.get("dtype") != cfg.dtype or meta.get("shards") != str(shards):
        meta = {"checkpoint_sha256": digest, "dtype": cfg.dtype, "shards": str(shards), "backbone": name,
                "width": BACKBONES[name].features, "image_size": tcfg["image_size"], "splits": {}}
    todo = [s for s in SPLITS if cfg.force or s not in meta["splits"] or not (feat_dir / f"{s}.parquet").exists()]
    if not todo:
        print(f"{name}: features up to date with {best.name} ({feat_dir})", flush=True)
        return meta
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if cfg.device == "auto" else cfg.device))
    model = create_model(name, tcfg["head"])
    model.load_state_dict(state["model"])
    model.eval().to(device)
    if BACKBONES[name].channels_last(device.type):
        model = model.to(memory_format=torch.channels_last)
    autocast = amp_context(device, cfg.amp)
    np_dtype, _ = DTYPES[cfg.dtype]
    width = BACKBONES[name].features
    for split in todo:
        loader = create_loader(shards, split, cfg.backend, tcfg["image_size"], cfg.batch_size, train=False,
                               device=device, workers=cfg.workers, seed=tcfg["seed"])
        rows = 0
        path = feat_dir / f"{split}.parquet"
        with atomic_open(path, "wb") as f, progress_bar(f"features {name} {split}", total=len(loader), unit="batch") as bar:
            writer = pq.ParquetWriter(f, schema_for(width, cfg.dtype))
            with torch.inference_mode():
                for batch in loader:
                    with autocast():
                        feats = model.features(batch.images)
                    x = feats.float().cpu().numpy().astype(np_dtype)
                    y = batch.targets.cpu().numpy().astype(np.float32)
                    m = batch.mask.cpu().numpy()
                    cols = [pa.array(batch.ids, pa.string())]
                    cols += [pa.array(x[:, j]) for j in range(width)]
                    cols += [pa.array(y[:, j]) for j in range(schema.N_TARGETS)]
                    cols += [pa.array(m[:, j]) for j in range(schema.N_TARGETS)]
                    writer.write_table(pa.Table.from_arrays(cols, schema=writer.schema))
                    rows += len(batch)
                    bar.advance(1)
            writer.close()
        meta["splits"][split] = {"rows": rows, "file": path.name}
        write_json(meta_path, meta)
        print(f"{name}: {split} features {rows} x {width} ({cfg.dtype}) -> {path}", flush=True)
    return meta


def read_features(out: str | Path, backbone: str, split: str) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """(ids, X float32, targets, mask) of one split; for data that fits in memory (use ``iter_feature_batches``
    to stream)."""
    ids, xs, ys, ms = [], [], [], []
    for i, x, y, m in iter_feature_batches(out, backbone, split):
        ids += i
        xs.append(x)
        ys.append(y)
        ms.append(m)
    return ids, np.concatenate(xs), np.concatenate(ys), np.concatenate(ms)


def features_path(out: str | Path, backbone: str, split: str) -> Path:
    p = Path(out) / resolve_name(backbone) / "features" / f"{split}.parquet"
    if not p.exists():
        raise GzpipeError(f"{p} not found; run `gzpipe features --backbone {backbone}` first")
    return p


def iter_feature_batches(out: str | Path, backbone: str, split: str, batch_rows: int = 8192):
    """Stream (ids, X float32, targets float32, mask bool) in row batches straight from the parquet file."""
    pf = pq.ParquetFile(features_path(out, backbone, split))
    names = pf.schema_arrow.names
    fcols = [c for c in names if c.startswith("f") and c[1:].isdigit()]
    for rb in pf.iter_batches(batch_size=batch_rows):
        t = pa.Table.from_batches([rb])
        ids = t.column("id").to_pylist()
        x = np.column_stack([t.column(c).to_numpy() for c in fcols]).astype(np.float32)
        y = np.column_stack([t.column(n).to_numpy() for n in schema.TARGET_NAMES]).astype(np.float32)
        m = np.column_stack([t.column(f"mask:{n}").to_numpy() for n in schema.TARGET_NAMES]).astype(bool)
        yield ids, x, y, m
