import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gzpipe import schema
from gzpipe.boost import BoostConfig, run_boost
from gzpipe.ensemble import EnsembleConfig, run_ensemble as _run_ensemble, weights_for
from gzpipe.errors import GzpipeError
from gzpipe.features import FeaturesConfig, read_features, run_features, schema_for
from gzpipe.labels import split_labels
from gzpipe.metrics import compute_metrics
from gzpipe.train.config import resolve
from gzpipe.train.run import run_train


def run_ensemble(method, out, backbones=None, force=False):
    return _run_ensemble(EnsembleConfig(method=method, out=str(out), backbones=backbones, force=force))


@pytest.fixture
def fakenet():
    """A registered 16-feature backbone named fakenet (the boosters only read its features)."""
    from gzpipe.models import BackboneSpec, register, unregister

    register(BackboneSpec("fakenet", None, "fc", 16, build=lambda: None))
    yield "fakenet"
    unregister("fakenet")


@pytest.fixture(scope="module")
def trained(train_shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("art")
    run_train(resolve("resnet50", str(train_shards), None, out=str(out), image_size=32, batch_size=8, epochs=1,
                      workers=1, device="cpu", warmup_epochs=1, backend="pil"))
    yield out
    shutil.rmtree(out, ignore_errors=True)  # a resnet50 run is ~400 MB of checkpoints


def test_features_shape_ids_and_up_to_date(trained, train_shards):
    meta = run_features(FeaturesConfig("resnet50", out=str(trained), workers=1))
    assert meta["width"] == 2048 and meta["dtype"] == "float16"
    for split in ("train", "val", "test"):
        ids, x, y, m = read_features(trained, "resnet50", split)
        labels = split_labels(train_shards, split)
        assert sorted(ids) == sorted(labels.index) and len(ids) == len(set(ids))
        assert x.shape == (len(ids), 2048) and np.isfinite(x).all()
        np.testing.assert_allclose(y, labels.loc[ids, list(schema.TARGET_NAMES)].to_numpy(), atol=1e-6)
        t = pq.read_schema(trained / "resnet50/features" / f"{split}.parquet")
        assert t.field("f0000").type == pa.float16()
    f = trained / "resnet50/features/val.parquet"
    before = f.stat().st_mtime_ns
    run_features(FeaturesConfig("resnet50", out=str(trained), workers=1))
    assert f.stat().st_mtime_ns == before  # up to date: skipped
    best = trained / "resnet50/checkpoints/best_model.pth"
    import torch

    state = torch.load(best, weights_only=True)
    state["model"]["head.fc.bias"] += 1.0  # a changed checkpoint ...
    torch.save(state, best)
    run_features(FeaturesConfig("resnet50", out=str(trained), workers=1))
    assert f.stat().st_mtime_ns != before  # ... is re-extracted


def test_features_write_row_groups_of_many_batches(trained, monkeypatch, tmp_path):
    """One parquet row group per batch kept every group's metadata for all 2,048 columns in the writer until it closed:
    +400 MB from 10k to 50k rows. Groups now gather batches up to ROW_GROUP rows."""
    import gzpipe.features as features

    import shutil

    trained = Path(shutil.copytree(trained, tmp_path / "art"))  # the shared fixture stays as it was
    monkeypatch.setattr(features, "ROW_GROUP", 10)
    run_features(FeaturesConfig("resnet50", out=str(trained), workers=1, batch_size=4, force=True))
    f = pq.ParquetFile(trained / "resnet50/features/train.parquet")
    rows = f.metadata.num_rows
    assert rows > 12 and f.metadata.num_row_groups == -(-rows // 12)  # groups of 3 batches of 4, the rest last
    ids, x, _, _ = read_features(trained, "resnet50", "train")
    assert len(ids) == rows == len(set(ids)) and np.isfinite(x).all()


def _fake_features(out: Path, rng, n=(160, 60, 60), width=16):
    """Features where target 0 = x0 clipped, target 1 depends on x1 but half its rows are masked with a wrong
    label of 1.0 (which a per-target mask must ignore)."""
    for split, rows in zip(("train", "val", "test"), n):
        x = rng.random((rows, width)).astype(np.float32)
        y = np.full((rows, 30), 0.5, np.float32)
        m = np.ones((rows, 30), bool)
        y[:, 0] = x[:, 0]
        y[:, 1] = 0.1 * (x[:, 1] > 0.5)
        masked = rng.random(rows) < 0.5
        y[masked, 1] = 1.0
        m[masked, 1] = False
        cols = [pa.array([f"g{split}{i}" for i in range(rows)])] + [pa.array(x[:, j].astype(np.float16)) for j in range(width)]
        cols += [pa.array(y[:, j]) for j in range(30)] + [pa.array(m[:, j]) for j in range(30)]
        (out / "fakenet" / "features").mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_arrays(cols, schema=schema_for(width, "float16")),
                       out / "fakenet/features" / f"{split}.parquet")
    (out / "fakenet/features/meta.json").write_text(json.dumps({"backbone": "fakenet", "width": width}))
    (out / "fakenet/checkpoints").mkdir(exist_ok=True)
    (out / "fakenet/checkpoints/best_model.pth").write_bytes(b"a stand-in checkpoint")


@pytest.mark.parametrize("engine", ["xgboost", "lightgbm"])
def test_boosters_handle_masks_per_target_and_save_native_formats(tmp_path, engine, fakenet):
    _fake_features(tmp_path, np.random.default_rng(0))
    m = run_boost(BoostConfig(engine=engine, backbone="fakenet", out=str(tmp_path), rounds=60, early_stopping=10,
                              max_bin=32, colsample=1.0, device="cpu"))
    d = tmp_path / f"{engine}_fakenet"
    assert m["device"] == "cpu" and m["device_reason"]
    pred = pd.read_parquet(d / "test_predictions.parquet")
    p = pred[list(schema.TARGET_NAMES)].to_numpy()
    assert p.min() >= 0 and p.max() <= 1 and len(pred) == 60
    ids, x, y, mk = read_features(tmp_path, "fakenet", "test")
    assert np.mean(np.abs(p[:, 0] - y[:, 0])) < 0.08  # learnt the easy target
    # target 1: the masked rows' wrong label 1.0 must not pull predictions up (they would sit near 0.5 otherwise)
    assert p[:, 1].mean() < 0.15 and np.mean(np.abs(p[mk[:, 1], 1] - y[mk[:, 1], 1])) < 0.05
    assert m["test"]["mae"] == pytest.approx(compute_metrics(p, y, mk)["mae"], abs=1e-6)
    files = [f.name for f in d.rglob("*") if f.is_file()]
    assert not any(f.endswith((".pkl", ".pickle", ".joblib")) for f in files)
    assert ("model.ubj" in files) if engine == "xgboost" else (sum(f.endswith(".txt") and f[0].isdigit() for f in files) == 30)
    if engine == "lightgbm":  # on the CPU: column-wise histograms (a tree pays for the features it samples only)
        assert "[force_col_wise: 1]" in next((d / "models").glob("00_*.txt")).read_text()
    again = run_boost(BoostConfig(engine=engine, backbone="fakenet", out=str(tmp_path), device="cpu"))
    assert again["test"] == m["test"]  # finished: skipped


@pytest.mark.parametrize("engine", ["xgboost", "lightgbm"])
def test_the_l1_objective_predicts_medians_and_keeps_masks(tmp_path, engine, fakenet):
    """Target 2 is 1 for a random 30% of the galaxies, else 0, whatever the features: squared error predicts about
    the mean (0.3), absolute error the median (0) - the lower MAE. Target 1's masked wrong labels still count for
    nothing. Small trees: on 160 rows deep ones fit the noise of target 2 whatever the objective."""
    _fake_features(tmp_path, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    for split in ("train", "val", "test"):
        f = tmp_path / "fakenet/features" / f"{split}.parquet"
        t = pq.read_table(f)
        col = schema.TARGET_NAMES[2]
        y2 = (rng.random(t.num_rows) < 0.3).astype(np.float32)
        pq.write_table(t.set_column(t.schema.get_field_index(col), col, pa.array(y2)), f)
    preds = {}
    for objective in ("l2", "l1"):
        out = tmp_path / objective
        shutil.copytree(tmp_path / "fakenet", out / "fakenet")
        run_boost(BoostConfig(engine=engine, backbone="fakenet", out=str(out), rounds=200, early_stopping=20,
                              max_bin=32, colsample=1.0, device="cpu", objective=objective,
                              params={"max_depth": 2} if engine == "xgboost" else {"min_data_in_leaf": 20}))
        d = out / f"{engine}_fakenet"
        assert json.loads((d / "config.json").read_text())["objective"] == objective
        preds[objective] = pd.read_parquet(d / "test_predictions.parquet")[list(schema.TARGET_NAMES)].to_numpy()
    ids, x, y, mk = read_features(tmp_path / "l1", "fakenet", "test")
    p1, p2 = preds["l1"], preds["l2"]
    assert 0.2 < p2[:, 2].mean() < 0.4 and np.median(p1[:, 2]) < 0.1
    assert np.mean(np.abs(p1[:, 2] - y[:, 2])) < np.mean(np.abs(p2[:, 2] - y[:, 2]))
    assert np.mean(np.abs(p1[:, 0] - y[:, 0])) < 0.08  # the easy target is still learnt
    assert p1[:, 1].mean() < 0.15  # the masked rows' wrong label 1.0 does not pull target 1 up
    with pytest.raises(GzpipeError, match="objective must be one of l2, l1"):
        run_boost(BoostConfig(engine=engine, backbone="fakenet", out=str(tmp_path), objective="huber", force=True))


@pytest.mark.parametrize("engine", ["xgboost", "lightgbm"])
def test_pca_reduction_is_fitted_on_train_and_travels_with_the_booster(tmp_path, engine, fakenet):
    from gzpipe.boost import load_booster

    _fake_features(tmp_path, np.random.default_rng(0))
    m = run_boost(BoostConfig(engine=engine, backbone="fakenet", out=str(tmp_path), rounds=60, early_stopping=10,
                              max_bin=32, colsample=1.0, device="cpu", pca=16, subsample=0.8))
    d = tmp_path / f"{engine}_fakenet"
    assert (d / "reduction.npz").exists() and 0.99 < m["pca_explained"] <= 1.0  # 16 of 16: all the variance
    ids, x, y, mk = read_features(tmp_path, "fakenet", "test")
    assert m["test"]["mae"] < 0.1
    pred = pd.read_parquet(d / "test_predictions.parquet").set_index("id").loc[ids, list(schema.TARGET_NAMES)]
    np.testing.assert_allclose(load_booster(d).predict(x), pred.to_numpy(), atol=1e-5)  # the reduction travels
    with pytest.raises(GzpipeError, match="--pca 17 is more than the 16 features of fakenet"):
        run_boost(BoostConfig(engine=engine, backbone="fakenet", out=str(tmp_path), device="cpu", pca=17,
                              force=True))


def test_pca_wider_than_its_fitted_rows_says_so(tmp_path, fakenet, capsys):
    _fake_features(tmp_path, np.random.default_rng(0))
    run_boost(BoostConfig(engine="lightgbm", backbone="fakenet", out=str(tmp_path), rounds=5, early_stopping=5,
                          device="cpu", pca=8, pca_fit_rows=5))
    assert "only 4 of the 8 components carry variance (5 train rows were fitted)" in capsys.readouterr().out


def test_boost_without_features_says_what_to_run(tmp_path):
    with pytest.raises(GzpipeError, match="gzpipe features --backbone resnet50"):
        run_boost(BoostConfig(engine="xgboost", backbone="resnet50", out=str(tmp_path)))
    with pytest.raises(GzpipeError, match="choose one of xgboost, lightgbm"):
        run_boost(BoostConfig(engine="catboost", backbone="resnet50", out=str(tmp_path)))


def _fake_backbone(out: Path, name: str, shards: Path, noise: float, rng, test_noise=None):
    (out / name).mkdir(parents=True)
    (out / name / "config.json").write_text(json.dumps({"shards": str(shards)}))
    (out / name / "training_complete.txt").write_text("done\n")
    (out / name / "metrics.json").write_text(json.dumps({}))
    for split in ("val", "test"):
        lab = split_labels(shards, split)
        y = lab[list(schema.TARGET_NAMES)].to_numpy()
        s = noise if split == "val" or test_noise is None else test_noise
        p = np.clip(y + rng.normal(0, s, y.shape), 0, 1)
        df = pd.DataFrame(p, columns=list(schema.TARGET_NAMES))
        df.insert(0, "id", lab.index)
        df.to_parquet(out / name / f"{split}_predictions.parquet")


def test_ensemble_weights_come_from_val_only(train_shards, tmp_path):
    rng = np.random.default_rng(1)
    _fake_backbone(tmp_path, "resnet50", train_shards, 0.05, rng, test_noise=0.4)
    _fake_backbone(tmp_path, "swin_v2_s", train_shards, 0.2, rng, test_noise=0.01)
    r = run_ensemble("inverse_mae", tmp_path)
    assert r["models"] == ["resnet50", "swin_v2_s"]
    val = split_labels(train_shards, "val")
    y, m = val[list(schema.TARGET_NAMES)].to_numpy(), val[[f"mask:{n}" for n in schema.TARGET_NAMES]].to_numpy()
    maes = {}
    for b in ("resnet50", "swin_v2_s"):
        p = pd.read_parquet(tmp_path / b / "val_predictions.parquet").set_index("id").loc[val.index].to_numpy()
        maes[b] = compute_metrics(p, y, m)["mae"]
    inv = {b: 1 / v for b, v in maes.items()}
    assert r["weights"]["resnet50"] == pytest.approx(inv["resnet50"] / sum(inv.values()))
    assert r["weights"]["resnet50"] > r["weights"]["swin_v2_s"]  # better on val, though worse on test
    assert run_ensemble("equal", tmp_path)["weights"] == {"resnet50": 0.5, "swin_v2_s": 0.5}
    acc = run_ensemble("accuracy", tmp_path)["weights"]
    assert sum(acc.values()) == pytest.approx(1.0)
    w = json.loads((tmp_path / "ensemble_accuracy/weights.json").read_text())
    assert w["weights_from"] == "val" and w["models"] == ["resnet50", "swin_v2_s"]
    assert weights_for("inverse_mae", {"a": {"mae": 0.1}, "b": {"mae": 0.3}}) == pytest.approx({"a": 0.75, "b": 0.25})
    with pytest.raises(GzpipeError, match="no finished backbone"):
        run_ensemble("equal", tmp_path / "empty")


def _complementary(out, train_shards, test_scale=1.0, seed=3):
    """Two members: one accurate on the first 15 targets, the other on the last 15 (val and test alike)."""
    rng = np.random.default_rng(seed)
    for name, good in (("resnet50", slice(0, 15)), ("swin_v2_s", slice(15, 30))):
        (out / name).mkdir(parents=True, exist_ok=True)
        (out / name / "config.json").write_text(json.dumps({"shards": str(train_shards)}))
        (out / name / "metrics.json").write_text("{}")
        (out / name / "training_complete.txt").write_text("done\n")
        for split in ("val", "test"):
            lab = split_labels(train_shards, split)
            y = lab[list(schema.TARGET_NAMES)].to_numpy()
            noise = np.full(30, 0.3)
            noise[good] = 0.02
            p = np.clip(y + rng.normal(0, 1, y.shape) * noise * (test_scale if split == "test" else 1), 0, 1)
            df = pd.DataFrame(p, columns=list(schema.TARGET_NAMES))
            df.insert(0, "id", lab.index)
            df.to_parquet(out / name / f"{split}_predictions.parquet")


def test_stacked_weights_are_per_target_non_negative_and_fitted_on_val_only(train_shards, tmp_path):
    _complementary(tmp_path, train_shards)
    r = run_ensemble("stacked", tmp_path)
    w = np.array([r["weights"][m] for m in r["models"]])  # members x 30
    assert w.shape == (2, 30) and (w >= 0).all() and np.allclose(w.sum(0), 1.0)
    val = split_labels(train_shards, "val")
    y = val[list(schema.TARGET_NAMES)].to_numpy()
    m = val[[f"mask:{n}" for n in schema.TARGET_NAMES]].to_numpy()
    informative = (m.sum(0) >= 5) & (y.std(0) > 0.05)  # targets where the val split can tell the members apart
    assert informative[:15].sum() >= 5 and informative[15:].sum() >= 3
    assert (w[0, :15][informative[:15]] > 0.6).all() and (w[1, 15:][informative[15:]] > 0.6).all()
    members = {m: json.loads((tmp_path / m / "metrics.json").read_text()) for m in r["models"]}
    assert members
    single = [run_ensemble("equal", tmp_path, [m], force=True)["test"]["mae"] for m in r["models"]]
    assert r["test"]["mae"] < min(single)  # better than its best member
    saved = json.loads((tmp_path / "ensemble_stacked/weights.json").read_text())
    assert saved["weights_from"] == "val" and saved["weights"] == r["weights"] and "shrink" in saved
    # test predictions play no part in the fit: other test predictions, the same weights
    _complementary(tmp_path, train_shards, test_scale=5.0)
    with pytest.raises(GzpipeError, match="ensemble_stacked is out of date: resnet50 test predictions .* --force"):
        run_ensemble("stacked", tmp_path)  # its members' predictions changed: never reused without a word
    again = run_ensemble("stacked", tmp_path, force=True)
    assert again["weights"] == r["weights"] and again["test"]["mae"] != r["test"]["mae"]


def test_stacked_sharing_is_chosen_by_cross_validation_within_val():
    """Members that differ by a constant quality on every target: one shared weight vector fits as well as 30 and
    cross-validates better on a small val split; every grouping covers each target once."""
    from gzpipe.ensemble.stacked import GROUPINGS, StackConfig, fit_stack, groups

    for g in GROUPINGS:
        assert sorted(j for grp in groups(g) for j in grp) == list(range(30))
    rng = np.random.default_rng(0)
    y = rng.random((40, 30))
    preds = np.stack([np.clip(y + rng.normal(0, s, y.shape), 0, 1) for s in (0.05, 0.2, 0.3)], axis=1)
    w, how = fit_stack(preds, y, np.ones_like(y, bool), StackConfig(bags=5))
    assert len(how["cv_mae"]) == len(GROUPINGS) * 4 and how["grouping"] in GROUPINGS
    assert min(how["cv_mae"], key=how["cv_mae"].get) == f"{how['grouping']} shrink {how['shrink']}"
    assert (w >= 0).all() and np.allclose(w.sum(0), 1) and (w[0] > w[1]).all()
    if how["grouping"] == "all":
        assert np.allclose(w, w[:, :1])


def test_report_with_18_models(train_shards, tmp_path):
    from gzpipe.boost import ENGINES
    from gzpipe.models import default_backbones
    from gzpipe.report import run_report

    rng = np.random.default_rng(2)
    hist = [{"epoch": e, "train_loss": 0.1 / e, "val_loss": 0.12 / e, "val_mae": 0.2 / e, "lr": 1e-3,
             "images_per_s": 10.0, "seconds": 1.0} for e in (1, 2, 3)]
    for i, b in enumerate(default_backbones()):
        _fake_backbone(tmp_path, b, train_shards, 0.05 + 0.02 * i, rng)
        lab = split_labels(train_shards, "test")
        p = pd.read_parquet(tmp_path / b / "test_predictions.parquet").set_index("id").loc[lab.index]
        met = compute_metrics(p.to_numpy(), lab[list(schema.TARGET_NAMES)].to_numpy(),
                              lab[[f"mask:{n}" for n in schema.TARGET_NAMES]].to_numpy())
        (tmp_path / b / "metrics.json").write_text(json.dumps({"test": met, "val": met, "history": hist,
                                                               "wall_time_s": 12.0, "images_per_s": 30.0}))
        for engine in ENGINES:
            d = tmp_path / f"{engine}_{b}"
            d.mkdir()
            shutil.copy(tmp_path / b / "test_predictions.parquet", d / "test_predictions.parquet")
            (d / "metrics.json").write_text(json.dumps({"test": met, "val": met, "train_time_s": 3.0,
                                                        "best_iteration": 9, "test_predict_rows_per_s": 1e4}))
            (d / "config.json").write_text(json.dumps({"engine": engine, "backbone": b}))
            (d / "boost_complete.txt").write_text("done\n")
    for method in ("equal", "accuracy", "inverse_mae"):
        run_ensemble(method, tmp_path)
    rep = run_report(tmp_path)
    d = tmp_path / "model_comparison"
    table = pd.read_csv(d / "comparison_table.csv")
    assert len(table) == 18 and rep["models"] == 18
    assert sorted(table["kind"].value_counts().to_dict().items()) == [("deep", 5), ("ensemble", 3), ("lightgbm", 5), ("xgboost", 5)]
    for col in ("accuracy", "mae", "mse", "rmse", "parameters", "training_time_s", "throughput_per_s",
                "accuracy:t01_smooth_or_features"):
        assert col in table.columns
    assert table.loc[table["name"] == "resnet50", "parameters"].item() > 2e7
    gb = pd.read_csv(d / "dl_vs_gb_comparison.csv")
    assert len(gb) == 5 and {"deep_mae", "xgboost_mae", "lightgbm_mae"} <= set(gb.columns)
    for f in ("metrics_by_model.png", "per_task_heatmap.png", "predicted_vs_true.png", "training_curves.png"):
        assert (d / f).stat().st_size > 10_000
    k = table.dropna(subset=["kaggle_rmse"])  # synthetic labels carry every question: every model has the metric
    assert len(k) == 18 and (k["kaggle_galaxies"] > 0).all()
    assert ((k["kaggle_rmse_lo"] <= k["kaggle_rmse"]) & (k["kaggle_rmse"] <= k["kaggle_rmse_hi"])).all()
    page = (d / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 5 and "ensemble_inverse_mae" in page
    by = pd.read_csv(d / "by_catalogue.csv")
    assert set(by["catalogue"]) == {"all"} and len(by) == 18 and (d / "kaggle_by_catalogue.png").stat().st_size > 10_000
    assert (table["kaggle_vs_constant"] > 0).all()
    assert "Intervals are 95% paired-bootstrap intervals" in page and "<b>By test MAE</b>" in page
    assert "train-mean baseline" in page and "best constant (each column&#x27;s mean)" in page or \
        "best constant (each column's mean)" in page
    assert list(table["mae"]) == sorted(table["mae"])  # sorted as the figures are


def test_tiny_study_runs_and_resumes(tmp_path):
    from gzpipe.study import resolve_study, run_study

    cfg_file = tmp_path / "study.yaml"
    cfg_file.write_text(f"""
preset: demo
out: {tmp_path / 'art'}
data: {{synth: {{n: 40, seed: 3}}}}
shard: {{resize: 40, shard_size: 10, workers: 1}}
train: {{image_size: 32, epochs: 1, batch_size: 8, workers: 1, device: cpu, backend: pil}}
boost: {{rounds: 20, early_stopping: 5}}
backbones: [resnet50]
""")
    cfg = resolve_study(None, cfg_file)
    rep = run_study(cfg)
    assert (tmp_path / "art/study_config.yaml").exists()
    assert rep["models"] == 7  # 1 backbone + 2 boosters + 4 ensembles
    table = pd.read_csv(tmp_path / "art/model_comparison/comparison_table.csv")
    assert set(table["name"]) == {"resnet50", "xgboost_resnet50", "lightgbm_resnet50", "ensemble_equal",
                                  "ensemble_accuracy", "ensemble_inverse_mae", "ensemble_stacked"}
    mtime = (tmp_path / "art/resnet50/training_complete.txt").stat().st_mtime_ns
    run_study(cfg)  # everything finished: skipped, same results
    assert (tmp_path / "art/resnet50/training_complete.txt").stat().st_mtime_ns == mtime
    with pytest.raises(GzpipeError, match="unknown preset"):
        resolve_study("huge", None)
    with pytest.raises(GzpipeError, match="the full preset reads the release where `gzpipe download` writes it"):
        resolve_study("full", None)


@pytest.mark.parametrize("engine", ["xgboost", "lightgbm"])
def test_boost_on_a_two_worker_dask_cluster(tmp_path, engine, fakenet):
    from distributed import LocalCluster

    _fake_features(tmp_path, np.random.default_rng(0))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      host="127.0.0.1") as cluster:  # loopback only
        m = run_boost(BoostConfig(engine=engine, backbone="fakenet", out=str(tmp_path), rounds=25, early_stopping=5,
                                  max_bin=32, colsample=1.0, device="cpu", dask_scheduler=cluster.scheduler_address))
    assert m["dask_scheduler"].startswith("tcp://127.0.0.1")
    p = pd.read_parquet(tmp_path / f"{engine}_fakenet/test_predictions.parquet")[list(schema.TARGET_NAMES)].to_numpy()
    _, _, y, mk = read_features(tmp_path, "fakenet", "test")
    assert np.mean(np.abs(p[:, 0] - y[:, 0])) < 0.1
    assert np.mean(np.abs(p[mk[:, 1], 1] - y[mk[:, 1], 1])) < 0.08  # masked wrong labels ignored on the cluster too
