"""`gzpipe boost --engine xgboost|lightgbm --backbone NAME`: gradient-boosted trees on a backbone's cached
penultimate features, predicting the 30 targets; early-stopped on val, evaluated on test, predictions clipped to
[0, 1]. Masked targets are handled per target (they add neither gradient nor hessian), never by dropping rows.

Output ``<out>/<engine>_<backbone>/``: the model(s) in the engine's own format (never pickle), ``metrics.json``,
``config.json``, ``{val,test}_predictions.parquet`` and ``boost_complete.txt`` (written last; a finished model is
skipped unless ``force``). Engines are a registry: ``ENGINES[name].train(cfg, data) -> (predict_fn, info)``.
"""

from __future__ import annotations

import importlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gzpipe import schema
from gzpipe.errors import GzpipeError
from gzpipe.features import features_path, iter_feature_batches
from gzpipe.fileio import atomic_open, remove_stale_tmp, write_json
from gzpipe.metrics import compute_metrics
from gzpipe.models import resolve_name

ENGINES = {"xgboost": "gzpipe.boost.xgb", "lightgbm": "gzpipe.boost.lgbm"}
COMPLETE = "boost_complete.txt"


@dataclass
class BoostConfig:
    engine: str
    backbone: str
    out: str = "artifacts"
    rounds: int = 200
    early_stopping: int = 20
    learning_rate: float = 0.1
    max_depth: int = 6
    num_leaves: int = 31
    max_bin: int = 64
    colsample: float = 0.25
    multi_strategy: str = "one_output_per_tree"
    device: str = "auto"
    threads: int = 0  # 0 = all cores
    seed: int = 42
    force: bool = False
    dask_scheduler: str | None = None

    @property
    def run_dir(self) -> Path:
        return Path(self.out) / f"{self.engine}_{self.backbone}"


def run_dir_for(out: str | Path, engine: str, backbone: str) -> Path:
    return Path(out) / f"{engine}_{resolve_name(backbone)}"


def run_boost(cfg: BoostConfig) -> dict:
    if cfg.engine not in ENGINES:
        raise GzpipeError(f"unknown --engine {cfg.engine!r}; choose one of {', '.join(ENGINES)}")
    if not cfg.learning_rate > 0:
        raise GzpipeError("--learning-rate must be positive")
    if cfg.multi_strategy not in ("one_output_per_tree", "multi_output_tree"):
        raise GzpipeError(f"unknown --multi-strategy {cfg.multi_strategy!r}; choose one_output_per_tree or "
                          "multi_output_tree")
    if cfg.device not in ("auto", "cpu", "cuda") and not cfg.device.startswith("cuda:"):
        raise GzpipeError(f"unknown --device {cfg.device!r}; choose auto, cpu or cuda")
    cfg.backbone = resolve_name(cfg.backbone)
    run_dir = cfg.run_dir
    remove_stale_tmp(run_dir, recursive=True)
    if (run_dir / COMPLETE).exists() and not cfg.force:
        print(f"{cfg.engine}_{cfg.backbone}: already trained ({run_dir}); skipping (--force retrains)", flush=True)
        return json.loads((run_dir / "metrics.json").read_text())
    for split in ("train", "val", "test"):
        features_path(cfg.out, cfg.backbone, split)  # fail early, with the fix, when features are missing
    engine = importlib.import_module(ENGINES[cfg.engine])
    (run_dir / COMPLETE).unlink(missing_ok=True)
    t0 = time.perf_counter()
    predict, info = engine.train(cfg, run_dir)
    train_time = time.perf_counter() - t0
    metrics = {"model": f"{cfg.engine}_{cfg.backbone}", "engine": cfg.engine, "backbone": cfg.backbone,
               "train_time_s": train_time, **info}
    for split in ("val", "test"):
        ids, preds, ys, ms = [], [], [], []
        t1 = time.perf_counter()
        for bid, x, y, m in iter_feature_batches(cfg.out, cfg.backbone, split):  # one pass: features and labels
            ids += bid
            preds.append(np.clip(predict(x), 0.0, 1.0))
            ys.append(y)
            ms.append(m)
        rate = len(ids) / max(time.perf_counter() - t1, 1e-9)
        pred = np.concatenate(preds)
        metrics[split] = compute_metrics(pred, np.concatenate(ys), np.concatenate(ms))
        metrics[f"{split}_predict_rows_per_s"] = rate
        df = pd.DataFrame(pred.astype(np.float32), columns=list(schema.TARGET_NAMES))
        df.insert(0, "id", ids)
        with atomic_open(run_dir / f"{split}_predictions.parquet", "wb") as f:
            df.to_parquet(f, index=False)
    write_json(run_dir / "config.json", asdict(cfg))
    write_json(run_dir / "metrics.json", metrics)
    with atomic_open(run_dir / COMPLETE, "w") as f:
        f.write(f"{cfg.engine}_{cfg.backbone}: test MAE {metrics['test']['mae']:.5f}\n")
    print(f"{cfg.engine}_{cfg.backbone}: test MAE {metrics['test']['mae']:.4f}  MSE {metrics['test']['mse']:.5f}  "
          f"accuracy {metrics['test']['accuracy']:.4f}  ({train_time:.1f}s, {info.get('device')}) -> {run_dir}", flush=True)
    return metrics
