"""LightGBM engine: one booster per target (LightGBM has no multi-output), each early-stopped on val. Masked
entries get weight 0 for that target only. The feature matrix is binned once and shared by the 30 boosters
(label and weight swapped per target). GPU (the registry wheel's OpenCL ``gpu`` learner) where it works, else
the CPU, with the reason logged. Models are saved as LightGBM text files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gzpipe import schema
from gzpipe.features import read_features
from gzpipe.fileio import atomic_path
from gzpipe.info import cpu_count
from gzpipe.progress import progress_bar


def _pick_device(cfg, lgb) -> tuple[str, str]:
    if cfg.device == "cpu":
        return "cpu", "asked for the CPU"
    try:
        import torch

        if not torch.cuda.is_available() and cfg.device == "auto":
            return "cpu", "no GPU here"
    except ImportError:
        pass
    try:  # the registry wheel has the OpenCL learner; try it on a tiny problem before relying on it
        x = np.random.default_rng(0).random((64, 4))
        lgb.train({"device_type": "gpu", "verbose": -1, "num_leaves": 4}, lgb.Dataset(x, x[:, 0]), 1)
        return "gpu", "OpenCL gpu learner works"
    except Exception as e:  # noqa: BLE001 - any failure means: use the CPU
        return "cpu", f"gpu learner unusable ({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})"


def train(cfg, run_dir: Path):
    import lightgbm as lgb

    if cfg.dask_scheduler:
        return _train_dask(cfg, run_dir)
    device, why = _pick_device(cfg, lgb)
    print(f"lightgbm_{cfg.backbone}: device {device} ({why})", flush=True)
    _, xtr, ytr, mtr = read_features(cfg.out, cfg.backbone, "train")
    _, xva, yva, mva = read_features(cfg.out, cfg.backbone, "val")
    params = {"objective": "regression", "learning_rate": cfg.learning_rate, "num_leaves": cfg.num_leaves,
              "max_bin": cfg.max_bin, "feature_fraction": cfg.colsample, "device_type": device, "verbose": -1,
              "seed": cfg.seed, "deterministic": True, "num_threads": cfg.threads or cpu_count(),
              "min_data_in_leaf": 5}
    ds_params = {"max_bin": cfg.max_bin, "min_data_in_leaf": params["min_data_in_leaf"], "feature_pre_filter": False,
                 "verbose": -1}
    params.update(ds_params)
    dtrain = lgb.Dataset(xtr, label=np.nan_to_num(ytr[:, 0]), weight=mtr[:, 0].astype(np.float64),
                         params=ds_params, free_raw_data=False).construct()
    dval = lgb.Dataset(xva, label=np.nan_to_num(yva[:, 0]), weight=mva[:, 0].astype(np.float64), reference=dtrain,
                       params=ds_params, free_raw_data=False).construct()
    models_dir = run_dir / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    boosters, best = [], []
    with progress_bar(f"lightgbm_{cfg.backbone}", total=schema.N_TARGETS, unit="targets") as bar:
        for j, name in enumerate(schema.TARGET_NAMES):
            bar.advance(1 if j else 0)
            if mtr[:, j].sum() == 0:  # no valid training value: predict the neutral 0.5 (recorded in the info)
                boosters.append(None)
                best.append(0)
                continue
            dtrain.set_label(np.nan_to_num(ytr[:, j]))
            dtrain.set_weight(mtr[:, j].astype(np.float64))
            dval.set_label(np.nan_to_num(yva[:, j]))
            dval.set_weight(np.maximum(mva[:, j].astype(np.float64), 1e-12))  # all-zero weights would break the metric
            b = lgb.train(params, dtrain, num_boost_round=cfg.rounds, valid_sets=[dval],
                          callbacks=[lgb.early_stopping(cfg.early_stopping, verbose=False)])
            with atomic_path(models_dir / f"{j:02d}_{name}.txt") as tmp:
                b.save_model(str(tmp), num_iteration=b.best_iteration or None)
            boosters.append(b)
            best.append(int(b.best_iteration or b.current_iteration()))
        bar.advance(1)

    def predict(x: np.ndarray) -> np.ndarray:
        cols = [np.full(len(x), 0.5) if b is None else b.predict(x, num_iteration=it or None)
                for b, it in zip(boosters, best)]
        return np.column_stack(cols)

    return predict, {"device": device, "device_reason": why, "best_iterations": best, "model_dir": "models"}


def _train_dask(cfg, run_dir: Path):
    """``lightgbm.dask``: one distributed regressor per target on an existing cluster; masked rows get
    sample weight 0 for that target. No early stopping here (lightgbm.dask has none); ``rounds`` trees each."""
    import dask.dataframe as dd
    import lightgbm as lgb
    from distributed import Client

    from gzpipe.features import features_path

    with Client(cfg.dask_scheduler) as client:
        df = dd.read_parquet(str(features_path(cfg.out, cfg.backbone, "train")))
        fcols = [c for c in df.columns if c.startswith("f") and c[1:].isdigit()]
        x = df[fcols].astype("float32").to_dask_array(lengths=True)
        models_dir = run_dir / "models"
        models_dir.mkdir(parents=True, exist_ok=True)
        boosters = []
        for j, name in enumerate(schema.TARGET_NAMES):
            y = df[name].fillna(0.0).to_dask_array(lengths=True)
            w = df[f"mask:{name}"].astype("float64").to_dask_array(lengths=True)
            reg = lgb.DaskLGBMRegressor(client=client, n_estimators=cfg.rounds, learning_rate=cfg.learning_rate,
                                        num_leaves=cfg.num_leaves, max_bin=cfg.max_bin, colsample_bytree=cfg.colsample,
                                        random_state=cfg.seed, verbose=-1, min_child_samples=5)
            reg.fit(x, y, sample_weight=w)
            b = reg.to_local().booster_
            with atomic_path(models_dir / f"{j:02d}_{name}.txt") as tmp:
                b.save_model(str(tmp))
            boosters.append(b)

    def predict(xx: np.ndarray) -> np.ndarray:
        return np.column_stack([b.predict(xx) for b in boosters])

    return predict, {"device": "cpu", "device_reason": "dask workers", "best_iterations": [cfg.rounds] * len(boosters),
                     "model_dir": "models", "dask_scheduler": cfg.dask_scheduler}
