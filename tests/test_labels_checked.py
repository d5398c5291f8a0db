"""Labels that cannot be vote fractions are caught, and outputs say what they cover (issue 38): real catalogue rows
from ../shared (the GZ2 sample's Hart16 table, Kaggle's 37 columns), changed by the test the way users' files go
wrong; LightGBM through Dask keeps the iteration early stopping keeps; exports say which questions a model learnt
and are readable by others; the in-memory prediction path leaves untrained questions empty."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import KAGGLE, SAMPLE
from gzpipe import schema
from gzpipe.catalog import CatalogSource, mask_array, read_catalog
from gzpipe.shard import ShardConfig, run_shard
from test_study import fakenet  # noqa: F401 - the registered stand-in backbone the boosters read features of


@pytest.fixture()
def gz2_rows(real_sample) -> pd.DataFrame:
    return pd.read_csv(real_sample / "labels_manifest_800.csv", dtype={"asset_id": str, "dr7objid": str,
                                                                        "objid": str}).head(40)


def test_fractions_that_cannot_be_vote_fractions_are_rejected_with_the_sums(gz2_rows, tmp_path):
    """The case a user hit: a row whose t01 weighted fractions are 0.5 / 0.5 / 0.5 was stored for the softmax head."""
    df = gz2_rows.copy()
    for a in ("a01_smooth", "a02_features_or_disk", "a03_star_or_artifact"):
        df.loc[0, f"t01_smooth_or_features_{a}_weighted_fraction"] = 0.5
    df.loc[1, "t07_rounded_a16_completely_round_weighted_fraction"] = 0.9  # a reached question summing to ~1.6
    df.to_csv(tmp_path / "c.csv", index=False)
    t = read_catalog(CatalogSource(tmp_path / "c.csv", SAMPLE / "images", target="weighted_fraction"))
    assert t["reject"].iloc[0] == ("t01_smooth_or_features's weighted fractions sum to 1.5 (0.5 + 0.5 + 0.5), not 1 "
                                   "(within --sum-tolerance 0.02): not the vote fractions of one question")
    assert "t07_rounded's weighted fractions sum to" in t["reject"].iloc[1]
    assert (t["reject"].iloc[2:] == "").all()  # the real rows sum to 1 within 0.002
    # debiased fractions are corrected answer by answer and need not sum to 1: not checked
    d = read_catalog(CatalogSource(tmp_path / "c.csv", SAMPLE / "images"))
    assert (d["reject"] == "").all()
    m = run_shard(ShardConfig(catalog=tmp_path / "c.csv", images=SAMPLE / "images", out=tmp_path / "s",
                              target="weighted_fraction", max_rejected=0.2))
    assert m["rejected_by_reason"] == {"not_fractions": 2} and m["config"]["sum_tolerance"] == 0.02
    # a looser tolerance is the user's choice, recorded
    m = run_shard(ShardConfig(catalog=tmp_path / "c.csv", images=SAMPLE / "images", out=tmp_path / "s2",
                              target="weighted_fraction", sum_tolerance=0.7))
    assert m["counts"]["rejected"] == 0 and m["config"]["sum_tolerance"] == 0.7


def test_kaggle_rows_whose_answers_do_not_add_up_are_rejected(tmp_path):
    if not (KAGGLE / "labels_kaggle_37col_420.csv").exists():
        pytest.skip(f"the real Kaggle catalogue is not at {KAGGLE}")
    k = pd.read_csv(KAGGLE / "labels_kaggle_37col_420.csv", dtype={"GalaxyID": str}).head(30)
    k.loc[0, "Class1.3"] += 0.5  # the first question's answers sum to 1.5; no answer below exceeds its parent
    k.to_csv(tmp_path / "k.csv", index=False)
    t = read_catalog(CatalogSource(tmp_path / "k.csv", KAGGLE / "images"))
    assert "t01_smooth_or_features's weighted fractions sum to 1.5" in t["reject"].iloc[0]
    assert (t["reject"].iloc[1:] == "").all()


def test_an_empty_answer_masks_its_question_and_is_counted(gz2_rows, tmp_path, capsys):
    """Before: an answer left empty kept the question's other answers as its targets."""
    df = gz2_rows.copy()
    df.loc[3, "t03_bar_a06_bar_weighted_fraction"] = np.nan
    df.loc[4, "t03_bar_a06_bar_weighted_fraction"] = np.nan
    df.loc[5, "t05_bulge_prominence_a11_just_noticeable_weighted_fraction"] = np.nan
    df.to_csv(tmp_path / "c.csv", index=False)
    t = read_catalog(CatalogSource(tmp_path / "c.csv", SAMPLE / "images", target="weighted_fraction"))
    m = mask_array(t)
    bar, bulge = schema.TASK_SLICES["t03_bar"], schema.TASK_SLICES["t05_bulge_prominence"]
    assert not m[3, bar].any() and not m[4, bar].any() and not m[5, bulge].any()
    assert t.attrs["empty_answers"] == {"t03_bar": 2, "t05_bulge_prominence": 1}
    assert (t["reject"] == "").all()
    man = run_shard(ShardConfig(catalog=tmp_path / "c.csv", images=SAMPLE / "images", out=tmp_path / "s",
                                target="weighted_fraction"))
    assert man["catalogs"][0]["empty_answers"] == {"t03_bar": 2, "t05_bulge_prominence": 1}
    assert ("note: c.csv: 3 question(s) of its galaxies have an answer left empty (t03_bar 2, t05_bulge_prominence "
            "1): each such question is masked for that galaxy") in capsys.readouterr().out
    labels = pd.read_parquet(tmp_path / "s/labels.parquet").set_index("id")
    gid = str(df.loc[3, "asset_id"])
    assert not labels.loc[gid, [f"mask:{n}" for n in schema.TARGET_NAMES[bar]]].any()


