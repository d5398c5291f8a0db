"""The three registries are plug-ins: a backbone, a loader backend and a boosting engine each registered inside a
test (one `register` call) work through every stage, and no stage names an entry in code."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from gzpipe import schema
from gzpipe.errors import GzpipeError


class TinyNet(nn.Module):
    """A 2-layer CNN with an 8-wide penultimate layer and a classifier at `fc`, as torchvision models have."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten())
        self.fc = nn.Linear(8, 1000)

    def forward(self, x):
        return self.fc(self.body(x))


@pytest.fixture
def tinynet():
    from gzpipe.models import BackboneSpec, register, unregister

    register(BackboneSpec("tinynet", None, "fc", 8, defaults={"lr": 3e-3, "batch_size": 8}, build=TinyNet), "tiny")
    yield "tinynet"
    unregister("tinynet")


@dataclass
class MeanParams:
    shrink: float = 0.0  # a parameter of this engine only

    def validate(self):
        if not 0 <= self.shrink <= 1:
            raise GzpipeError("shrink must be in [0, 1]")


class MeanEngine:
    """An engine that predicts each target's masked train mean: enough to test the plug-in contract."""

    Params = MeanParams

    @staticmethod
    def pick_device(cfg):
        return "cpu", "this engine has no GPU code"

    @staticmethod
    def train(cfg, params, run_dir: Path, data):
        _, _, y, m = data.read("train")
        mean = [float(y[m[:, j], j].mean()) if m[:, j].any() else 0.5 for j in range(schema.N_TARGETS)]
        mean = [(1 - params.shrink) * v + params.shrink * 0.5 for v in mean]
        (run_dir / "means.json").write_text(json.dumps(mean))
        return MeanEngine.load(run_dir, {}, {}), {"trees": 0}

    @staticmethod
    def load(run_dir: Path, config: dict, metrics: dict):
        mean = np.array(json.loads((Path(run_dir) / "means.json").read_text()))
        return lambda x: np.tile(mean, (len(x), 1))


@pytest.fixture
def mean_engine():
    from gzpipe.boost import register, unregister

    register("mean", MeanEngine)
    yield "mean"
    unregister("mean")


def test_a_sixth_backbone_and_a_third_engine_go_through_every_stage(tinynet, mean_engine, train_shards, tmp_path):
    from gzpipe.boost import BoostConfig, run_boost
    from gzpipe.ensemble import EnsembleConfig, run_ensemble
    from gzpipe.features import FeaturesConfig, run_features
    from gzpipe.predict import PredictConfig, run_predict
    from gzpipe.report import run_report
    from gzpipe.study import resolve_study
    from gzpipe.train.config import resolve
    from gzpipe.train.run import run_train

    cfg = resolve("tiny", str(train_shards), None, out=str(tmp_path), image_size=32, epochs=2, workers=0,
                  device="cpu", warmup_epochs=1, backend="pil")
    assert cfg.backbone == "tinynet" and cfg.lr == 3e-3 and cfg.batch_size == 8  # the backbone's own defaults
    assert cfg.patience == 12 and cfg.weight_decay == 0.05  # the rest fall back to the study's
    m = run_train(cfg)
    assert m["epochs_run"] == 2 and 0 < m["test"]["mae"] < 1
    meta = run_features(FeaturesConfig("tinynet", out=str(tmp_path), workers=0))
    assert meta["width"] == 8
    b = run_boost(BoostConfig(engine="mean", backbone="tinynet", out=str(tmp_path), params={"shrink": 0.5}))
    assert b["engine"] == "mean" and b["device_reason"] == "this engine has no GPU code"
    assert json.loads((tmp_path / "mean_tinynet/config.json").read_text())["params"] == {"shrink": 0.5}
    with pytest.raises(GzpipeError, match="unknown key 'depth'"):
        run_boost(BoostConfig(engine="mean", backbone="tinynet", out=str(tmp_path), params={"depth": 3}, force=True))
    run_ensemble(EnsembleConfig(method="equal", out=str(tmp_path)))
    rep = run_report(tmp_path)
    table = pd.read_csv(tmp_path / "model_comparison/comparison_table.csv")
    assert rep["models"] == 3 and set(table["kind"]) == {"deep", "mean", "ensemble"}
    assert set(pd.read_csv(tmp_path / "model_comparison/dl_vs_gb_comparison.csv").columns) >= {"deep_mae", "mean_mae"}
    tars = [str(train_shards / s["name"]) for s in json.loads((train_shards / "manifest.json").read_text())["shards"]
            if s["split"] == "test"]
    res = run_predict(PredictConfig(model=str(tmp_path / "mean_tinynet"), inputs=tars, out=str(tmp_path / "p.csv"),
                                    workers=0))
    p = res.frame()[list(schema.TARGET_NAMES)].to_numpy()
    np.testing.assert_allclose(p, np.tile(p[0], (len(p), 1)), atol=1e-6)  # the engine's own predictions
    assert "tinynet" in resolve_study("demo", None).backbones  # the study's list comes from the registry


