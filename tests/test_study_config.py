"""A study's configuration is parsed into typed sections and checked whole before any stage starts: a typo, an
unknown name or an impossible value is one line naming it (exit 2), and nothing is synthesised or sharded first."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from gzpipe.errors import GzpipeError
from gzpipe.study import resolve_study


def _cfg(tmp_path, text: str):
    p = tmp_path / "study.yaml"
    p.write_text(f"preset: demo\nout: {tmp_path / 'art'}\n" + text)
    return p


@pytest.mark.parametrize("text,match", [
    ("train: {epoch: 5}\n", r"train: unknown key 'epoch' \(did you mean 'epochs'\?\); valid keys: epochs"),
    ("train: {epochs: five}\n", r"train.epochs must be an integer, got 'five'"),
    ("train: {epochs: 0}\n", r"epochs must be at least 1"),
    ("train: {backend: turbo}\n", r"unknown loader backend 'turbo'"),
    ("train: {device: gpu}\n", r"device must be auto, cpu, cuda or cuda:N"),
    ("backbones: [resnet50, resnet5]\n", r"backbones: unknown backbone 'resnet5'; choose from resnet50"),
    ("engines: [catboost]\n", r"engines: unknown engine 'catboost'; choose from xgboost, lightgbm"),
    ("methods: [median]\n", r"methods: unknown ensemble method 'median'"),
    ("boost: {max_depht: 3}\n", r"boost: unknown key 'max_depht' \(did you mean 'max_depth'\?\)"),
    ("boost: {colsample: 2}\n", r"colsample must be in \(0, 1\]"),
    ("boost: {num_leaves: 1}\n", r"num_leaves must be between 2 and 131072"),
    ("boost: {lightgbm: {bin_sample_rows: 10}}\n", r"bin_sample_rows must be at least 100"),
    ("boost: {lightgbm: 3}\n", r"boost: lightgbm must be a mapping of keys for that engine alone"),
    ("boost: {lightgbm: {max_bins: 3}}\n", r"boost lightgbm: unknown key 'max_bins' \(did you mean 'max_bin'\?\)"),
    ("boost: {xgboost: {colsample: 0}}\n", r"colsample must be in \(0, 1\]"),
    ("shard: {shard_size: 0}\n", r"shard_size must be at least 1"),
    ("shard: {resize: big}\n", r"shard.resize must be an integer"),
    ("data: {synth: {n: 0}}\n", r"data.synth.n must be at least 1"),
    ("data: {catalog: /nope.csv, images: /nope}\n", r"data.catalog: /nope.csv not found"),
    ("dataa: {}\n", r"unknown key 'dataa' \(did you mean 'data'\?\)"),
])
def test_mistakes_are_named_before_anything_runs(tmp_path, text, match):
    with pytest.raises(GzpipeError, match=match) as e:
        resolve_study(None, _cfg(tmp_path, text))
    assert "\n" not in str(e.value)
    assert not (tmp_path / "art").exists()


def test_the_cli_reports_a_typo_in_one_line_and_writes_nothing(tmp_path):
    cfg = _cfg(tmp_path, "train: {epoch: 5}\n")
    r = subprocess.run([sys.executable, "-m", "gzpipe", "study", "--config", str(cfg)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0
    assert "unknown key 'epoch'" in r.stderr and not (tmp_path / "art").exists()


def test_the_resolved_config_is_saved_and_reproduces_the_study(tmp_path):
    from gzpipe.study.config import write_resolved

    cfg = resolve_study(None, _cfg(tmp_path, "train: {epochs: 2}\nbackbones: [regnet_y_8gf]\nboost: {max_depth: 3}\n"))
    assert cfg.backbones == ["regnety_8gf"] and cfg.train["epochs"] == 2 and cfg.data.synth.n == 400
    saved = write_resolved(cfg)
    again = resolve_study(None, saved)
    assert again.to_dict() == cfg.to_dict()
    assert yaml.safe_load(saved.read_text())["boost"]["max_depth"] == 3


def test_preset_paths_do_not_depend_on_the_working_folder(tmp_path, monkeypatch):
    """`--preset real` names the sample through GZPIPE_SHARED (default: the `shared` folder beside the checkout)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GZPIPE_SHARED", str(tmp_path / "elsewhere"))
    with pytest.raises(GzpipeError, match=r"elsewhere/data/gz2_sample/labels_manifest_800.csv not found; the sample "
                                          r"lives in .*elsewhere \(set GZPIPE_SHARED"):
        resolve_study("real", None)


def test_an_engine_can_have_boost_keys_of_its_own(tmp_path):
    from gzpipe.boost import split_boost_section

    cfg = resolve_study(None, _cfg(tmp_path, "boost: {max_bin: 48, lightgbm: {max_bin: 16, colsample: 0.1}}\n"))
    xgb, _ = split_boost_section(cfg.boost, engine_name="xgboost")
    lgb, _ = split_boost_section(cfg.boost, engine_name="lightgbm")
    assert (xgb["max_bin"], xgb["colsample"]) == (48, 0.25)  # the shared keys (the demo preset's colsample)
    assert (lgb["max_bin"], lgb["colsample"]) == (16, 0.1)  # its own over them
    assert split_boost_section(cfg.boost)[0]["max_bin"] == 48  # no engine named: the shared keys only
    from gzpipe.study.config import PRESETS

    full = PRESETS["full"]["boost"]  # the measured choice (benchmarks/RESULTS.md, "Boosting at scale")
    xgb, _ = split_boost_section(full, engine_name="xgboost")
    lgb, _ = split_boost_section(full, engine_name="lightgbm")
    assert (xgb["pca"], xgb["max_bin"], xgb["early_stopping"]) == (128, 64, 50)
    assert (lgb["pca"], lgb["max_bin"], lgb["colsample"], lgb["early_stopping"]) == (None, 32, 0.05, 20)


def test_force_names_stages():
    from gzpipe.study import STAGES, parse_stages

    assert parse_stages("train, boost") == {"train", "boost"} and parse_stages("all") == set(STAGES)
    with pytest.raises(GzpipeError, match="unknown stage trian"):
        parse_stages("trian")


def test_the_scale_benchmark_passes_each_engine_its_own_full_preset_options():
    """benchmarks/bench_scale.py times `gzpipe boost` with the `full` preset's options: the shared keys, then the
    engine's own mapping (a mapping passed on as one --param would fail, or silently time something else)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks/bench_scale.py"
    spec = importlib.util.spec_from_file_location("bench_scale", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    (_, xgb), = mod._boost_settings(["full"], "xgboost")
    (_, lgb), = mod._boost_settings(["full"], "lightgbm")
    assert xgb == ["--pca", "128", "--max-bin", "64", "--colsample", "0.5"]
    assert lgb == ["--max-bin", "32", "--colsample", "0.05"]


def test_every_preset_stores_its_images_large_enough_for_its_crop():
    """A preset that shards with --resize stores at least --image-size / --crop pixels, or every input would be an
    enlarged, blurred crop (what `gzpipe train` warns about)."""
    from gzpipe.loaders.presets import DEFAULT_CROP
    from gzpipe.study.config import PRESETS

    for name, p in PRESETS.items():
        resize = p["shard"].get("resize")
        if resize is None:
            continue  # the originals: 424 px
        size, crop = p["train"].get("image_size", 224), p["train"].get("crop", DEFAULT_CROP)
        assert resize * crop >= size, (name, resize, crop, size)