def test_duplicate_rows_that_disagree_are_reported(gz2_rows, tmp_path, capsys):
    """Two rows of one galaxy: the first is kept, and the manifest and the summary say how the other differs."""
    df = gz2_rows.copy()
    twin = df.iloc[[7]].copy()
    twin["t02_edgeon_a04_yes_weighted_fraction"] = 1 - twin["t02_edgeon_a04_yes_weighted_fraction"]
    twin["t02_edgeon_a05_no_weighted_fraction"] = 1 - twin["t02_edgeon_a05_no_weighted_fraction"]
    same = df.iloc[[8]].copy()  # a repeat with the same labels: nothing to report
    pd.concat([df, twin, same]).to_csv(tmp_path / "c.csv", index=False)
    m = run_shard(ShardConfig(catalog=tmp_path / "c.csv", images=SAMPLE / "images", out=tmp_path / "s",
                              target="weighted_fraction"))
    dups = {r["row"]: r for r in m["rejected"] if "duplicate id" in r["reason"]}
    assert set(dups) == {40, 41} and "labels" not in dups[41]
    diff = abs(1 - 2 * gz2_rows["t02_edgeon_a04_yes_weighted_fraction"].iloc[7])
    assert dups[40]["labels"] == {"max_abs_diff": pytest.approx(diff, abs=1e-3), "questions": ["t02_edgeon"]}
    assert m["duplicates_disagree"] == 1
    out = capsys.readouterr().out
    assert "note: 1 duplicate row(s) label their galaxy differently from the row kept (by up to" in out


def test_the_same_galaxy_in_two_catalogues_says_how_its_labels_differ(tmp_path):
    """Across catalogues (the GZ2 sample and Kaggle's files share pictures), each duplicate says how it differs."""
    if not (KAGGLE / "labels_kaggle_37col_420.csv").exists() or not (SAMPLE / "labels_manifest_800.csv").exists():
        pytest.skip(f"the real catalogues are not at {KAGGLE.parent}")
    cross = pd.read_csv(KAGGLE / "kaggle_gz2_pixel_crossmatch.csv", dtype=str)
    k = pd.read_csv(KAGGLE / "labels_kaggle_37col_420.csv", dtype={"GalaxyID": str})
    g = pd.read_csv(SAMPLE / "labels_manifest_800.csv", dtype={"asset_id": str, "dr7objid": str, "objid": str})
    twins = cross[cross["GalaxyID"].isin(k["GalaxyID"])].head(6)
    g[g["asset_id"].isin(twins["gz2_asset_id"])].to_csv(tmp_path / "g.csv", index=False)
    k[k["GalaxyID"].isin(twins["GalaxyID"])].to_csv(tmp_path / "k.csv", index=False)
    m = run_shard(ShardConfig(catalog=[tmp_path / "g.csv", tmp_path / "k.csv"],
                              images=[SAMPLE / "images", KAGGLE / "images"], out=tmp_path / "s",
                              target="weighted_fraction"))
    assert len(m["duplicates"]) == 6
    differing = [d for d in m["duplicates"] if "labels" in d]
    assert differing and m["duplicates_disagree"] == len(differing)
    assert all(0 < d["labels"]["max_abs_diff"] <= 1 and d["labels"]["questions"] for d in differing)


