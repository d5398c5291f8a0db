"""The boosting stage: ``run_boost`` and ``load_booster`` (see the package docstring)."""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from gzpipe import rerun, runs
from gzpipe.configs import check_keys, unknown_keys_error
from gzpipe.device import check_device_name
from gzpipe.errors import GzpipeError
from gzpipe.features import features_meta, features_path, iter_feature_batches, tasks_labelled
from gzpipe.labels import blank_untrained
from gzpipe.fileio import check_out_folder, finish_swap, rebuilt, remove_stale_tmp, staging_dir, write_json
from gzpipe.metrics import compute_metrics
from gzpipe.models import resolve_name
from gzpipe.stopping import STOP
from gzpipe.boost.data import FeatureData, Reduction
from gzpipe.boost.registry import ENGINES, engine

OBJECTIVES = ("l2", "l1")
MAX_BIN = 1024


@dataclass
class BoostConfig:
    engine: str
    backbone: str
    out: str = "artifacts"
    rounds: int = 200
    early_stopping: int = 20
    learning_rate: float = 0.1
    max_bin: int = 64
    colsample: float = 0.25
    subsample: float = 1.0  # share of the train rows sampled per tree (1: all)
    # l2: squared error (the mean fraction); l1: absolute error (the median: the study's MAE); None: the engine's
    # ``DEFAULT_OBJECTIVE`` (measured per engine: benchmarks/RESULTS.md, "Boosters with the absolute error")
    objective: str | None = None
    pca: int | None = None  # reduce the features to this many principal components (fitted on train) first
    pca_fit_rows: int = 20_000  # train rows the reduction is fitted on
    # one 0/1 input per catalogue format of the train split, so each catalogue's labels are learnt as they are
    # (gzpipe.boost.catalogues); None: on when the train split joins several formats
    by_catalogue: bool | None = None
    device: str = "auto"
    threads: int = 0  # 0 = all cores
    seed: int = 42
    force: bool = False
    dask_scheduler: str | None = None
    params: dict = field(default_factory=dict)  # the engine's own parameters (its ``Params``), by name

    @property
    def run_dir(self) -> Path:
        return runs.booster_dir(self.out, self.engine, self.backbone)


COMMON_KEYS = tuple(f.name for f in dataclasses.fields(BoostConfig)
                    if f.name not in ("engine", "backbone", "out", "force", "params"))
PARAM_ONLY = ("seed", "threads", "pca_fit_rows")  # common keys without an option of their own: `--param seed=3`


def engine_params(name: str, values: dict, where: str = "boost", sep: str = ".") -> object:
    """The engine's ``Params`` from ``values``: keys that belong to another registered engine are left to it (a
    study's ``boost:`` section serves every engine); a key that no engine knows is an error."""
    impl = engine(name).impl()
    own = {f.name for f in dataclasses.fields(impl.Params)}
    others = {f.name for e in ENGINES.values() if e.name != name for f in dataclasses.fields(e.impl().Params)}
    unknown = [k for k in values if k not in own and k not in others]
    if unknown:
        raise unknown_keys_error(where, unknown, sorted(set(COMMON_KEYS) | own | others))
    checked = check_keys({k: v for k, v in values.items() if k in own}, where, impl.Params, sep=sep)
    p = impl.Params(**checked)
    if hasattr(p, "validate"):
        p.validate()
    return p


def split_param_option(values: dict, engine_name: str) -> tuple[dict, dict]:
    """``--param KEY=VALUE`` pairs -> (common BoostConfig keys, the engine's own), each checked: a common key that has
    an option of its own names that option; a value of the wrong type names the key and the value."""
    common = {k: values[k] for k in values if k in COMMON_KEYS}
    for k in common:
        if k not in PARAM_ONLY:
            raise GzpipeError(f"--param {k}: give it as --{k.replace('_', '-')} (its own option)")
    rest = {k: v for k, v in values.items() if k not in common}
    known = sorted({f.name for e in ENGINES.values() for f in dataclasses.fields(e.impl().Params)} | set(PARAM_ONLY))
    unknown = [k for k in rest if k not in known]
    if unknown:
        raise unknown_keys_error("--param", unknown, known)
    engine_params(engine_name, rest, "--param", sep=" ")  # checked now: names, types, ranges
    return check_keys(common, "--param", BoostConfig, sep=" "), rest


