"""gzpipe from Python (issue 39): load_model(...).predict on paths, PIL images and arrays gives the CLI's
predictions; exports of a booster and of the stacked ensemble predict as their run folders do; the comparison table
and the study as functions; the package's metadata."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import gzpipe
from gzpipe import schema
from gzpipe.cli import main

ARCH = "timm:resnet10t"


def _run(argv, capsys) -> str:
    try:
        main([str(a) for a in argv])
    except SystemExit as e:
        assert e.code in (0, None), capsys.readouterr().err
    return capsys.readouterr().out


@pytest.fixture(scope="module")
def art(train_shards, tmp_path_factory) -> Path:
    """Two backbones, LightGBM on one's features, the equal ensemble of the backbones and the stacked one of all."""
    from gzpipe.boost import BoostConfig, run_boost
    from gzpipe.ensemble import EnsembleConfig, run_ensemble
    from gzpipe.features import FeaturesConfig, run_features
    from gzpipe.train.config import resolve
    from gzpipe.train.run import run_train

    out = tmp_path_factory.mktemp("api_art")
    run_train(resolve(ARCH, str(train_shards), None, out=str(out), image_size=32, batch_size=8, epochs=1, workers=0,
                      device="cpu", warmup_epochs=1, backend="pil"))
    run_train(resolve("timm:resnet14t", str(train_shards), None, out=str(out), image_size=32, batch_size=8, epochs=1,
                      workers=0, device="cpu", warmup_epochs=1, backend="pil"))
    run_features(FeaturesConfig(ARCH, out=str(out), workers=0, device="cpu", backend="pil"))
    run_boost(BoostConfig(engine="lightgbm", backbone=ARCH, out=str(out), rounds=20, early_stopping=5, max_bin=16,
                          colsample=1.0, device="cpu"))
    run_ensemble(EnsembleConfig("stacked", out=str(out)))
    run_ensemble(EnsembleConfig("equal", out=str(out)))
    yield out
    shutil.rmtree(out, ignore_errors=True)


def test_the_api_on_paths_pil_images_and_arrays_gives_the_clis_predictions(art, synth_release, tmp_path, capsys):
    files = sorted((synth_release / "images").glob("*.jpg"))[:5]
    pngs = []
    for f in files:  # the same pixels as PNG files: what an in-memory image is handed to the loaders as
        pngs.append(tmp_path / f"{f.stem}.png")
        Image.open(f).convert("RGB").save(pngs[-1])
    for model in (art / ARCH, art / f"lightgbm_{ARCH}", art / "ensemble_stacked"):
        cli = {}
        for name, inputs in (("jpg", files), ("png", pngs)):
            out = tmp_path / f"{model.name}-{name}.csv"
            _run(["predict", *inputs, "--model", model, "--out", out, "--device", "cpu", "--workers", "0"], capsys)
            cli[name] = pd.read_csv(out, dtype={"id": str}).set_index("id")[schema.TARGET_NAMES]
        m = gzpipe.load_model(model, device="cpu")
        on_paths = m.predict([str(f) for f in files]).set_index("id")
        on_folder = m.predict(synth_release / "images").set_index("id")
        ids = [f.stem for f in files]
        pil = m.predict([Image.open(f) for f in files], ids=ids).set_index("id")
        arrays = m.predict([np.asarray(Image.open(f).convert("RGB")) for f in files], ids=ids).set_index("id")
        assert list(on_paths.index) == ids and on_paths["error"].eq("").all()
        np.testing.assert_allclose(on_paths[schema.TARGET_NAMES], cli["jpg"].loc[ids], atol=1e-6)
        np.testing.assert_allclose(on_folder.loc[ids, schema.TARGET_NAMES], cli["jpg"].loc[ids], atol=1e-6)
        for got in (pil, arrays):  # in memory: the PNG's pixels, so the PNG files' CLI predictions exactly
            np.testing.assert_allclose(got[schema.TARGET_NAMES], cli["png"].loc[ids], atol=1e-6)
        # and close to the JPEG's (decoded at 1/8 scale by DCT scaling there, box-reduced from the full PNG here)
        assert np.abs(pil[schema.TARGET_NAMES].to_numpy() - cli["jpg"].loc[ids].to_numpy()).mean() < 0.02
    cum = m.predict(files[:2], cumulative=True)
    assert set(schema.KAGGLE_COLUMNS) <= set(cum.columns) and cum[gzpipe.TARGETS].notna().all().all()