def test_lightgbm_through_dask_keeps_the_iteration_early_stopping_keeps(tmp_path):
    """lightgbm.dask has no early stopping (20 of 20 rounds for every target before); the booster is cut back to the
    iteration lightgbm.early_stopping keeps, found on val by the same rule: checked against LightGBM's own early
    stopping on the same trees."""
    import lightgbm as lgb

    from gzpipe.boost.lgbm import best_iteration

    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 8))
    y = x[:, 0] * 0.3 + rng.normal(scale=0.3, size=600)
    xv = rng.normal(size=(200, 8))
    yv = xv[:, 0] * 0.3 + rng.normal(scale=0.3, size=200)
    w = (rng.random(200) > 0.2).astype(float)
    params = {"objective": "regression_l1", "learning_rate": 0.3, "num_leaves": 31, "verbose": -1, "seed": 0,
              "deterministic": True, "min_data_in_leaf": 5}
    full = lgb.train(params, lgb.Dataset(x, y), num_boost_round=60)
    stopped = lgb.train(params, lgb.Dataset(x, y), num_boost_round=60,
                        valid_sets=[lgb.Dataset(xv, yv, weight=np.maximum(w, 1e-12))],
                        callbacks=[lgb.early_stopping(5, verbose=False)])
    assert stopped.best_iteration < 60
    assert best_iteration(full, xv, yv, w, "l1", 5) == stopped.best_iteration


@pytest.mark.slow
def test_lightgbm_on_a_dask_cluster_stops_early(tmp_path, fakenet):
    """The whole path on a two-worker local cluster: best_iterations below the rounds grown, the saved files cut
    back to them, and the run says how it stopped."""
    from distributed import LocalCluster

    from gzpipe.boost import BoostConfig, run_boost
    from test_study import _fake_features

    _fake_features(tmp_path, np.random.default_rng(0))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      host="127.0.0.1") as cluster:
        m = run_boost(BoostConfig(engine="lightgbm", backbone="fakenet", out=str(tmp_path), rounds=60,
                                  early_stopping=5, max_bin=32, colsample=1.0, learning_rate=0.3, device="cpu",
                                  dask_scheduler=cluster.scheduler_address))
    trained = [b for b in m["best_iterations"] if b]
    assert trained and min(trained) < 60 and "after the fact on val" in m["early_stopping"]
    import lightgbm as lgb

    f = sorted((tmp_path / "lightgbm_fakenet/models").glob("00_*.txt"))[0]
    assert lgb.Booster(model_file=str(f)).current_iteration() == m["best_iterations"][0]


def test_an_export_says_which_questions_its_model_learnt_and_others_can_read_it(tmp_path, train_shards):
    """A model trained on 3 of the 10 questions: its card said 'Regresses the 30 vote fractions of 10 GZ2 tasks'
    with an MAE over the 3; model.safetensors was written 0600. The in-memory predictor gave 0.45 / 0.55 for the
    questions it never saw."""
    import torch

    from gzpipe.export import run_export
    from gzpipe.predict.model import load_predictor
    from gzpipe.train.config import resolve
    from gzpipe.train.run import run_train

    shards = tmp_path / "three"
    man = json.loads((train_shards / "manifest.json").read_text())
    cat = pd.read_csv(Path(man["config"]["catalog"]))
    keep = ("t01_smooth_or_features", "t02_edgeon", "t06_odd")
    drop = [c for c in cat.columns if c.startswith("t") and c[:3] in {t[:3] for t in schema.TASK_SLICES}
            and not c.startswith(tuple(keep))]
    cat.drop(columns=drop).to_csv(tmp_path / "c.csv", index=False)
    run_shard(ShardConfig(catalog=tmp_path / "c.csv", mapping=Path(man["config"]["mapping"]),
                          images=Path(man["images_dir"]), out=shards, resize=40, val=0.2, test=0.2))
    art = tmp_path / "art"
    run_train(resolve("timm:resnet10t", str(shards), None, out=str(art), image_size=32, batch_size=8, epochs=1,
                      workers=0, device="cpu", warmup_epochs=1, backend="pil"))
    metrics = json.loads((art / "timm:resnet10t/metrics.json").read_text())
    assert metrics["tasks_trained"] == list(keep) and "3 of 10 questions" in metrics["metrics_cover"]
    out = run_export(art / "timm:resnet10t", tmp_path / "export")
    card = (out / "README.md").read_text()
    assert "Regresses the 30 vote fractions" not in card
    assert "the 3 GZ2 questions its training catalogue labelled (t01_smooth_or_features, t02_edgeon, t06_odd" in card
    assert "over the 3 questions it learnt only" in card
    umask = os.umask(0)
    os.umask(umask)
    for f in out.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~umask, f
    for model in (art / "timm:resnet10t", out):
        p = load_predictor(model, torch.device("cpu"))
        pred = p.predict(torch.zeros(2, 3, 32, 32), p.views[0])
        learnt = np.zeros(schema.N_TARGETS, bool)
        for t in keep:
            learnt[schema.TASK_SLICES[t]] = True
        assert np.isnan(pred[:, ~learnt]).all() and np.isfinite(pred[:, learnt]).all()
