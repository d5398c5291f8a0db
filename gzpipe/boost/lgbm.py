"""LightGBM engine: one booster per target (LightGBM has no multi-output), each early-stopped on val. Masked
entries get weight 0 for that target only. The feature matrix is binned once and shared by the 30 boosters
(label and weight swapped per target). Models are saved as LightGBM text files.

Devices (``pick_device``): a CUDA build's ``cuda`` learner where one is installed and a GPU is there, else the CPU,
with the reason logged. The PyPI wheel has no CUDA learner; its OpenCL ``gpu`` learner is never picked: it has not
been measured against the CPU here (benchmarks/gpu_suite.sh step 4 times it where it runs), and a GPU path slower
than the CPU's would be a regression nobody asked for. ``--device cuda`` with a build that has no CUDA learner is an
error that says so."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gzpipe import schema
from gzpipe.device import cuda_available
from gzpipe.errors import GzpipeError
from gzpipe.fileio import atomic_path, local_path
from gzpipe.info import cpu_count
from gzpipe.progress import progress_bar
from gzpipe.stopping import STOP

MODELS = "models"
OBJECTIVES = {"l2": "regression", "l1": "regression_l1"}  # the val metric that early-stops follows the objective
# Absolute error: 5 folds of the real sample, features of the real study's two best backbones: val MAE 9-10% lower
# than squared error (benchmarks/RESULTS.md)
DEFAULT_OBJECTIVE = "l1"
MAX_LEAVES = 131072  # LightGBM's own upper bound for num_leaves
# LightGBM keeps one histogram per leaf (features x bins x 16 bytes): --num-leaves 100000 on 95 rows x 2,048
# features was killed by the kernel at 18 GB. Leaves beyond what the rows can fill are not asked for, and the pool
# of histograms is capped at this share of the memory available (LightGBM then rebuilds the ones it dropped).
HISTOGRAM_SHARE = 0.25


@dataclass
class Params:
    """LightGBM's own parameters (the common ones are BoostConfig's)."""

    num_leaves: int = 31
    min_data_in_leaf: int = 5
    # Rows LightGBM samples to place its bin edges (its bin_construct_sample_cnt). It holds the sample as
    # 16 bytes a value while it bins: its default, 200,000 rows, cost 6 GB at GZ2's 190,000 train rows x 2,048
    # features (peak RSS 7.35 GB); 20,000 rows bound it at 0.65 GB, and place 32-64 bin edges just as well
    # (benchmarks/RESULTS.md, "Full GZ2 scale").
    bin_sample_rows: int = 20_000

    def validate(self) -> None:
        if not 2 <= self.num_leaves <= MAX_LEAVES:
            raise GzpipeError(f"num_leaves must be between 2 and {MAX_LEAVES} (LightGBM's own limit), got "
                              f"{self.num_leaves}")
        if self.min_data_in_leaf < 1:
            raise GzpipeError(f"min_data_in_leaf must be at least 1, got {self.min_data_in_leaf}")
        if self.bin_sample_rows < 100:
            raise GzpipeError(f"bin_sample_rows must be at least 100, got {self.bin_sample_rows}")


def _learner_works(lgb, device_type: str) -> tuple[bool, str]:
    """Try a learner on a tiny problem before relying on it (builds without it raise at once)."""
    try:
        x = np.random.default_rng(0).random((64, 4))
        lgb.train({"device_type": device_type, "verbose": -1, "num_leaves": 4}, lgb.Dataset(x, x[:, 0]), 1)
        return True, ""
    except Exception as e:  # noqa: BLE001 - any failure means: not usable here
        return False, str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def pick_device(cfg) -> tuple[str, str]:
    import lightgbm as lgb

    if cfg.device == "cpu":
        return "cpu", "asked for the CPU"
    if not cuda_available():
        if cfg.device.startswith("cuda"):
            raise GzpipeError(f"device {cfg.device!r} asked for, but no CUDA device is usable here; use cpu (or auto)")
        return "cpu", "no GPU here"
    ok, why_cuda = _learner_works(lgb, "cuda")
    if ok:
        return "cuda", "CUDA learner of a CUDA build"
    if cfg.device.startswith("cuda"):
        raise GzpipeError(f"--device {cfg.device}: this LightGBM build has no CUDA learner ({why_cuda}); the PyPI "
                          "wheel has none (build LightGBM with -DUSE_CUDA=ON for one); --device auto or cpu trains "
                          "LightGBM on the CPU")
    return "cpu", ("this LightGBM build has no CUDA learner (the PyPI wheel has none; its OpenCL learner is not used: "
                   "unmeasured against the CPU)")


def train(cfg, params: Params, run_dir: Path, data):
    import lightgbm as lgb

    if cfg.dask_scheduler:
        return _train_dask(cfg, params, run_dir, data)
    _, xtr, ytr, mtr = data.read("train")
    _, xva, yva, mva = data.read("val")
    p = {"objective": OBJECTIVES[cfg.objective], "learning_rate": cfg.learning_rate,
         "num_leaves": params.num_leaves,
         "max_bin": cfg.max_bin, "feature_fraction": cfg.colsample, "device_type": cfg.device, "verbose": -1,
         "seed": cfg.seed, "deterministic": True, "num_threads": cfg.threads or cpu_count(),
         "min_data_in_leaf": params.min_data_in_leaf,
         **({"bagging_fraction": cfg.subsample, "bagging_freq": 1} if cfg.subsample < 1 else {})}
    ds_params = {"max_bin": cfg.max_bin, "min_data_in_leaf": params.min_data_in_leaf, "feature_pre_filter": False,
                 "bin_construct_sample_cnt": params.bin_sample_rows, "verbose": -1}
    if cfg.device == "cpu":
        # Column-wise histograms: LightGBM's own choice, a timing test at the start of every booster, costs ~1 s a
        # target and picks row-wise for backbone features whenever colsample is small, where row-wise builds every
        # feature's histogram and col-wise only the sampled ones: 0.021 against 0.062 s a tree at 40,018 rows x
        # 2,048 features, 32 bins, colsample 0.1 (benchmarks/RESULTS.md, "Boosting at scale")
        ds_params["force_col_wise"] = True
    p.update(ds_params)
    p.update(_memory_bounds(cfg, params, *xtr.shape))
    dtrain = lgb.Dataset(xtr, label=np.nan_to_num(ytr[:, 0]), weight=mtr[:, 0].astype(np.float64),
                         params=ds_params, free_raw_data=False).construct()
    dval = lgb.Dataset(xva, label=np.nan_to_num(yva[:, 0]), weight=mva[:, 0].astype(np.float64), reference=dtrain,
                       params=ds_params, free_raw_data=False).construct()
    models_dir = run_dir / MODELS
    models_dir.mkdir(parents=True, exist_ok=True)
    boosters, best = [], []

    def stop_check(env) -> None:  # a safe point after every tree: nothing of this target is written yet
        STOP.check()

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
            b = lgb.train(p, dtrain, num_boost_round=cfg.rounds, valid_sets=[dval],
                          callbacks=[lgb.early_stopping(cfg.early_stopping, verbose=False), stop_check])
            with atomic_path(models_dir / f"{j:02d}_{name}.txt") as tmp:
                b.save_model(str(tmp), num_iteration=b.best_iteration or None)
            boosters.append(b)
            best.append(int(b.best_iteration or b.current_iteration()))
        bar.advance(1)
    return _predictor(boosters, best), {"best_iterations": best, "trees": int(sum(best)), "model_dir": MODELS}


def _memory_bounds(cfg, params: Params, rows: int, width: int) -> dict:
    """``num_leaves`` no larger than the train rows can fill (rows / min_data_in_leaf: more cannot be grown, so the
    trees are the same) and a histogram pool within ``HISTOGRAM_SHARE`` of the available memory, with a note when
    either applies."""
    from gzpipe.info import available_memory

    out = {}
    leaves = min(params.num_leaves, max(2, rows // params.min_data_in_leaf))
    if leaves < params.num_leaves:
        out["num_leaves"] = leaves
        print(f"lightgbm_{cfg.backbone}: note: {rows} train rows with min_data_in_leaf {params.min_data_in_leaf} "
              f"fill at most {leaves} leaves a tree; asking LightGBM for {leaves}, not {params.num_leaves} (the "
              "trees are the same, the memory is not)", flush=True)
    per_leaf = width * min(cfg.max_bin + 1, max(rows, 2)) * 16
    budget = int(available_memory() * HISTOGRAM_SHARE)
    if leaves * per_leaf > budget:
        out["histogram_pool_size"] = max(1.0, budget / 2**20)  # MB
        print(f"lightgbm_{cfg.backbone}: note: {leaves} leaves' histograms would take {leaves * per_leaf / 2**30:.1f} "
              f"GB; capped at {budget / 2**30:.1f} GB ({HISTOGRAM_SHARE:.0%} of the available memory; slower, the same "
              "trees)", flush=True)
    return out


def _predictor(boosters: list, best: list[int]):
    def predict(x: np.ndarray) -> np.ndarray:
        cols = [np.full(len(x), 0.5) if b is None else b.predict(x, num_iteration=it or None)
                for b, it in zip(boosters, best)]
        return np.column_stack(cols)

    return predict


def load(run_dir: Path, config: dict, metrics: dict):
    import lightgbm as lgb

    files = sorted((Path(run_dir) / metrics.get("model_dir", MODELS)).glob("[0-9][0-9]_*.txt"))
    by_index = {int(f.name[:2]): lgb.Booster(model_file=str(f)) for f in files}
    boosters = [by_index.get(j) for j in range(schema.N_TARGETS)]
    return _predictor(boosters, [0] * schema.N_TARGETS)  # files were saved at their best iteration


def best_iteration(booster, x: np.ndarray, y: np.ndarray, w: np.ndarray, objective: str, patience: int) -> int:
    """The iteration ``lightgbm.early_stopping(patience)`` would keep, found after the fact: the val metric of the
    objective (weighted, masked rows at weight 0) after each tree, and the first best before ``patience`` trees
    without a gain. For a booster grown without early stopping (``lightgbm.dask`` has none: its issue #3712), so
    that the model kept is the one local training keeps. Tree by tree, one tree's prediction each (additive: the
    regression objectives' link is the identity)."""
    total = booster.current_iteration()
    if total == 0 or w.sum() == 0:
        return total
    pred = np.zeros(len(x))
    best, best_score = 0, np.inf
    for i in range(total):
        pred += booster.predict(x, start_iteration=i, num_iteration=1)
        err = np.abs(pred - y) if objective == "l1" else (pred - y) ** 2
        score = float(np.average(err, weights=w))
        if score < best_score:
            best, best_score = i, score
        elif i - best >= patience:
            break
    return best + 1


def _train_dask(cfg, params: Params, run_dir: Path, data):
    """``lightgbm.dask``: one distributed regressor per target on an existing cluster; masked rows get sample weight
    0 for that target. ``lightgbm.dask`` cannot stop early (its issue #3712; asking it to hangs the cluster, #6351), so
    each target grows ``rounds`` trees there and is then cut back here to the iteration early stopping keeps locally
    (``best_iteration`` on the val split, the same rule): the model saved is the one local training keeps, at the
    cost of the trees grown past it."""
    import dask.dataframe as dd
    import lightgbm as lgb
    from distributed import Client

    from gzpipe.features import features_path

    _, xva, yva, mva = data.read("val")
    with Client(cfg.dask_scheduler) as client:
        df = dd.read_parquet(local_path(features_path(cfg.out, cfg.backbone, "train")))
        fcols = [c for c in df.columns if c.startswith("f") and c[1:].isdigit()]
        x = df[fcols].astype("float32").to_dask_array(lengths=True)
        models_dir = run_dir / MODELS
        models_dir.mkdir(parents=True, exist_ok=True)
        boosters, best = [], []
        for j, name in enumerate(schema.TARGET_NAMES):
            STOP.check()
            y = df[name].fillna(0.0).to_dask_array(lengths=True)
            w = df[f"mask:{name}"].astype("float64").to_dask_array(lengths=True)
            reg = lgb.DaskLGBMRegressor(client=client, n_estimators=cfg.rounds, learning_rate=cfg.learning_rate,
                                        num_leaves=params.num_leaves, max_bin=cfg.max_bin,
                                        colsample_bytree=cfg.colsample, random_state=cfg.seed, verbose=-1,
                                        min_child_samples=params.min_data_in_leaf,
                                        bin_construct_sample_cnt=params.bin_sample_rows,
                                        objective=OBJECTIVES[cfg.objective])
            reg.fit(x, y, sample_weight=w)
            b = reg.to_local().booster_
            it = best_iteration(b, xva, np.nan_to_num(yva[:, j]), mva[:, j].astype(np.float64), cfg.objective,
                                cfg.early_stopping)
            with atomic_path(models_dir / f"{j:02d}_{name}.txt") as tmp:
                b.save_model(str(tmp), num_iteration=it or None)
            boosters.append(b)
            best.append(it)
    return _predictor(boosters, best), {
        "best_iterations": best, "trees": int(sum(best)), "model_dir": MODELS, "dask_scheduler": cfg.dask_scheduler,
        "early_stopping": f"after the fact on val (lightgbm.dask has none): {cfg.rounds} trees grown a target, each "
                          f"cut back to its best iteration before {cfg.early_stopping} without a gain"}
