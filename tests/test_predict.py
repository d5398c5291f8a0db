import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import KAGGLE, SAMPLE
from gzpipe import schema
from gzpipe.errors import GzpipeError
from gzpipe.predict import PredictConfig, run_predict as _run_predict
from gzpipe.manifest import read_manifest
from gzpipe.train.config import resolve
from gzpipe.train.run import run_train


def run_predict(model, inputs, out, **kw) -> pd.DataFrame:
    return _run_predict(PredictConfig(model=str(model), inputs=[str(i) for i in inputs], out=str(out), **kw)).frame()


@pytest.fixture(scope="module")
def model(train_shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("pred_art")
    run_train(resolve("resnet50", str(train_shards), None, out=str(out), image_size=32, batch_size=8, epochs=1,
                      workers=1, device="cpu", warmup_epochs=1, backend="pil"))
    yield out / "resnet50"
    shutil.rmtree(out, ignore_errors=True)  # a resnet50 run is ~400 MB of checkpoints


def test_predicting_the_test_shard_reproduces_training_predictions(model, train_shards, tmp_path):
    tars = [train_shards / s["name"] for s in read_manifest(train_shards)["shards"] if s["split"] == "test"]
    df = run_predict(model, tars, tmp_path / "p.csv", workers=1).set_index("id")
    ref = pd.read_parquet(model / "test_predictions.parquet").set_index("id")
    assert sorted(df.index) == sorted(ref.index) and (df["error"].fillna("") == "").all()
    np.testing.assert_allclose(df.loc[ref.index, list(schema.TARGET_NAMES)].to_numpy(),
                               ref[list(schema.TARGET_NAMES)].to_numpy(), atol=1e-4)


def test_a_model_trained_at_a_closer_crop_is_fed_that_crop_everywhere(train_shards, model, tmp_path):
    """--crop is recorded with the run; evaluation, features, predict (alone and in an ensemble with a default-crop
    backbone) and export all make inputs at it: predict reproduces the run's own test predictions."""
    from gzpipe.ensemble import EnsembleConfig, run_ensemble
    from gzpipe.export import run_export
    from gzpipe.features import FeaturesConfig, read_features, run_features

    art = tmp_path / "a"
    shutil.copytree(model, art / "resnet50")  # a default-crop backbone beside it
    run_train(resolve("efficientnet_v2_s", str(train_shards), None, out=str(art), image_size=32, batch_size=8,
                      epochs=1, workers=0, device="cpu", warmup_epochs=1, backend="pil", crop=0.5))
    run_dir = art / "efficientnet_v2_s"
    import json

    assert json.loads((run_dir / "config.json").read_text())["crop"] == 0.5
    tars = [train_shards / s["name"] for s in read_manifest(train_shards)["shards"] if s["split"] == "test"]
    ref = pd.read_parquet(run_dir / "test_predictions.parquet").set_index("id")[list(schema.TARGET_NAMES)]
    df = run_predict(run_dir, tars, tmp_path / "p.csv", workers=0).set_index("id")
    np.testing.assert_allclose(df.loc[ref.index, list(schema.TARGET_NAMES)].to_numpy(), ref.to_numpy(), atol=1e-4)
    exported = run_export(run_dir, tmp_path / "export")
    assert json.loads((exported / "config.json").read_text())["gzpipe"]["input"]["eval_crop"] == 0.5
    dfe = run_predict(exported, tars, tmp_path / "pe.csv", workers=0).set_index("id")
    np.testing.assert_allclose(dfe.loc[ref.index, list(schema.TARGET_NAMES)].to_numpy(), ref.to_numpy(), atol=1e-4)
    # an ensemble of the two: each member fed its own crop, so the mix is the weighted mix of both runs' predictions
    from gzpipe.ensemble import load_weights

    run_ensemble(EnsembleConfig("equal", out=str(art)))
    w = load_weights(art / "ensemble_equal")
    mix = run_predict(art / "ensemble_equal", tars, tmp_path / "pm.csv", workers=0).set_index("id")
    other = pd.read_parquet(art / "resnet50/test_predictions.parquet").set_index("id")[list(schema.TARGET_NAMES)]
    want = w["efficientnet_v2_s"] * ref + w["resnet50"] * other.loc[ref.index]
    np.testing.assert_allclose(mix.loc[ref.index, list(schema.TARGET_NAMES)].to_numpy(), want.to_numpy(), atol=1e-4)
    # features at the run's crop: the head over them gives the run's predictions
    run_features(FeaturesConfig("efficientnet_v2_s", out=str(art), workers=0, device="cpu", backend="pil",
                                dtype="float32"))
    ids, x, _, _ = read_features(art, "efficientnet_v2_s", "test")
    from gzpipe.runs import load_trained
    import torch

    t = load_trained(run_dir, "cpu")
    with torch.inference_mode():
        p = t.model.head(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(p, ref.loc[list(ids)].to_numpy(), atol=1e-4)


def _real_batch(tmp_path):
    if not KAGGLE.exists() or not SAMPLE.exists():
        pytest.skip(f"real images not found under {KAGGLE.parent} (../shared is absent on a user's machine)")
    d = tmp_path / "in"
    d.mkdir()
    for f in sorted((KAGGLE / "images").glob("*.jpg"))[:6] + sorted((SAMPLE / "images").glob("*.jpg"))[:4]:
        shutil.copy(f, d / f.name)
    data = sorted((SAMPLE / "images").glob("*.jpg"))[5].read_bytes()
    (d / "corrupt.jpg").write_bytes(data[: len(data) // 3])
    (d / "notes.jpg").write_text("not an image\n")
    return d


def test_real_images_with_a_corrupt_file_in_the_batch(model, tmp_path):
    d = _real_batch(tmp_path)
    df = run_predict(model, [d], tmp_path / "p.csv", cumulative=True, batch_size=4, workers=2)
    assert len(df) == 12
    bad = df[df["id"].isin(["corrupt", "notes"])]
    assert (bad["error"].str.len() > 0).all() and bad[list(schema.TARGET_NAMES)].isna().all().all()
    assert "not an image" in bad.set_index("id").loc["notes", "error"]
    good = df[~df["id"].isin(["corrupt", "notes"])]
    v = good[list(schema.TARGET_NAMES)].to_numpy()
    assert np.isfinite(v).all() and v.min() >= 0 and v.max() <= 1
    cum = good[list(schema.KAGGLE_TARGET_COLUMNS)].to_numpy()
    np.testing.assert_allclose(cum, schema.conditional_to_cumulative(v), atol=1e-5)
    back = pd.read_csv(tmp_path / "p.csv", keep_default_na=False)
    assert list(back.columns[:4]) == ["id", "path", "error", "t01_smooth_or_features_a01_smooth"]


def test_tta_averages_several_views(model, train_shards, tmp_path):
    tars = [train_shards / s["name"] for s in read_manifest(train_shards)["shards"] if s["split"] == "val"]
    one = run_predict(model, tars, tmp_path / "a.csv", workers=0).set_index("id")
    four = run_predict(model, tars, tmp_path / "b.csv", tta=4, tta_kind="rotate", workers=0).set_index("id")
    diff = np.abs(one[list(schema.TARGET_NAMES)].to_numpy() - four.loc[one.index, list(schema.TARGET_NAMES)].to_numpy())
    assert 0 < diff.mean() < 0.1  # different views, same galaxy


def test_boosters_and_ensembles_predict_through_their_backbones(model, tmp_path):
    from gzpipe.boost import BoostConfig, run_boost
    from gzpipe.ensemble import EnsembleConfig, run_ensemble
    from gzpipe.features import FeaturesConfig, run_features

    out = model.parent
    run_features(FeaturesConfig("resnet50", out=str(out), workers=1))
    run_boost(BoostConfig(engine="xgboost", backbone="resnet50", out=str(out), rounds=10, early_stopping=3))
    run_ensemble(EnsembleConfig(method="equal", out=str(out)))
    img = next(iter(sorted((model.parent.parent).glob("**/*.jpg"))), None)
    tars = sorted(model.parent.parent.glob("**/test-*.tar"))
    src = tars[0] if tars else img
    for name in ("xgboost_resnet50", "ensemble_equal"):
        df = run_predict(out / name, [src], tmp_path / f"{name}.csv", workers=0)
        assert (df["error"] == "").all() and df[list(schema.TARGET_NAMES)].notna().all().all()
    ens = pd.read_csv(tmp_path / "ensemble_equal.csv", keep_default_na=False, dtype={"id": str}).set_index("id")
    single = run_predict(model, [src], tmp_path / "single.csv", workers=0).set_index("id")
    np.testing.assert_allclose(ens[list(schema.TARGET_NAMES)].to_numpy(float),
                               single.loc[ens.index, list(schema.TARGET_NAMES)].to_numpy(), atol=1e-5)


def test_bad_model_or_inputs_are_explained(model, tmp_path):
    with pytest.raises(GzpipeError, match="not a trained gzpipe model"):
        run_predict(tmp_path, [tmp_path], tmp_path / "x.csv")
    with pytest.raises(GzpipeError, match="input not found"):
        run_predict(model, [tmp_path / "nope.jpg"], tmp_path / "x.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GzpipeError, match="no images found"):
        run_predict(model, [tmp_path / "empty"], tmp_path / "x.csv")


def test_views_warped_at_angles_are_the_same_in_evaluation_features_and_predict(train_shards, tmp_path, capsys):
    """--tta 16 --tta-kind angles: the run's own test predictions average the 8 dihedral views of the eval crop
    warped at 0 and 45 degrees; predict with the same views reproduces them, its plain view differs, and the
    features average those 16 views (the boosters learn what predict feeds them)."""
    from gzpipe.features import FeaturesConfig, read_features, run_features
    from gzpipe.runs import load_trained
    from gzpipe.loaders import create_loader
    import torch

    art = tmp_path / "a"
    run_train(resolve("timm:resnet10t", str(train_shards), None, out=str(art), image_size=32, batch_size=8, epochs=1,
                      workers=0, device="cpu", warmup_epochs=1, backend="pil", crop=0.5, tta=16, tta_kind="angles"))
    run_dir = art / "timm:resnet10t"
    import json

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["tta"] == {"views": 16, "kind": "angles"}
    tars = [train_shards / s["name"] for s in read_manifest(train_shards)["shards"] if s["split"] == "test"]
    ref = pd.read_parquet(run_dir / "test_predictions.parquet").set_index("id")[list(schema.TARGET_NAMES)]
    same = run_predict(run_dir, tars, tmp_path / "p.csv", tta=16, tta_kind="angles", workers=0).set_index("id")
    np.testing.assert_allclose(same.loc[ref.index, list(schema.TARGET_NAMES)].to_numpy(), ref.to_numpy(), atol=1e-4)
    capsys.readouterr()
    dihedral = run_predict(run_dir, tars, tmp_path / "d.csv", tta=8, workers=0).set_index("id")
    assert "averaging 16 views; add --tta 16 --tta-kind angles" in capsys.readouterr().out  # fewer: said
    assert np.abs(dihedral.loc[ref.index, list(schema.TARGET_NAMES)].to_numpy() - ref.to_numpy()).mean() > 1e-4
    from gzpipe.loaders.shards import iter_samples, split_shards

    files = tmp_path / "files"  # the same JPEGs as image files: the files' loader warps them the same way
    files.mkdir()
    for s in list(iter_samples(split_shards(train_shards, "test").files[0]))[:5]:
        (files / f"{s['id']}.jpg").write_bytes(s["jpg"])
    from gzpipe.api import load_model

    got = load_model(run_dir, device="cpu").predict(sorted(files.glob("*.jpg")), tta=16, tta_kind="angles")
    got = got.set_index("id")[list(schema.TARGET_NAMES)]
    np.testing.assert_allclose(got.to_numpy(), ref.loc[got.index].to_numpy(), atol=1e-4)

    run_features(FeaturesConfig("timm:resnet10t", out=str(art), workers=0))
    ids, x, _, _ = read_features(art, "timm:resnet10t", "test")
    t = load_trained(run_dir, "cpu")
    by_turn = {}
    for turn in (0.0, 45.0):
        loader = create_loader(train_shards, "test", "pil", 32, 64, device="cpu", workers=0, crop=0.5, turn=turn)
        for b in loader:
            for i, f in zip(b.ids, torch.stack([t.features_and_predictions(torch.rot90(
                    b.images.flip(3) if m else b.images, k, dims=(2, 3)))[0] for m in (False, True)
                    for k in range(4)]).mean(0).numpy()):
                by_turn.setdefault(i, []).append(f)
    expect = np.stack([np.mean(by_turn[i], 0) for i in ids])
    np.testing.assert_allclose(x, expect, atol=2e-3)  # features are stored as float16


def test_an_original_image_file_is_stored_as_the_training_shards_stored_theirs(model, train_shards, synth_release,
                                                                               tmp_path):
    """The shards hold each galaxy resized to 40 px (`shard --resize 40`); a user predicts from the 424 px cutouts
    themselves. Each file is stored as the shards stored theirs before the view is cut, so the originals give the
    run's own test predictions (through a run folder and through its export); cut straight from the 424 px pixels
    they did not (mean difference ~0.01 per fraction on the real preset)."""
    from gzpipe.export import run_export

    ref = pd.read_parquet(model / "test_predictions.parquet").set_index("id")
    files = [synth_release / "images" / f"{i}.jpg" for i in ref.index]
    assert all(f.exists() for f in files)
    exp = tmp_path / "export"
    run_export(model, exp)
    for m in (model, exp):
        df = run_predict(m, files, tmp_path / f"{m.name}.csv", workers=1).set_index("id")
        np.testing.assert_allclose(df.loc[ref.index, list(schema.TARGET_NAMES)].to_numpy(),
                                   ref[list(schema.TARGET_NAMES)].to_numpy(), atol=1e-4)