def test_an_ensemble_reports_the_spread_of_its_members(art, synth_release):
    m = gzpipe.load_model(art / "ensemble_equal", device="cpu")
    assert m.kind == "ensemble" and len(m.members) == 2 and m.questions == list(schema.TASK_SLICES)
    files = sorted((synth_release / "images").glob("*.jpg"))[:4]
    df = m.predict(files)
    spread = df[[f"{n}_spread" for n in schema.TARGET_NAMES]].to_numpy()
    assert (spread >= 0).all() and spread.max() > 0
    # the members' own predictions, weighted as the ensemble weights them
    w = {k: np.broadcast_to(np.asarray(v, float), (30,)) for k, v in
         __import__("gzpipe.ensemble", fromlist=["load_weights"]).load_weights(art / "ensemble_equal").items()}
    each = {k: gzpipe.load_model(art / k, device="cpu").predict(files)[schema.TARGET_NAMES].to_numpy() for k in w}
    tot = sum(w.values())
    mean = sum(w[k] / tot * each[k] for k in w)
    np.testing.assert_allclose(df[schema.TARGET_NAMES].to_numpy(), mean, atol=1e-5)
    np.testing.assert_allclose(spread, np.sqrt(sum(w[k] / tot * (each[k] - mean) ** 2 for k in w)), atol=1e-5)
    assert "_spread" not in "".join(gzpipe.load_model(art / ARCH, device="cpu").predict(files[:1]).columns)


def test_a_catalogue_dataframe_is_an_input(art, synth_release):
    files = sorted((synth_release / "images").glob("*.jpg"))[:3]
    cat = pd.DataFrame({"id_str": ["a", "b", "c"], "file_loc": [f.name for f in files]})
    m = gzpipe.load_model(art / ARCH, device="cpu")
    df = m.predict(cat, images_folder=synth_release / "images")
    assert list(df["id"]) == ["a", "b", "c"] and df["error"].eq("").all()
    ref = m.predict(files)
    np.testing.assert_allclose(df[schema.TARGET_NAMES], ref[schema.TARGET_NAMES], atol=1e-6)
    with pytest.raises(gzpipe.api.GzpipeError, match="channels first"):
        m.predict([np.zeros((3, 32, 32), np.uint8)])


def test_exports_of_a_booster_and_the_stacked_ensemble_predict_identically(art, synth_release, tmp_path, capsys):
    """'art/ensemble_stacked is a ensemble; gzpipe export writes a backbone': the study's best model could not leave
    its machine. Each export is self-contained (its backbone once), and moved elsewhere predicts as the run did."""
    files = sorted((synth_release / "images").glob("*.jpg"))[:6]
    for name, n_backbones in ((f"lightgbm_{ARCH}", 1), ("ensemble_stacked", 2)):
        exp = tmp_path / f"export-{name.replace(':', '_')}"
        _run(["export", "--model", art / name, "--out", exp], capsys)
        moved = tmp_path / "elsewhere" / exp.name  # nothing of the artifacts folder needed any more
        shutil.copytree(exp, moved)
        shutil.rmtree(exp)
        backbones = list((moved / "backbones").iterdir())
        assert len(backbones) == n_backbones and all((b / "model.safetensors").exists() for b in backbones)  # once each
        a = gzpipe.load_model(art / name, device="cpu").predict(files)
        b = gzpipe.load_model(moved, device="cpu").predict(files)
        np.testing.assert_array_equal(a[schema.TARGET_NAMES].to_numpy(), b[schema.TARGET_NAMES].to_numpy())
        out = tmp_path / f"{exp.name}.csv"
        _run(["predict", *files, "--model", moved, "--out", out, "--device", "cpu", "--workers", "0"], capsys)
        c = pd.read_csv(out, dtype={"id": str})
        np.testing.assert_allclose(c[schema.TARGET_NAMES].to_numpy(), a[schema.TARGET_NAMES].to_numpy(), atol=1e-6)
        assert "Use" in (moved / "README.md").read_text()


def test_read_comparison_and_the_version(art, capsys):
    from gzpipe.report import run_report

    run_report(art)
    capsys.readouterr()
    table = gzpipe.read_comparison(art)
    assert {ARCH, f"lightgbm_{ARCH}", "ensemble_stacked"} <= set(table["name"])
    assert _run(["--version"], capsys).strip() == f"gzpipe {gzpipe.__version__}"
    df = pd.DataFrame(np.zeros((1, 31)), columns=[*schema.TARGET_NAMES, "x"])
    assert df[schema.TARGET_NAMES].shape == (1, 30)  # a list to pandas, not one tuple key
    with pytest.raises(TypeError):
        schema.TARGET_NAMES.append("x")


def test_importing_gzpipe_loads_no_torch():
    code = "import sys, gzpipe; print(gzpipe.__version__, 'torch' in sys.modules, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [gzpipe.__version__, "False", "False"]