def split_boost_section(section: dict, where: str = "boost", engine_name: str | None = None) -> tuple[dict, dict]:
    """A ``boost:`` mapping -> (common BoostConfig keys, engine parameters), checked against every engine.

    A key named after an engine holds a mapping for that engine alone, over the shared keys (the `full` preset:
    ``lightgbm: {pca: null, max_bin: 32, colsample: 0.1}``); with ``engine_name`` it is applied, and the other
    engines' mappings are checked and left out."""
    section = dict(section)
    own: dict = {}
    for name in ENGINES:
        sub = section.pop(name, None)
        if sub is None:
            continue
        if not isinstance(sub, dict):
            raise GzpipeError(f"{where}: {name} must be a mapping of keys for that engine alone, got {sub!r}")
        split_boost_section(sub, f"{where} {name}")  # its keys checked
        if name == engine_name:
            own = sub
    section.update(own)
    common = {k: v for k, v in section.items() if k in COMMON_KEYS}
    rest = {k: v for k, v in section.items() if k not in COMMON_KEYS}
    known = {f.name for e in ENGINES.values() for f in dataclasses.fields(e.impl().Params)}
    unknown = [k for k in rest if k not in known]
    if unknown:
        raise unknown_keys_error(where, unknown, sorted(set(COMMON_KEYS) | known))
    return check_keys(common, where, BoostConfig), rest


def validate(cfg: BoostConfig) -> object:
    engine(cfg.engine)
    for key, low in (("rounds", 1), ("early_stopping", 1), ("max_bin", 2), ("threads", 0)):
        if getattr(cfg, key) < low:
            raise GzpipeError(f"{key} must be at least {low}, got {getattr(cfg, key)}")
    if cfg.max_bin > MAX_BIN:
        raise GzpipeError(f"max_bin must be at most {MAX_BIN} (each leaf's or node's histogram grows with it), got "
                          f"{cfg.max_bin}")
    if not cfg.learning_rate > 0:
        raise GzpipeError(f"learning_rate must be positive, got {cfg.learning_rate}")
    if not 0 < cfg.colsample <= 1:
        raise GzpipeError(f"colsample must be in (0, 1], got {cfg.colsample}")
    if not 0 < cfg.subsample <= 1:
        raise GzpipeError(f"subsample must be in (0, 1], got {cfg.subsample}")
    if cfg.objective is None:
        cfg.objective = getattr(engine(cfg.engine).impl(), "DEFAULT_OBJECTIVE", "l2")
    if cfg.objective not in OBJECTIVES:
        raise GzpipeError(f"objective must be one of {', '.join(OBJECTIVES)}, got {cfg.objective!r}")
    if cfg.pca is not None and cfg.pca < 1:
        raise GzpipeError(f"pca must be at least 1 (components), got {cfg.pca}")
    if cfg.dask_scheduler:
        check_address(cfg.dask_scheduler)
    if cfg.pca is not None and cfg.dask_scheduler:
        raise GzpipeError("pca is not available with a Dask scheduler (the workers read the features themselves)")
    if cfg.pca_fit_rows < 2:
        raise GzpipeError(f"pca_fit_rows must be at least 2, got {cfg.pca_fit_rows}")
    check_device_name(cfg.device)
    return engine_params(cfg.engine, cfg.params)


# BoostConfig keys that change what a booster is (the rest - device, threads, the scheduler - only how it is fitted)
SETTINGS = ("rounds", "early_stopping", "learning_rate", "max_bin", "colsample", "subsample", "objective", "pca",
            "pca_fit_rows", "seed", "by_catalogue")
SCHEDULER_TIMEOUT_S = 10
_ADDRESS = re.compile(r"^(?:(tcp|tls|inproc|ucx|ws|wss)://)?\[?[A-Za-z0-9_.:-]*[A-Za-z0-9_.-]\]?:\d{1,5}$")


