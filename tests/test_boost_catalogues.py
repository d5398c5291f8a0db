"""Boosters that learn each catalogue's labels (``by_catalogue``): a known case where two catalogues label alike
galaxies differently, which only an input naming the catalogue can learn."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gzpipe import schema
from gzpipe.boost import BoostConfig, load_booster, run_boost
from gzpipe.boost.catalogues import OWN, catalogue_rows, conventions, default_catalogue, indicators, one_hot
from gzpipe.errors import GzpipeError
from gzpipe.features import read_features, schema_for

SMOOTH = list(schema.TARGET_NAMES)[0]
OFFSET = {"hart16": 0.5, "kaggle": 0.1}  # what each catalogue calls the same-looking galaxy


@pytest.fixture
def fakenet():
    from gzpipe.models import BackboneSpec, register, unregister

    register(BackboneSpec("fakenet", None, "fc", 16, build=lambda: None))
    yield "fakenet"
    unregister("fakenet")


def _features(out: Path, prefixed: bool = True, n=(200, 80, 80), width=16, seed=0) -> None:
    """Half the galaxies from each catalogue; the smooth fraction is 0.3 x0 plus the catalogue's offset, and nothing
    in the features says which catalogue a galaxy is from."""
    rng = np.random.default_rng(seed)
    for split, rows in zip(("train", "val", "test"), n):
        x = rng.random((rows, width)).astype(np.float32)
        cats = np.where(np.arange(rows) % 2 == 0, "hart16", "kaggle")
        y = np.full((rows, 30), 0.5, np.float32)
        y[:, 0] = 0.3 * x[:, 0] + np.array([OFFSET[c] for c in cats])
        ids = [f"{c}:{split}{i}" if prefixed else f"{split}{i}" for i, c in enumerate(cats)]
        cols = [pa.array(ids)] + [pa.array(x[:, j].astype(np.float16)) for j in range(width)]
        cols += [pa.array(y[:, j]) for j in range(30)] + [pa.array(np.ones(rows, bool)) for _ in range(30)]
        (out / "fakenet/features").mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_arrays(cols, schema=schema_for(width, "float16")),
                       out / "fakenet/features" / f"{split}.parquet")
    (out / "fakenet/features/meta.json").write_text(json.dumps({"backbone": "fakenet", "width": width}))
    (out / "fakenet/checkpoints").mkdir(exist_ok=True)
    (out / "fakenet/checkpoints/best_model.pth").write_bytes(b"a stand-in checkpoint")


def _smooth_error(out: Path, engine: str) -> float:
    p = pd.read_parquet(out / f"{engine}_fakenet/test_predictions.parquet").set_index("id")
    ids, _, y, _ = read_features(out, "fakenet", "test")
    return float(np.abs(p.loc[ids, SMOOTH].to_numpy() - y[:, 0]).mean())


def test_the_helpers():
    ids = ["kaggle:1", "hart16:2", "kaggle:3", "4"]
    assert catalogue_rows(ids) == {"": 1, "hart16": 1, "kaggle": 2}
    np.testing.assert_array_equal(indicators(ids, ["hart16", "kaggle"]), [[0, 1], [1, 0], [0, 1], [0, 0]])
    np.testing.assert_array_equal(one_hot(conventions(ids, ["hart16", "kaggle"], "hart16", "kaggle"),
                                          ["hart16", "kaggle"]), [[1, 0]] * 4)
    assert default_catalogue({"hart16": 633, "kaggle": 4240}) == "kaggle"
    assert list(conventions(ids, ["hart16", "kaggle"], OWN, "kaggle")) == ["kaggle", "hart16", "kaggle", "kaggle"]
    assert list(conventions(ids + ["zoobot:5"], ["hart16", "kaggle"], OWN, "hart16"))[3:] == ["hart16", "hart16"]
    assert list(conventions(ids, ["hart16", "kaggle"], "hart16", "kaggle")) == ["hart16"] * 4


@pytest.mark.parametrize("engine", ["lightgbm", "xgboost"])
def test_a_booster_learns_each_catalogues_labels(tmp_path, engine, fakenet):
    common = dict(engine=engine, backbone="fakenet", rounds=150, early_stopping=20, max_bin=32, colsample=1.0,
                  device="cpu", objective="l2")
    on, off = tmp_path / "on", tmp_path / "off"
    for d in (on, off):
        _features(d)
    m = run_boost(BoostConfig(out=str(on), **common))  # the default: on, since the ids name two catalogues
    assert m["catalogue_rows"] == {"hart16": 100, "kaggle": 100}
    assert json.loads((on / f"{engine}_fakenet/config.json").read_text())["by_catalogue"] is True
    run_boost(BoostConfig(out=str(off), by_catalogue=False, **common))
    with_it, without = _smooth_error(on, engine), _smooth_error(off, engine)
    assert with_it < 0.05 and without > 0.15  # without it, the mean of the two conventions: 0.2 off each
    # predicting new galaxies: one catalogue's convention, the largest (here a tie: by name), or the one asked for
    b = load_booster(on / f"{engine}_fakenet")
    assert b.catalogues == ["hart16", "kaggle"]
    _, x, _, _ = read_features(on, "fakenet", "test")
    as_kaggle = b.predict(x)[:, 0]
    b.catalogue = "hart16"
    as_hart16 = b.predict(x)[:, 0]
    assert abs((as_hart16 - as_kaggle).mean() - (OFFSET["hart16"] - OFFSET["kaggle"])) < 0.05
    assert np.abs(as_kaggle - (0.3 * x[:, 0] + OFFSET["kaggle"])).mean() < 0.05
    # each galaxy in its own catalogue's convention, by its id: exactly the fixed choice, row by row
    ids, _, y, _ = read_features(on, "fakenet", "test")
    b.catalogue, b.fallback = OWN, "kaggle"
    own = b.predict(x, ids)
    hart = np.array([i.startswith("hart16:") for i in ids])
    np.testing.assert_array_equal(own[hart, 0], as_hart16[hart])
    np.testing.assert_array_equal(own[~hart, 0], as_kaggle[~hart])
    assert np.abs(own[:, 0] - y[:, 0]).mean() < 0.05  # as the test predictions were scored
    np.testing.assert_array_equal(b.predict(x, ["new.jpg"] * len(x))[:, 0], as_kaggle)  # no catalogue: the fallback
    # a finished run with the option flipped: kept, the difference named
    again = run_boost(BoostConfig(out=str(on), by_catalogue=False, **common))
    assert again["catalogue_rows"] == m["catalogue_rows"]


def test_with_pca_the_indicators_pass_beside_the_reduction(tmp_path, fakenet):
    _features(tmp_path)
    run_boost(BoostConfig(engine="lightgbm", backbone="fakenet", out=str(tmp_path), rounds=150, early_stopping=20,
                          max_bin=32, colsample=1.0, device="cpu", objective="l2", pca=4))
    assert _smooth_error(tmp_path, "lightgbm") < 0.12  # 4 components keep part of x0; the offsets (+-0.2) all
    b = load_booster(tmp_path / "lightgbm_fakenet")
    _, x, _, _ = read_features(tmp_path, "fakenet", "test")
    as_kaggle = b.predict(x)[:, 0]
    b.catalogue = "hart16"
    assert abs((b.predict(x)[:, 0] - as_kaggle).mean() - (OFFSET["hart16"] - OFFSET["kaggle"])) < 0.05


def test_one_catalogue_format_has_nothing_to_tell_apart(tmp_path, fakenet):
    _features(tmp_path, prefixed=False)
    m = run_boost(BoostConfig(engine="lightgbm", backbone="fakenet", out=str(tmp_path), rounds=20, device="cpu"))
    assert m["catalogue_rows"] == {}
    assert json.loads((tmp_path / "lightgbm_fakenet/config.json").read_text())["by_catalogue"] is False
    with pytest.raises(GzpipeError, match="come from one catalogue format .*joins? several"):
        run_boost(BoostConfig(engine="lightgbm", backbone="fakenet", out=str(tmp_path), rounds=20, device="cpu",
                              by_catalogue=True, force=True))


def test_predict_asks_for_one_catalogue(tmp_path, fakenet):
    from gzpipe.predict.model import Member, Predictor

    _features(tmp_path)
    run_boost(BoostConfig(engine="lightgbm", backbone="fakenet", out=str(tmp_path), rounds=20, device="cpu"))
    b = load_booster(tmp_path / "lightgbm_fakenet")
    pred = Predictor("lightgbm_fakenet", "booster", [Member(b.name, np.ones(30), "fakenet", b)])
    assert pred.catalogue is None and pred.catalogues() == ["hart16", "kaggle"]
    pred.use_catalogue(None)
    assert pred.catalogue == "kaggle"
    pred.use_catalogue("hart16")
    assert b.catalogue == "hart16"
    with pytest.raises(GzpipeError, match=r"--catalogue 'zoobot': lightgbm_fakenet learnt the labels of hart16, "
                                          r"kaggle; pick one of them, or own"):
        pred.use_catalogue("zoobot")
    assert pred.conventions(["kaggle:1", "hart16:2", "x.jpg"]).tolist() == ["hart16"] * 3
    pred.use_catalogue(OWN)
    assert (pred.catalogue, b.fallback) == (OWN, "kaggle")
    assert pred.conventions(["kaggle:1", "hart16:2", "x.jpg"]).tolist() == ["kaggle", "hart16", "kaggle"]
    plain = Predictor("fakenet", "backbone", [Member("fakenet", np.ones(30), "fakenet")])
    plain.use_catalogue(None)
    assert plain.conventions(["kaggle:1"]) is None
    with pytest.raises(GzpipeError, match="learnt one convention"):
        plain.use_catalogue("kaggle")
