"""`gzpipe study`: the whole 18-model comparison as one resumable command.

  [synth] -> shard -> train x 5 backbones -> features x 5 -> boost x (2 engines x 5) -> ensemble x 3 -> report

Every stage skips what is finished (a trained backbone, current features, a complete booster) and resumes what
was interrupted, so re-running the same command after a kill carries on. Presets:

* ``demo``: the embedded synthetic default (400 galaxies), 48 px images, a few epochs: ~10 minutes on 2 CPU cores;
* ``full``: the original study's hyperparameters (224 px, batch 32, lr 3e-4, up to 250 epochs, patience 12) for
  real GZ2 on a GPU; needs ``data.catalog`` / ``data.images`` (and ``data.mapping``) from a config file.
* ``real``: the 800-galaxy real sample in ../shared/data/gz2_sample at a CPU-practical size.

A YAML config (``--config study.yaml``) starts from its ``preset`` and overrides any section: ``data``, ``shard``,
``train``, ``boost``, ``backbones``, ``engines``, ``methods``, ``out``.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

from gzpipe.errors import GzpipeError

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
        "data": {"catalog": "../shared/data/gz2_sample/labels_manifest_800.csv",
                 "images": "../shared/data/gz2_sample/images"},
        "shard": {"resize": 64, "shard_size": 100, "val": 0.15, "test": 0.15, "workers": 2},
        "train": {"image_size": 48, "epochs": 6, "batch_size": 16, "lr": 1e-3, "patience": 3, "warmup_epochs": 1,
                  "workers": 2, "backend": "auto"},
        "boost": {"rounds": 200, "early_stopping": 20, "max_bin": 64, "colsample": 0.25},
    },
    "full": {
        "out": "artifacts",
        "data": {},
        "shard": {"shard_size": 1000, "val": 0.1, "test": 0.1, "workers": 8},
        "train": {"image_size": 224, "workers": 8},  # batch, lr, epochs, patience: the per-backbone table
        "boost": {"rounds": 2000, "early_stopping": 50, "max_bin": 256, "colsample": 0.5},
    },
}
ALL_BACKBONES = ("resnet50", "efficientnet_v2_s", "convnext_base", "swin_v2_s", "regnety_8gf")


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def resolve_study(preset: str | None, config: str | Path | None, out: str | None = None) -> dict:
    user: dict = {}
    if config is not None:
        import yaml

        p = Path(config)
        if not p.exists():
            raise GzpipeError(f"study config not found: {p}")
        try:
            user = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise GzpipeError(f"{p} is not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(user, dict):
            raise GzpipeError(f"{p} must be a mapping of sections (data, shard, train, boost, ...)")
        unknown = set(user) - {"preset", "out", "data", "shard", "train", "boost", "backbones", "engines", "methods"}
        if unknown:
            raise GzpipeError(f"{p}: unknown sections {', '.join(sorted(unknown))}")
    name = preset or user.get("preset") or "demo"
    if name not in PRESETS:
        raise GzpipeError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    cfg = _merge({"backbones": list(ALL_BACKBONES), "engines": ["xgboost", "lightgbm"],
                  "methods": ["equal", "accuracy", "inverse_mae"], **PRESETS[name]}, user)
    cfg["preset"] = name
    if out:
        cfg["out"] = out
    data = cfg["data"]
    if "synth" not in data and not data.get("catalog"):
        raise GzpipeError(f"preset {name!r} needs data.catalog and data.images (and data.mapping for the release) "
                          "in a --config file")
    return cfg


def run_study(cfg: dict) -> dict:
    from gzpipe.boost import BoostConfig, run_boost
    from gzpipe.ensemble import run_ensemble
    from gzpipe.features import FeaturesConfig, run_features
    from gzpipe.report import run_report
    from gzpipe.shard import ShardConfig, run_shard
    from gzpipe.train.config import resolve
    from gzpipe.train.run import run_train

    out = Path(cfg["out"])
    data = cfg["data"]
    step = _Steps()
    if "synth" in data:
        from gzpipe.synth import SynthConfig, synth

        raw = out / "synth"
        s = data["synth"]
        if _synth_done(raw, s["n"]):
            step.say("synth", f"{s['n']} galaxies already in {raw}")
        else:
            synth(SynthConfig(out=raw, n=s["n"], seed=s.get("seed", 0), workers=cfg["shard"].get("workers", 1)))
            step.say("synth", f"{s['n']} galaxies -> {raw}")
        catalog, images, mapping = raw / "gz2_hart16.csv", raw / "images", raw / "gz2_filename_mapping.csv"
    else:
        catalog, images = Path(data["catalog"]), Path(data["images"])
        mapping = Path(data["mapping"]) if data.get("mapping") else None
    shards = out / "shards"
    m = run_shard(ShardConfig(catalog=catalog, images=images, mapping=mapping, out=shards,
                              format=data.get("format", "auto"), target=data.get("target", "debiased"), **cfg["shard"]))
    c = m["counts"]
    step.say("shard", f"{c['written']} written, {c['rejected']} rejected -> {shards}")
    trained = []
    for b in cfg["backbones"]:
        tcfg = resolve(b, str(shards), None, out=str(out), **cfg["train"])
        if run_train(tcfg) is not None:
            trained.append(tcfg.backbone)
    step.say("train", f"{len(trained)} of {len(cfg['backbones'])} backbones finished")
    for b in trained:
        run_features(FeaturesConfig(backbone=b, out=str(out), workers=cfg["train"].get("workers", 2)))
    step.say("features", ", ".join(trained))
    for engine in cfg["engines"]:
        for b in trained:
            run_boost(BoostConfig(engine=engine, backbone=b, out=str(out), **cfg["boost"]))
    step.say("boost", f"{len(cfg['engines']) * len(trained)} boosters")
    for method in cfg["methods"]:
        run_ensemble(method, out, trained)
    step.say("ensemble", ", ".join(cfg["methods"]))
    rep = run_report(out)
    step.say("report", f"{rep['models']} models -> {rep['dir']}")
    return rep


def _synth_done(raw: Path, n: int) -> bool:
    cat = raw / "gz2_hart16.csv"
    if not cat.exists() or not (raw / "synth_params.csv").exists():
        return False
    with open(cat) as f:
        rows = sum(1 for _ in f) - 1
    return rows == n and len(os.listdir(raw / "images")) >= n


class _Steps:
    def say(self, stage: str, msg: str) -> None:
        print(f"[study] {stage}: {msg}", flush=True)