def settings(cfg: BoostConfig, params) -> dict:
    """What a finished booster is compared on: the common settings and the engine's own parameters."""
    return {**{k: getattr(cfg, k) for k in SETTINGS}, **asdict(params)}


def saved_settings(saved: dict) -> dict:
    legacy = {"by_catalogue": False}  # boosters from before the option read the features alone
    return {**{k: saved.get(k, legacy.get(k)) for k in SETTINGS if k in saved or k in legacy},
            **saved.get("params", {})}


def train_catalogues(out: str, backbone: str) -> dict[str, int]:
    """{catalogue format: train rows} of a backbone's train features (their ids only are read)."""
    import pyarrow.parquet as pq

    from gzpipe.boost.catalogues import catalogue_rows
    from gzpipe.fileio import local_path

    ids = pq.read_table(local_path(features_path(out, backbone, "train")), columns=["id"]).column("id").to_pylist()
    return catalogue_rows(ids)


def resolve_by_catalogue(cfg: BoostConfig) -> bool:
    """``by_catalogue`` as it will be fitted: None means on when the train features join several catalogue
    formats (and never with a Dask scheduler, whose workers read the features themselves)."""
    if cfg.by_catalogue is False:
        return False
    try:
        rows = train_catalogues(cfg.out, cfg.backbone)
    except (GzpipeError, OSError):
        return bool(cfg.by_catalogue)  # no features yet: check_data says so, with the command that makes them
    several = len([c for c in rows if c]) > 1
    if cfg.by_catalogue and cfg.dask_scheduler:
        raise GzpipeError("by_catalogue is not available with a Dask scheduler (the workers read the features "
                          "themselves); leave it out or train without --dask-scheduler")
    if cfg.by_catalogue and not several:
        raise GzpipeError(f"--by-catalogue: the train features of {cfg.backbone} come from one catalogue format "
                          f"({', '.join(c or 'ids without a format prefix' for c in rows)}); it applies to shards "
                          "that join several (gzpipe shard --catalog A --catalog B)")
    return several and not cfg.dask_scheduler


def check_scheduler(address: str) -> None:
    """A Dask scheduler that answers at ``address`` within ``SCHEDULER_TIMEOUT_S``: one line naming the address
    otherwise, before any work (its form is checked by ``validate``)."""
    from distributed import Client

    try:
        with Client(address, timeout=f"{SCHEDULER_TIMEOUT_S}s"):
            pass
    except (OSError, TimeoutError, ValueError) as e:
        why = "" if isinstance(e, TimeoutError) or not str(e).strip() else f" ({str(e).strip().splitlines()[0][:160]})"
        raise GzpipeError(f"no Dask scheduler answered at {address} within {SCHEDULER_TIMEOUT_S} s{why}; start one "
                          "(`dask scheduler`, then `dask worker ADDRESS`) or fix --dask-scheduler") from None


def check_address(address: str) -> None:
    if not _ADDRESS.match(address):
        raise GzpipeError(f"--dask-scheduler {address!r} is not a scheduler address; give one as tcp://HOST:PORT "
                          "(e.g. tcp://127.0.0.1:8786, what `dask scheduler` prints)")


def check_data(cfg: BoostConfig, params, out: str, backbone: str) -> None:
    """The options against the features they will read: every split present, --pca within the feature width."""
    for split in ("train", "val", "test"):
        features_path(out, backbone, split)  # the one-line error names the `gzpipe features` command
    width = read_features_width(out, backbone)
    if cfg.pca is not None and width is not None and cfg.pca > width:
        raise GzpipeError(f"--pca {cfg.pca} is more than the {width} features of {backbone}; give at most {width} "
                          "components")


