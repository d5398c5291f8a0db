"""XGBoost engine: features stream from parquet into a ``QuantileDMatrix`` through an ``xgboost.DataIter``
(never one big frame), ``tree_method="hist"`` on ``device="cuda"`` when a GPU is there, else the CPU.

One multi-output booster predicts all 30 targets. Masked targets are stored in the label matrix as -1 (a value
real fractions never take), and the custom objective - squared or absolute error - gives those entries zero
gradient *and* zero hessian: they add nothing to split finding or leaf values while the row still trains the other
29 targets.
Because the objective reads only its own DMatrix's labels, the same function runs per worker under
``xgboost.dask`` (``--dask-scheduler``).

Default ``multi_strategy="one_output_per_tree"``: measured on a 2-core CPU at 4,000 x 2,048 x 30, 16-21 s per
round against ~45 s for ``multi_output_tree`` at ``max_bin=256`` (3.9 s vs 9.3 s at ``max_bin=64``; 2.0 s vs 7.3 s
with ``colsample_bytree=0.25`` too). ``max_bin=64`` and ``colsample=0.25`` keep the demo practical.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gzpipe import schema
from gzpipe.device import cuda_available
from gzpipe.errors import GzpipeError
from gzpipe.features import features_path
from gzpipe.fileio import atomic_path, local_path
from gzpipe.info import cpu_count
from gzpipe.progress import progress_bar
from gzpipe.stopping import STOP

MASKED = -1.0
MULTI_STRATEGIES = ("one_output_per_tree", "multi_output_tree")
MAX_DEPTH = 64
# XGBoost's hist keeps a histogram (features x bins x 16 bytes) for up to 65,536 tree nodes: 2 MiB each at 2,048
# features and 64 bins, so a deep tree on many rows could ask for 128 GB. The cache is capped at this share of the
# memory available (XGBoost rebuilds what it dropped: slower, the same trees).
HISTOGRAM_SHARE = 0.25
XGB_CACHED_NODES = 65536  # XGBoost's default max_cached_hist_node


@dataclass
class Params:
    """XGBoost's own parameters (the common ones - rounds, learning rate, bins, column sampling - are BoostConfig's)."""

    max_depth: int = 6
    multi_strategy: str = "one_output_per_tree"

    def validate(self) -> None:
        if not 1 <= self.max_depth <= MAX_DEPTH:
            raise GzpipeError(f"max_depth must be between 1 and {MAX_DEPTH}, got {self.max_depth}")
        if self.multi_strategy not in MULTI_STRATEGIES:
            raise GzpipeError(f"unknown --multi-strategy {self.multi_strategy!r}; choose one of "
                              f"{', '.join(MULTI_STRATEGIES)}")


def pick_device(cfg) -> tuple[str, str]:
    """XGBoost's ``device``: CUDA's hist on a GPU (asked for, or ``auto`` with one present), else the CPU."""
    if cfg.device == "cpu":
        return "cpu", "asked for the CPU"
    if cfg.device.startswith("cuda"):
        if not cuda_available():
            raise GzpipeError(f"device {cfg.device!r} asked for, but no CUDA device is usable here; use cpu (or auto)")
        return cfg.device, "asked for CUDA"
    return ("cuda", "GPU hist on the CUDA device") if cuda_available() else ("cpu", "no GPU here")


def encode_labels(y: np.ndarray, m: np.ndarray) -> np.ndarray:
    return np.where(m, np.nan_to_num(y), MASKED).astype(np.float32)


def array_module(device: str):
    """The array library of the booster's device: CuPy on CUDA (where it is installed; the GPU machine has it), so
    the training matrix is built from device arrays and the objective's gradients stay on the device; NumPy
    otherwise."""
    if str(device).startswith("cuda"):
        try:
            import cupy

            return cupy
        except ImportError:
            pass
    return np


class MaskedObjective:
    """Squared (``l2``) or absolute (``l1``) error over the valid entries: masked labels (``MASKED``) get zero
    gradient and zero hessian. ``xp`` is the array module the gradients are computed with (``array_module``): the
    labels and the mask are moved there once per matrix (kept on it), the predictions once a round."""

    def __init__(self, kind: str, xp=np):
        self.kind, self.xp = kind, xp

    def _labels(self, dtrain):
        cached = getattr(dtrain, "_gzpipe_labels", None)
        if cached is None or cached[0] is not self.xp:
            y = self.xp.asarray(dtrain.get_label().reshape(-1, schema.N_TARGETS))
            cached = (self.xp, y, (y >= 0).astype(self.xp.float32))
            dtrain._gzpipe_labels = cached
        return cached[1], cached[2]

    def __call__(self, predt, dtrain):
        xp = self.xp
        y, valid = self._labels(dtrain)
        # Always (rows, 30): a Dask worker that holds no rows gets a flat empty array, which would read as 1 target.
        p = xp.asarray(predt).reshape(-1, schema.N_TARGETS)
        if self.kind == "l2":
            return (p - y) * valid, valid  # masked: no gradient, no hessian
        # the sign of the residual and a unit hessian: a leaf moves by at most the learning rate a round, toward
        # the median of its rows' targets
        return xp.sign(p - y).astype(xp.float32) * valid, valid


masked_objective = MaskedObjective("l2")  # on host arrays (NumPy); ``objective_for`` picks the device's module
masked_l1_objective = MaskedObjective("l1")


def objective_for(kind: str, device: str) -> MaskedObjective:
    return MaskedObjective(kind, array_module(device))


def masked_rmse_metric(predt: np.ndarray, dmat):
    predt = predt.reshape(-1, schema.N_TARGETS)
    y = dmat.get_label().reshape(predt.shape)
    ok = y >= 0
    d = (predt - y)[ok]
    return "masked_rmse", float(np.sqrt(np.mean(d * d))) if d.size else 0.0


def masked_mae_metric(predt: np.ndarray, dmat):
    predt = predt.reshape(-1, schema.N_TARGETS)
    y = dmat.get_label().reshape(predt.shape)
    ok = y >= 0
    return "masked_mae", float(np.mean(np.abs((predt - y)[ok]))) if ok.any() else 0.0


# objective -> the early-stopping metric on val (host arrays: one small evaluation a round)
METRICS = {"l2": masked_rmse_metric, "l1": masked_mae_metric}
# Squared error: the sign-gradient l1 was no better on the real sample's val folds (+0.5% and -1.2% MAE on two
# backbones' features; a custom objective cannot refit leaves to medians as XGBoost's own absolute error does)
DEFAULT_OBJECTIVE = "l2"


def _iterator(data, split, xp=np):
    import xgboost as xgb

    class FeatureIter(xgb.DataIter):
        """Feeds the DMatrix one parquet row batch at a time (it may be walked more than once)."""

        def __init__(self):
            super().__init__(cache_prefix=None)
            self._it = None

        def reset(self):
            self._it = data.batches(split)

        def next(self, input_data) -> bool:
            STOP.check()  # building the matrix can take minutes at full scale
            if self._it is None:
                self.reset()
            try:
                _, x, y, m = next(self._it)
            except StopIteration:
                return False
            input_data(data=xp.asarray(x), label=xp.asarray(encode_labels(y, m)))  # device arrays on a GPU
            return True

    return FeatureIter()


def _Progress(bar):
    import xgboost as xgb

    class Progress(xgb.callback.TrainingCallback):
        def after_iteration(self, model, epoch, evals_log) -> bool:
            bar.advance(1)
            STOP.check()  # a safe point: nothing is written until training ends
            return False  # early stopping is XGBoost's own

    return Progress()


def _cache_bound(width: int, max_bin: int) -> dict:
    """``max_cached_hist_node`` within ``HISTOGRAM_SHARE`` of the available memory (only where XGBoost's default
    would not fit in it)."""
    from gzpipe.info import available_memory

    per_node = width * (max_bin + 1) * 16
    nodes = int(available_memory() * HISTOGRAM_SHARE // per_node)
    return {"max_cached_hist_node": max(64, nodes)} if nodes < XGB_CACHED_NODES else {}


def _params(cfg, params: Params) -> dict:
    return {"tree_method": "hist", "device": cfg.device, "max_depth": params.max_depth,
            "learning_rate": cfg.learning_rate, "max_bin": cfg.max_bin, "colsample_bytree": cfg.colsample,
            "subsample": cfg.subsample,
            "multi_strategy": params.multi_strategy,
            "disable_default_eval_metric": True, "base_score": 0.5, "seed": cfg.seed,
            "nthread": cfg.threads or cpu_count()}


def train(cfg, params: Params, run_dir: Path, data):
    import xgboost as xgb

    if cfg.dask_scheduler:
        booster = _train_dask(cfg, params)
    else:
        xp = array_module(cfg.device)
        dtrain = xgb.QuantileDMatrix(_iterator(data, "train", xp), max_bin=cfg.max_bin)
        dval = xgb.QuantileDMatrix(_iterator(data, "val", xp), ref=dtrain, max_bin=cfg.max_bin)
        obj, metric = objective_for(cfg.objective, cfg.device), METRICS[cfg.objective]
        p = {**_params(cfg, params), **_cache_bound(dtrain.num_col(), cfg.max_bin)}
        with progress_bar(f"xgboost_{cfg.backbone}", total=cfg.rounds, unit="rounds") as bar:
            booster = xgb.train(p, dtrain, num_boost_round=cfg.rounds, evals=[(dval, "val")],
                                obj=obj, custom_metric=metric,
                                early_stopping_rounds=cfg.early_stopping, verbose_eval=False,
                                callbacks=[_Progress(bar)])
    best = getattr(booster, "best_iteration", None)
    best = booster.num_boosted_rounds() - 1 if best is None else best
    run_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(run_dir / "model.ubj") as tmp:
        booster.save_model(str(tmp))  # UBJSON: XGBoost's own format
    info = {"best_iteration": int(best), "trees": (int(best) + 1) * schema.N_TARGETS,
            "rounds_trained": booster.num_boosted_rounds(), "model_file": "model.ubj",
            "dask_scheduler": cfg.dask_scheduler}
    return _predictor(booster, int(best)), info


def _predictor(booster, best: int):
    booster.set_param({"device": "cpu"})  # predictions run on host arrays

    def predict(x: np.ndarray) -> np.ndarray:
        return booster.inplace_predict(x, iteration_range=(0, best + 1)).reshape(len(x), -1)

    return predict


def load(run_dir: Path, config: dict, metrics: dict):
    import xgboost as xgb

    b = xgb.Booster()
    b.load_model(str(Path(run_dir) / metrics.get("model_file", "model.ubj")))
    return _predictor(b, int(metrics["best_iteration"]))


def _dask_split(client, cfg, split):
    """(X, y) as dask arrays, one chunk per parquet row group, read on the workers."""
    import dask.dataframe as dd

    df = dd.read_parquet(local_path(features_path(cfg.out, cfg.backbone, split)))
    workers = len(client.scheduler_info()["workers"])
    if df.npartitions < workers:  # spread small data so that every worker trains on some rows
        df = df.repartition(npartitions=workers)
    fcols = [c for c in df.columns if c.startswith("f") and c[1:].isdigit()]
    x = df[fcols].astype("float32").to_dask_array(lengths=True)
    y = df[list(schema.TARGET_NAMES)].to_dask_array(lengths=True)
    m = df[[f"mask:{n}" for n in schema.TARGET_NAMES]].to_dask_array(lengths=True)
    import dask.array as da

    labels = da.where(m, da.nan_to_num(y), MASKED).astype("float32")
    return x, labels


def _train_dask(cfg, params: Params):
    import xgboost as xgb
    import xgboost.dask  # noqa: F401 - the submodule is not imported by `import xgboost`
    from distributed import Client

    with Client(cfg.dask_scheduler) as client:
        xtr, ytr = _dask_split(client, cfg, "train")
        xva, yva = _dask_split(client, cfg, "val")
        dtrain = xgb.dask.DaskQuantileDMatrix(client, xtr, ytr, max_bin=cfg.max_bin)
        dval = xgb.dask.DaskQuantileDMatrix(client, xva, yva, ref=dtrain, max_bin=cfg.max_bin)
        p = _params(cfg, params)
        p.pop("nthread")
        obj, metric = MaskedObjective(cfg.objective), METRICS[cfg.objective]  # each worker's own host arrays
        out = xgb.dask.train(client, p, dtrain, num_boost_round=cfg.rounds, evals=[(dval, "val")],
                             obj=obj, custom_metric=metric,
                             early_stopping_rounds=cfg.early_stopping, verbose_eval=False)
        return out["booster"]