def test_a_saved_run_of_an_unknown_engine_is_a_clear_error(tmp_path):
    from gzpipe.boost import load_booster

    d = tmp_path / "catboost_resnet50"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"engine": "catboost", "backbone": "resnet50"}))
    (d / "metrics.json").write_text("{}")
    with pytest.raises(GzpipeError, match="engine 'catboost', which this gzpipe does not have .*xgboost, lightgbm"):
        load_booster(d)


def _const_batches(shards, *, image_size, batch_size, train, device, workers, seed, rank, shuffle_buffer, crop):
    from gzpipe.loaders import Batch
    from gzpipe.loaders.shards import iter_samples

    def batches(epoch):
        samples = [s for f in shards.files for s in iter_samples(f)]
        for i in range(0, len(samples), batch_size):
            part = samples[i:i + batch_size]
            yield Batch(torch.zeros(len(part), 3, image_size, image_size).contiguous(memory_format=torch.channels_last),
                        torch.from_numpy(np.stack([s["targets"] for s in part])),
                        torch.from_numpy(np.stack([s["mask"] for s in part])).bool(), [s["id"] for s in part])

    return batches


class ConstModule:
    build = staticmethod(_const_batches)


def test_a_loader_backend_declares_its_availability_and_place_in_auto(marker_shards, monkeypatch):
    import sys

    from gzpipe.loaders import Backend, create_loader, register, resolve_backend, unregister

    monkeypatch.setitem(sys.modules, "tests_const_backend", ConstModule)
    register(Backend("const", "tests_const_backend", priority=-1, auto_on=("cpu",), available=lambda: (False, "off")))
    try:
        assert resolve_backend("auto", torch.device("cpu")) == "pil"  # unavailable: auto passes it by
        with pytest.raises(GzpipeError, match="const loader backend is not usable here .off."):
            resolve_backend("const", torch.device("cpu"))
        register(Backend("const", "tests_const_backend", priority=-1, auto_on=("cpu",)))
        assert resolve_backend("auto", torch.device("cpu")) == "const"  # available and first in auto's order
        b = next(iter(create_loader(marker_shards, "val", "auto", image_size=16, batch_size=4, device="cpu")))
        assert b.images.shape == (4, 3, 16, 16) and float(b.images.abs().sum()) == 0.0
    finally:
        unregister("const")
    assert resolve_backend("auto", torch.device("cpu")) == "pil"


def test_plugins_load_from_the_environment(tmp_path):
    import subprocess
    import sys

    (tmp_path / "my_gz_plugin.py").write_text(
        "from gzpipe.models import BackboneSpec, register\n"
        "register(BackboneSpec('mynet', 'resnet18', 'fc', 512))\n")
    env = {"PYTHONPATH": str(tmp_path), "GZPIPE_PLUGINS": "my_gz_plugin"}
    r = subprocess.run([sys.executable, "-m", "gzpipe", "train", "--help"], capture_output=True, text=True,
                       env={**__import__("os").environ, **env}, timeout=60)
    assert r.returncode == 0 and "mynet" in r.stdout
    r = subprocess.run([sys.executable, "-m", "gzpipe", "info"], capture_output=True, text=True, timeout=60,
                       env={**__import__("os").environ, "GZPIPE_PLUGINS": "no_such_module"})
    assert r.returncode == 2 and "GZPIPE_PLUGINS: cannot import no_such_module" in r.stderr