def read_features_width(out: str, backbone: str) -> int | None:
    import json

    try:
        return int(json.loads(features_meta(out, backbone).read_text())["width"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run_boost(cfg: BoostConfig, force_hint: str | None = None) -> dict:
    """Train one booster, following the re-run contract (``gzpipe.rerun``): a finished one is skipped (or kept, the
    differences listed); ``force`` checks everything, then builds the new booster beside the old one and swaps it
    in when it is complete. A booster is never resumed: an interrupted fit starts over. ``force_hint`` is how the
    caller's user replaces a finished one (named in the messages)."""
    params = validate(cfg)
    cfg.backbone = resolve_name(cfg.backbone)
    cfg.by_catalogue = resolve_by_catalogue(cfg)
    name = f"{cfg.engine}_{cfg.backbone}"
    final = cfg.run_dir
    check_out_folder(cfg.out)
    finish_swap(final)
    remove_stale_tmp(final, recursive=True)
    if runs.is_complete(final, runs.BOOSTER) and not cfg.force:
        changed = runs.changed_inputs(final)
        if changed:
            raise GzpipeError(runs.stale_message(final, changed, (force_hint or f"`gzpipe boost --engine {cfg.engine} "
                                                 f"--backbone {cfg.backbone} --force`") + " retrains it"))
        diff = rerun.differences(saved_settings(runs.read_json(final, runs.CONFIG)), settings(cfg, params))
        rerun.say(rerun.finished_line(name, final, diff, force_hint or "--force"))
        return runs.read_json(final, runs.METRICS)
    # every check that can refuse an option, before anything of an existing run is touched
    check_data(cfg, params, cfg.out, cfg.backbone)
    if cfg.dask_scheduler:
        check_scheduler(cfg.dask_scheduler)
    impl = engine(cfg.engine).impl()
    device, why = impl.pick_device(cfg)
    inputs = {"features": features_meta(cfg.out, cfg.backbone),
              "checkpoint": runs.best_checkpoint(runs.backbone_dir(cfg.out, cfg.backbone))}
    if runs.is_complete(final, runs.BOOSTER):
        rerun.say(rerun.replacing_line(name, staging_dir(final), final))
    print(f"{name}: device {device} ({why})", flush=True)
    with rebuilt(final) as staged:  # a fit is never resumed: an interrupted one starts over
        metrics = _fit(cfg, params, impl, device, why, staged)
        runs.record_inputs(staged, inputs)
        runs.mark_complete(staged, runs.BOOSTER, f"{name}: test MAE {metrics['test']['mae']:.5f}")
    print(f"{name}: test MAE {metrics['test']['mae']:.4f}  MSE {metrics['test']['mse']:.5f}  "
          f"accuracy {metrics['test']['accuracy']:.4f}  ({metrics['train_time_s']:.1f}s, {device}) -> {final}",
          flush=True)
    return metrics


def _fit(cfg: BoostConfig, params, impl, device: str, why: str, run_dir: Path) -> dict:
    """Fit the engine into ``run_dir``, then predict val and test there; returns the metrics (written too)."""
    name = f"{cfg.engine}_{cfg.backbone}"
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    reduction = None
    if cfg.pca:
        reduction = Reduction.fit((x for _, x, _, _ in iter_feature_batches(cfg.out, cfg.backbone, "train")),
                                  cfg.pca, cfg.pca_fit_rows)
        reduction.save(run_dir)
        print(f"{name}: features reduced to {cfg.pca} principal components "
              f"({100 * reduction.explained:.1f}% of the train variance)", flush=True)
        if cfg.pca > reduction.rows - 1:
            print(f"{name}: note: only {reduction.rows - 1} of the {cfg.pca} components carry "
                  f"variance ({reduction.rows} train rows were fitted); a smaller --pca gives the same model "
                  "faster", flush=True)
    rows = train_catalogues(cfg.out, cfg.backbone) if cfg.by_catalogue else {}
    catalogues = [c for c in rows if c]
    if catalogues:
        print(f"{name}: learning each catalogue's labels: one input per catalogue format ("
              + ", ".join(f"{c} {n:,}" for c, n in rows.items()) + " train galaxies)", flush=True)
    data = FeatureData(cfg.out, cfg.backbone, reduction, catalogues)
    trained = tasks_labelled(cfg.out, cfg.backbone)  # the others have no booster: predicted empty
    predict, info = impl.train(dataclasses.replace(cfg, device=device), params, run_dir, data)
    train_time = time.perf_counter() - t0
    metrics = {"model": name, "engine": cfg.engine, "backbone": cfg.backbone, "tasks_trained": trained,
               "metrics_cover": runs.metrics_cover(trained),
               "catalogue_rows": {c: rows[c] for c in catalogues},
               "train_time_s": train_time, "device": device, "device_reason": why,
               "pca_explained": reduction.explained if reduction else None, **info}
    for split in runs.EVAL_SPLITS:
        STOP.check()
        ids, preds, ys, ms = [], [], [], []
        t1 = time.perf_counter()
        for bid, x, y, m in data.batches(split):  # one pass: features and labels
            ids += bid
            preds.append(np.clip(predict(x), 0.0, 1.0))
            ys.append(y)
            ms.append(m)
        rate = len(ids) / max(time.perf_counter() - t1, 1e-9)
        pred = blank_untrained(np.concatenate(preds), trained)
        metrics[split] = compute_metrics(pred, np.concatenate(ys), np.concatenate(ms))
        metrics[f"{split}_predict_rows_per_s"] = rate
        runs.write_predictions(run_dir, split, ids, pred)
    write_json(run_dir / runs.CONFIG, {**asdict(cfg), "params": asdict(params), "device": device})
    write_json(run_dir / runs.METRICS, metrics)
    return metrics


@dataclass
class TrainedBooster:
    """A finished booster: ``predict(features)`` -> N x 30 in [0, 1], and the backbone whose features it reads."""

    name: str
    engine: str
    backbone: str
    run_dir: Path
    predict_raw: Callable[[np.ndarray], np.ndarray]
    catalogue_rows: dict = field(default_factory=dict)  # by_catalogue: {format: train rows}; empty: features alone
    catalogue: str | None = None  # whose labels ``predict`` follows (by_catalogue): the largest, unless set;
    fallback: str | None = None   # "own": each galaxy's, by its id (then ``fallback``'s, the largest unless set)

    @property
    def catalogues(self) -> list[str]:
        return list(self.catalogue_rows)

    def conventions(self, ids) -> np.ndarray:
        """Whose labels ``predict`` gives each of ``ids`` (a by-catalogue booster only)."""
        from gzpipe.boost.catalogues import conventions, default_catalogue

        default = default_catalogue(self.catalogue_rows)
        return conventions(ids, self.catalogues, self.catalogue or default, self.fallback or default)

    def predict(self, x: np.ndarray, ids=None) -> np.ndarray:
        """Predictions for backbone features ``x`` (of the galaxies ``ids``, which ``catalogue`` "own" reads); a
        by-catalogue booster in ``catalogue``'s convention."""
        x = np.asarray(x, dtype=np.float32)
        if self.catalogue_rows:
            from gzpipe.boost.catalogues import one_hot

            names = self.conventions(ids if ids is not None else [""] * len(x))
            x = np.hstack([x, one_hot(names, self.catalogues)])
        return np.clip(self.predict_raw(x), 0.0, 1.0)


def load_booster(run_dir: str | Path) -> TrainedBooster:
    """A finished booster from its folder; the engine comes from its ``config.json``."""
    d = Path(run_dir)
    cfg = runs.read_json(d, runs.CONFIG)
    name = cfg.get("engine")
    if name not in ENGINES:
        raise GzpipeError(f"{d} was trained with the boosting engine {name!r}, which this gzpipe does not have "
                          f"(registered: {', '.join(ENGINES)}); register it before loading the run")
    metrics = runs.read_json(d, runs.METRICS)
    fn = ENGINES[name].impl().load(d, cfg, metrics)
    reduction = Reduction.load(d)
    rows = metrics.get("catalogue_rows") or {}
    if reduction is not None:  # the booster reads the features through the reduction fitted with it (and then,
        k = len(rows)          # by catalogue, the indicators, which the reduction never saw)
        fn = (lambda f, r: (lambda x: f(np.hstack([r.apply(x[:, :x.shape[1] - k]), x[:, x.shape[1] - k:]]))))(
            fn, reduction)
    return TrainedBooster(d.name, name, cfg["backbone"], d, fn, rows)

