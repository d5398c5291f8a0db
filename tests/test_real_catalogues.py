"""Real catalogues as they come (issue 29): missing questions, several catalogues in one shard set, each format's
real target kind, the Kaggle metric and the paired-bootstrap intervals. Small real subsets of ../shared where it
is there (skipped with the reason where it is not); synthetic catalogues for the rest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import KAGGLE, SAMPLE, SHARED
from gzpipe import schema
from gzpipe.catalog import CatalogSource, mask_array, read_catalog, target_array
from gzpipe.errors import CatalogError, GzpipeError
from gzpipe.labels import split_labels
from gzpipe.metrics import compute_metrics, cumulative_known, kaggle_rmse
from gzpipe.report.intervals import KaggleTerms, difference, paired_bootstrap
from gzpipe.shard import ShardConfig, run_shard

PARTIAL = SHARED / "data" / "kaggle_partial_labels"
ABSENT_17 = ["t03_bar", "t04_spiral", "t05_bulge_prominence", "t09_bulge_shape", "t10_arms_winding", "t11_arms_number"]


@pytest.fixture(scope="module")
def real_kaggle(tmp_path_factory) -> dict:
    """Small subsets of the three real catalogues, chosen to include galaxies that are in two of them: 40 GZ2
    sample rows, 30 of the 420 full Kaggle rows (10 of them the same pictures as GZ2 sample galaxies) and 60 of the
    17-column rows (the 3 that are GZ2 sample pictures among them)."""
    if not (PARTIAL / "labels_kaggle_17col.csv").exists() or not (KAGGLE / "labels_kaggle_37col_420.csv").exists():
        pytest.skip(f"the real Kaggle catalogues are not at {SHARED / 'data'} (they live in ../shared, absent on a "
                    "user's machine)")
    root = tmp_path_factory.mktemp("real_kaggle")
    cross = pd.read_csv(KAGGLE / "kaggle_gz2_pixel_crossmatch.csv", dtype=str)
    gz2 = pd.read_csv(SAMPLE / "labels_manifest_800.csv", dtype={"asset_id": str, "dr7objid": str, "objid": str})
    k37 = pd.read_csv(KAGGLE / "labels_kaggle_37col_420.csv", dtype={"GalaxyID": str})
    k17 = pd.read_csv(PARTIAL / "labels_kaggle_17col.csv", dtype={"GalaxyID": str})
    twins37 = cross[cross["GalaxyID"].isin(k37["GalaxyID"])].head(10)
    twins17 = cross[cross["GalaxyID"].isin(k17["GalaxyID"])]
    pick = pd.concat([twins37, twins17])
    gz2_rows = pd.concat([gz2[gz2["asset_id"].isin(pick["gz2_asset_id"])],
                          gz2[~gz2["asset_id"].isin(pick["gz2_asset_id"])].head(40 - len(pick))])
    k37_rows = pd.concat([k37[k37["GalaxyID"].isin(twins37["GalaxyID"])],
                          k37[~k37["GalaxyID"].isin(cross["GalaxyID"])].head(20)])
    k17_rows = pd.concat([k17[k17["GalaxyID"].isin(twins17["GalaxyID"])],
                          k17[~k17["GalaxyID"].isin(cross["GalaxyID"])].head(60 - len(twins17))])
    paths = {"gz2": root / "gz2.csv", "k37": root / "k37.csv", "k17": root / "k17.csv"}
    gz2_rows.to_csv(paths["gz2"], index=False)
    k37_rows.to_csv(paths["k37"], index=False)
    k17_rows.to_csv(paths["k17"], index=False)
    return {**paths, "twins": len(twins37) + len(twins17), "rows": {"gz2": len(gz2_rows), "k37": len(k37_rows),
                                                                    "k17": len(k17_rows)}}


# ---- 0. each format names its real target kind -----------------------------------------------------------------

def test_kaggle_is_weighted_fractions_and_trains_with_the_softmax_head(real_kaggle, tmp_path):
    m = run_shard(ShardConfig(catalog=real_kaggle["k37"], images=KAGGLE / "images", out=tmp_path / "s",
                              shard_size=50))
    assert m["target"]["kind"] == "weighted_fraction" and m["config"]["target"] == "weighted_fraction"
    from gzpipe.models.heads import default_head

    assert default_head(m["target"]["kind"]) == "softmax"
    with pytest.raises(CatalogError, match="--target fraction cannot be honoured: Kaggle's columns are GZ2's weighted"):
        read_catalog(CatalogSource(real_kaggle["k37"], KAGGLE / "images", target="fraction"))


# ---- 1. catalogues with missing questions ------------------------------------------------------------------------

def test_the_17_column_file_shards_with_six_questions_masked(real_kaggle, tmp_path, capsys):
    m = run_shard(ShardConfig(catalog=real_kaggle["k17"], images=PARTIAL / "images", out=tmp_path / "s",
                              shard_size=50))
    assert m["counts"]["written"] == real_kaggle["rows"]["k17"] and m["tasks_absent"] == ABSENT_17
    assert m["catalogs"][0]["tasks_absent"] == ABSENT_17
    note = capsys.readouterr().out
    assert "has no labels for 6 of 10 questions (t03_bar, t04_spiral" in note and "--all-questions" in note
    lab = pd.concat([split_labels(tmp_path / "s", s) for s in ("train", "val", "test")])
    for t, s in schema.TASK_SLICES.items():
        masks = lab[[f"mask:{n}" for n in list(schema.TARGET_NAMES)[s]]]
        assert masks.to_numpy().any() == (t not in ABSENT_17), t
    with pytest.raises(GzpipeError, match=r"6 of 10 questions absent \(t03_bar, .*no column Class3.1"):
        run_shard(ShardConfig(catalog=real_kaggle["k17"], images=PARTIAL / "images", out=tmp_path / "strict",
                              all_questions=True))
    assert not (tmp_path / "strict").exists()


def test_an_answer_missing_within_a_question_stays_an_error(tmp_path):
    cols = ["GalaxyID", "Class1.1", "Class1.2", "Class1.3", "Class2.1"]  # question 2 without Class2.2
    pd.DataFrame([[1, 0.5, 0.5, 0.0, 0.2]], columns=cols).to_csv(tmp_path / "k.csv", index=False)
    with pytest.raises(CatalogError, match="question t02_edgeon has Class2.1 but not Class2.2"):
        read_catalog(CatalogSource(tmp_path / "k.csv", tmp_path))


def test_hart16_and_zoobot_catalogues_without_some_questions(synth_release, tmp_path):
    df = pd.read_csv(synth_release / "gz2_hart16.csv", dtype={"dr7objid": str})
    df.insert(0, "asset_id", range(len(df)))
    gone = [c for c in df.columns if c.startswith(("t10_", "t11_"))]
    df.drop(columns=gone).to_csv(tmp_path / "h.csv", index=False)
    t = read_catalog(CatalogSource(tmp_path / "h.csv", tmp_path))
    assert t.attrs["tasks_absent"] == ["t10_arms_winding", "t11_arms_number"] and (t["reject"] == "").all()
    m = mask_array(t).astype(bool)
    assert not m[:, schema.TASK_SLICES["t10_arms_winding"]].any() and m[:, :3].all()
    assert np.isnan(target_array(t)[:, schema.TASK_SLICES["t11_arms_number"]]).all()  # unknown, never 0


def test_a_model_trained_without_some_questions_predicts_them_empty(real_kaggle, tmp_path, capsys):
    from gzpipe.predict import PredictConfig, run_predict
    from gzpipe.train.config import resolve
    from gzpipe.train.run import run_train

    shards = tmp_path / "s"
    run_shard(ShardConfig(catalog=real_kaggle["k17"], images=PARTIAL / "images", out=shards, shard_size=50,
                          resize=40, val=0.2, test=0.3))
    metrics = run_train(resolve("resnet50", str(shards), None, out=str(tmp_path / "a"), image_size=32, batch_size=8,
                                epochs=1, workers=0, device="cpu", backend="pil"))
    assert metrics["tasks_trained"] == [t for t in schema.TASK_SLICES if t not in ABSENT_17]
    assert metrics["test"]["per_task"]["t03_bar"]["n"] == 0 and metrics["test"]["per_task"]["t03_bar"]["mae"] is None
    capsys.readouterr()
    df = run_predict(PredictConfig(model=str(tmp_path / "a/resnet50"), inputs=[str(PARTIAL / "images" / "100008.jpg")],
                                   out=str(tmp_path / "p.csv"), workers=0)).frame()
    absent_cols = [n for t in ABSENT_17 for n in list(schema.TARGET_NAMES)[schema.TASK_SLICES[t]]]
    assert df[absent_cols].isna().all().all() and df["t01_smooth_or_features_a01_smooth"].notna().all()
    assert "left empty (NaN): t03_bar, t04_spiral" in capsys.readouterr().out


# ---- 2. several catalogues in one run ----------------------------------------------------------------------------

def test_the_union_of_three_real_catalogues_uses_each_galaxy_once(real_kaggle, tmp_path, capsys):
    cfg = ShardConfig(catalog=[real_kaggle["gz2"], real_kaggle["k37"], real_kaggle["k17"]],
                      images=[SAMPLE / "images", KAGGLE / "images", PARTIAL / "images"], out=tmp_path / "u",
                      target="weighted_fraction", shard_size=40, workers=2)
    m = run_shard(cfg)
    # the galaxies in two catalogues: their labels compared, question by question, against the raw files
    (agree,) = m["duplicate_labels"]
    assert (agree["later"], agree["kept"], agree["galaxies"]) == ("kaggle", "hart16", real_kaggle["twins"])
    gz2 = pd.read_csv(real_kaggle["gz2"], dtype={"asset_id": str}).set_index("asset_id")
    kag = pd.concat([pd.read_csv(real_kaggle[k], dtype={"GalaxyID": str}) for k in ("k37", "k17")]).set_index("GalaxyID")
    pairs = [(d["id"].split(":")[1], d["same_as"].split("hart16:")[1].split()[0]) for d in m["duplicates"]]
    smooth = np.array([kag.loc[k, "Class1.1"] - gz2.loc[h, "t01_smooth_or_features_a01_smooth_weighted_fraction"]
                       for k, h in pairs])
    t01 = agree["tasks"]["t01_smooth_or_features"]
    assert t01["galaxies"] == len(pairs)
    assert abs(t01["mean_diff"]["t01_smooth_or_features_a01_smooth"] - smooth.mean()) < 1e-3
    assert smooth.mean() < -0.05  # Kaggle calls these galaxies less smooth than the Hart16 sample does
    assert "t03_bar" not in agree["tasks"] or agree["tasks"]["t03_bar"]["galaxies"] < len(pairs)  # k17 has no bar
    out = capsys.readouterr().out
    assert f"note: {len(pairs)} galaxies are in both a hart16 and a kaggle catalogue and their labels disagree: " in out
    assert "the hart16 labels are kept" in out
    c, rows = m["counts"], real_kaggle["rows"]
    assert c["catalog_rows"] == sum(rows.values())
    assert c["duplicates"] == real_kaggle["twins"]  # the same pictures, re-encoded: found by their pixels
    assert all(d["same_as"].startswith("the same pixels as hart16:") for d in m["duplicates"])
    for k in m["catalogs"]:  # every row of every catalogue accounted for
        assert k["rows"] == k["excluded_by_fraction"] + k["duplicates"] + k["rejected"] + k["written"]
    assert c["catalog_rows"] == c["excluded_by_fraction"] + c["duplicates"] + c["inputs"]
    assert [k["tasks_absent"] for k in m["catalogs"]] == [[], [], ABSENT_17] and m["tasks_absent"] == []
    lab = pd.concat([split_labels(tmp_path / "u", s).assign(split=s) for s in ("train", "val", "test")])
    assert lab.index.is_unique and len(lab) == c["written"]  # no galaxy in two splits, none twice
    assert {i.split(":")[0] for i in lab.index} == {"hart16", "kaggle"}
    # the same command again: finished, reused; the rebuild command names every catalogue
    again = run_shard(cfg)
    assert again["run"]["shards_written"] == 0
    # a set finished by a gzpipe from before duplicate_labels keeps its manifest byte for byte: every model
    # trained on it records the manifest's sha256, and a new entry would make them all read as out of date
    from gzpipe.fileio import write_json

    old = json.loads((tmp_path / "u/manifest.json").read_text())
    del old["duplicate_labels"]
    write_json(tmp_path / "u/manifest.json", old)
    before = (tmp_path / "u/manifest.json").read_bytes()
    assert "duplicate_labels" not in run_shard(cfg) and (tmp_path / "u/manifest.json").read_bytes() == before
    from gzpipe.shard.verify import rebuild_command

    cmd = rebuild_command(tmp_path / "u")
    assert cmd.count("--catalog") == 3 and cmd.count("--images") == 3


def test_kinds_that_do_not_belong_together_are_refused_naming_both(real_kaggle, tmp_path):
    with pytest.raises(GzpipeError, match=r"gz2.csv holds debiased fractions \(hart16\) and .*k37.csv "
                                          r"weighted_fraction \(kaggle\).*--target weighted_fraction"):
        run_shard(ShardConfig(catalog=[real_kaggle["gz2"], real_kaggle["k37"]],
                              images=[SAMPLE / "images", KAGGLE / "images"], out=tmp_path / "x"))
    assert not (tmp_path / "x").exists()
    with pytest.raises(GzpipeError, match="2 catalogues and 3 --images folders"):
        run_shard(ShardConfig(catalog=[real_kaggle["gz2"], real_kaggle["k37"]], images=[SAMPLE, SAMPLE, SAMPLE],
                              out=tmp_path / "y"))


def test_two_catalogues_of_one_family_share_ids(synth_release, tmp_path):
    """Two Hart16 tables (say, two releases) with one galaxy in both: ids are kept and the second row is a duplicate."""
    df = pd.read_csv(synth_release / "gz2_hart16.csv", dtype={"dr7objid": str})
    mapping = pd.read_csv(synth_release / "gz2_filename_mapping.csv", dtype=str)
    df.insert(0, "asset_id", mapping.set_index("objid").loc[df["dr7objid"], "asset_id"].to_numpy())
    df.iloc[:30].to_csv(tmp_path / "a.csv", index=False)
    df.iloc[25:].to_csv(tmp_path / "b.csv", index=False)
    m = run_shard(ShardConfig(catalog=[tmp_path / "a.csv", tmp_path / "b.csv"], images=synth_release / "images",
                              out=tmp_path / "s", shard_size=16))
    assert m["counts"]["duplicates"] == 5 and m["counts"]["written"] == len(df)
    assert all("the same id" in d["same_as"] for d in m["duplicates"])
    (agree,) = m["duplicate_labels"]  # the same rows twice: they agree to the last digit, and shard says nothing
    assert agree["galaxies"] == 5 and all(t["mean_abs_diff"] == 0 for t in agree["tasks"].values())
    from gzpipe.union import disagreement_lines

    assert disagreement_lines(m["duplicate_labels"]) == []
    moved = {**agree, "tasks": {**agree["tasks"], "t02_edgeon": {"galaxies": 5, "mean_abs_diff": 0.3,
                                                                 "mean_diff": {"t02_edgeon_a04_yes": 0.3}}}}
    (line,) = disagreement_lines([moved])
    assert "5 galaxies are in both a hart16 and a hart16 catalogue" in line and "t02_edgeon by 0.30" in line
    assert "(t02_edgeon_a04_yes: the later hart16 catalogue +0.30)" in line
    assert not any(":" in s for s in split_labels(tmp_path / "s", "train").index)


def test_the_cli_takes_repeated_catalogues(real_kaggle, tmp_path, capsys):
    from gzpipe.cli import main

    try:
        main(["shard", "--catalog", str(real_kaggle["k37"]), "--images", str(KAGGLE / "images"), "--catalog",
              str(real_kaggle["k17"]), "--images", str(PARTIAL / "images"), "--out", str(tmp_path / "s"),
              "--shard-size", "50"])
    except SystemExit as e:
        assert e.code in (0, None), capsys.readouterr().err
    out = capsys.readouterr().out
    assert "k37.csv (kaggle): 30 rows, 30 written" in out and "k17.csv (kaggle)" in out
    assert json.loads((tmp_path / "s/manifest.json").read_text())["target"]["kind"] == "weighted_fraction"


# ---- 3. the field's public metric --------------------------------------------------------------------------------

def test_the_kaggle_metric_is_taken_over_the_real_cumulative_columns(real_kaggle):
    t = read_catalog(CatalogSource(KAGGLE / "labels_kaggle_37col_420.csv", KAGGLE / "images"))
    y, m = target_array(t), mask_array(t).astype(bool)
    raw = pd.read_csv(KAGGLE / "labels_kaggle_37col_420.csv")[list(schema.KAGGLE_TARGET_COLUMNS)].to_numpy()
    assert cumulative_known(y, m).all()  # all 30 cumulative values known, unreached tasks included (Kaggle's 0)
    np.testing.assert_allclose(schema.conditional_to_cumulative(np.nan_to_num(y)), raw, atol=1e-6)
    const = np.tile(raw.mean(axis=0), (len(raw), 1))  # the best constant in cumulative space
    want = float(np.sqrt(np.mean((const - raw) ** 2)))
    # a prediction that is that constant, given as conditional fractions, scores exactly it
    cond_const, _ = schema.cumulative_to_conditional(const)
    got = kaggle_rmse(cond_const, y, m)
    assert got["galaxies"] == 420 and got["columns"] == 30 and abs(got["rmse"] - want) < 1e-9
    assert compute_metrics(y, y, m)["kaggle"]["rmse"] == 0.0
    # a catalogue without some questions: its galaxies are not complete, the known values still count
    t17 = read_catalog(CatalogSource(real_kaggle["k17"], PARTIAL / "images"))
    y17 = target_array(t17)
    r = kaggle_rmse(np.nan_to_num(y17), y17, mask_array(t17).astype(bool))
    # only a galaxy nobody called featured has all 30 known (every task below is unreached: Kaggle's 0)
    assert r["galaxies"] == int((y17[:, 1] == 0).sum()) and r["values_known"] > 30 * r["galaxies"]
    assert r["rmse_known"] == 0.0 and r["rmse"] in (None, 0.0)


# ---- 4. error bars ------------------------------------------------------------------------------------------------

def test_the_paired_bootstrap_on_known_cases():
    rng = np.random.default_rng(3)
    n = 400
    target = np.zeros((n, schema.N_TARGETS))
    mask = np.ones_like(target, dtype=bool)
    err = rng.exponential(0.1, size=(n, 1)) * np.ones((1, schema.N_TARGETS))  # per-galaxy error, the same on each
    a = target + err
    r = paired_bootstrap({"a": a, "b": a + 0.01, "same": a.copy()}, target, mask, resamples=4000)
    f = r["models"]["a"]["mae"]
    se = err[:, 0].std(ddof=1) / np.sqrt(n)  # the normal approximation of the MAE's standard error
    assert abs(f.point - err.mean()) < 1e-12
    assert abs((f.hi - f.lo) / (2 * 1.96 * se) - 1) < 0.1
    d = r["models"]["b"]["vs_best"]  # a constant offset: the paired difference is exactly it, every resample
    assert abs(d.lo - 0.01) < 1e-12 and abs(d.hi - 0.01) < 1e-12 and not r["models"]["b"]["tied_with_best"]
    assert r["best"] in ("a", "same") and r["models"]["same"]["tied_with_best"]
    # two models with errors drawn from one distribution: not distinguishable (their difference is chance)
    other = target + err[rng.permutation(n)]  # the same errors on other galaxies: the same MAE, paired noise
    dd = difference(other, a, target, mask)
    assert dd.lo < 0 < dd.hi and dd.hi - dd.lo > 0.01
    # the same seed, the same intervals
    assert paired_bootstrap({"a": a}, target, mask)["models"]["a"]["mae"] == \
        paired_bootstrap({"a": a}, target, mask)["models"]["a"]["mae"]


def test_the_kaggle_rmse_interval_is_the_metrics_figure_over_the_complete_galaxies():
    """The report's Kaggle RMSE interval: its point is gzpipe.metrics.kaggle_rmse's, over the galaxies with all 30
    cumulative fractions known; galaxies lacking a question change neither; none complete -> no interval."""
    rng = np.random.default_rng(5)
    n = 300
    target = rng.dirichlet(np.ones(3), size=n).repeat(10, axis=1)[:, : schema.N_TARGETS]  # any fractions will do
    mask = np.ones_like(target, dtype=bool)
    mask[200:, schema.TASK_SLICES["t03_bar"]] = False  # a third of the galaxies without the bar question
    pred = np.clip(target + rng.normal(0, 0.1, target.shape), 0, 1)
    r = paired_bootstrap({"a": pred, "b": pred * 0.9}, target, mask)
    ref = kaggle_rmse(pred, target, mask)
    k = r["models"]["a"]["kaggle"]
    assert ref["galaxies"] == r["kaggle_galaxies"] == 200
    assert abs(k.point - ref["rmse"]) < 1e-12 and k.lo < k.point < k.hi
    assert abs(r["models"]["b"]["kaggle"].point - kaggle_rmse(pred * 0.9, target, mask)["rmse"]) < 1e-12
    # the interval is over the complete galaxies only: the same as bootstrapping those 200 alone, about
    sub = paired_bootstrap({"a": pred[:200]}, target[:200], mask[:200])["models"]["a"]["kaggle"]
    assert abs((k.hi - k.lo) / (sub.hi - sub.lo) - 1) < 0.15
    none = mask.copy()
    none[:, schema.TASK_SLICES["t03_bar"]] = False
    assert paired_bootstrap({"a": pred}, target, none)["models"]["a"]["kaggle"] is None


def test_the_kaggle_rmse_over_every_known_value_and_the_best_constant_on_them():
    """KaggleTerms(every_known=True) counts each galaxy's known cumulative values, however few; its best constant
    is each column's mean over those values, and a model that predicts exactly that constant scores it."""
    rng = np.random.default_rng(11)
    n = 240
    target = np.concatenate([rng.dirichlet(np.ones(len(range(*s.indices(schema.N_TARGETS)))), size=n)
                             for s in schema.TASK_SLICES.values()], axis=1)
    mask = np.ones_like(target, dtype=bool)
    for name in ("t03_bar", "t04_spiral", "t10_arms_winding"):  # a partial catalogue: some questions absent
        mask[160:, schema.TASK_SLICES[name]] = False
    terms = KaggleTerms(target, mask, every_known=True)
    known = cumulative_known(target, mask)
    assert terms.galaxies == n and terms.values == int(known.sum()) < n * schema.N_TARGETS
    tc = schema.conditional_to_cumulative(target)
    mean = np.array([tc[known[:, j], j].mean() for j in range(schema.N_TARGETS)])
    want = float(np.sqrt(((tc - mean)[known] ** 2).mean()))
    assert abs(terms.best_constant() - want) < 1e-12
    cond, _ = schema.cumulative_to_conditional(np.tile(mean, (n, 1)))  # that constant, as conditional fractions
    s, c = terms(cond)
    assert abs(np.sqrt(s.sum() / c.sum()) - want) < 1e-9
    assert abs(np.sqrt(s.sum() / c.sum()) - kaggle_rmse(cond, target, mask)["rmse_known"]) < 1e-12
    # the default counts the complete galaxies only, and ``rows`` keeps some
    assert KaggleTerms(target, mask).galaxies == 160 == KaggleTerms(target, mask, rows=np.arange(n) < 200).galaxies
    assert KaggleTerms(target, mask, rows=np.arange(n) < 100).galaxies == 100
    assert KaggleTerms(target, mask, rows=np.zeros(n, bool)).best_constant() is None


def test_by_catalogue_scores_each_catalogues_galaxies_against_its_own_constant():
    from gzpipe.report.catalogues import by_catalogue

    rng = np.random.default_rng(12)
    n = 300
    target = np.concatenate([rng.dirichlet(np.ones(len(range(*s.indices(schema.N_TARGETS)))), size=n)
                             for s in schema.TASK_SLICES.values()], axis=1)
    mask = np.ones_like(target, dtype=bool)
    mask[100:, schema.TASK_SLICES["t03_bar"]] = False  # the "kaggle" galaxies lack the bar question
    ids = [f"hart16:{i}" for i in range(100)] + [f"kaggle:{i}" for i in range(100, n)]
    noisy = np.clip(target + rng.normal(0, 0.05, target.shape), 0, 1)
    t = by_catalogue({"perfect": target.copy(), "noisy": noisy}, target, mask, ids, resamples=500)
    assert list(dict.fromkeys(t["catalogue"])) == ["all", "hart16", "kaggle"]
    g = t.set_index(["catalogue", "name"])
    assert g.loc[("all", "noisy"), "galaxies"] == n and g.loc[("kaggle", "noisy"), "galaxies"] == 200
    known = cumulative_known(target, mask)
    assert g.loc[("kaggle", "noisy"), "kaggle_values"] == int(known[100:].sum())
    assert g.loc[("all", "perfect"), "kaggle_rmse_known"] == 0 and g.loc[("all", "perfect"), "kaggle_vs_constant"] == 0
    # the "all" row is gzpipe.metrics' figure over every known value; each group's constant is its own galaxies'
    assert abs(g.loc[("all", "noisy"), "kaggle_rmse_known"] - kaggle_rmse(noisy, target, mask)["rmse_known"]) < 1e-12
    assert abs(g.loc[("hart16", "noisy"), "best_constant"]
               - KaggleTerms(target[:100], mask[:100], every_known=True).best_constant()) < 1e-12
    assert abs(g.loc[("kaggle", "noisy"), "mae"] - compute_metrics(noisy[100:], target[100:], mask[100:])["mae"]) < 1e-12
    r = t[t["name"] == "noisy"]
    assert ((r["mae_lo"] < r["mae"]) & (r["mae"] < r["mae_hi"])).all()
    assert ((r["kaggle_rmse_known_lo"] < r["kaggle_rmse_known"]) & (r["kaggle_rmse_known"] < r["kaggle_rmse_known_hi"])).all()
    assert np.allclose(r["kaggle_vs_constant"], r["kaggle_rmse_known"] / r["best_constant"])
    # one catalogue format (ids without a prefix): the "all" group only
    assert set(by_catalogue({"noisy": noisy}, target, mask, [str(i) for i in range(n)], resamples=50)["catalogue"]) \
        == {"all"}


@pytest.fixture(scope="module")
def k17_study(real_kaggle, tmp_path_factory) -> Path:
    """Every stage on a shard set of the 17-column file alone (six questions with no label anywhere): two backbones,
    their features, XGBoost and LightGBM on one, an equal and a stacked ensemble, the report."""
    from gzpipe.boost import BoostConfig, run_boost
    from gzpipe.ensemble import EnsembleConfig, run_ensemble
    from gzpipe.features import FeaturesConfig, run_features
    from gzpipe.report import run_report
    from gzpipe.train.config import resolve
    from gzpipe.train.run import run_train

    root = tmp_path_factory.mktemp("k17_study")
    shards, art = root / "s", root / "a"
    run_shard(ShardConfig(catalog=real_kaggle["k17"], images=PARTIAL / "images", out=shards, shard_size=50,
                          resize=40, val=0.2, test=0.3))
    for b in ("resnet50", "efficientnet_v2_s"):
        run_train(resolve(b, str(shards), None, out=str(art), image_size=32, batch_size=8, epochs=1,
                          workers=0, device="cpu", backend="pil"))
    run_features(FeaturesConfig("resnet50", out=str(art), workers=0, device="cpu", backend="pil"))
    for engine in ("xgboost", "lightgbm"):
        run_boost(BoostConfig(engine=engine, backbone="resnet50", out=str(art), rounds=5, early_stopping=3,
                              device="cpu"))
    run_ensemble(EnsembleConfig("equal", out=str(art)))
    run_ensemble(EnsembleConfig("stacked", out=str(art)))
    run_report(art)
    return art


def test_every_stage_honours_questions_no_catalogue_had(k17_study):
    """Boosters, ensembles and the report on six questions with no label anywhere: each scores the four it has,
    reports "no labels" (n 0, no figure) for the six, and never fills them with a score of nothing."""
    runs_ = ["resnet50", "efficientnet_v2_s", "xgboost_resnet50", "lightgbm_resnet50", "ensemble_equal",
             "ensemble_stacked"]
    for name in runs_:
        m = json.loads((k17_study / name / "metrics.json").read_text())
        for t in schema.TASK_SLICES:
            f = m["test"]["per_task"][t]
            if t in ABSENT_17:
                assert f["n"] == 0 and f["mae"] is None and f["accuracy"] is None, (name, t)
            else:
                assert f["n"] > 0 and 0 <= f["mae"] < 1, (name, t)
        assert m["test"]["n"] == sum(m["test"]["per_task"][t]["n"] for t in schema.TASK_SLICES)
        for split in ("val", "test"):  # the prediction files: the absent questions empty, never a made-up 0.5
            p = pd.read_parquet(k17_study / name / f"{split}_predictions.parquet")
            for t, sl in schema.TASK_SLICES.items():
                cols = list(schema.TARGET_NAMES)[sl]
                assert (p[cols].isna().all().all() if t in ABSENT_17 else p[cols].notna().all().all()), (name, t)
    t = pd.read_csv(k17_study / "model_comparison/comparison_table.csv").set_index("name")
    assert set(runs_) <= set(t.index)
    assert (t["mae_lo"] <= t["mae"]).all() and (t["mae"] <= t["mae_hi"]).all()
    assert t["tied_with_best"].sum() >= 1 and "kaggle_rmse" in t
    k = t.dropna(subset=["kaggle_rmse"])  # galaxies nobody sent down the featured branch have all 30 (Kaggle's 0s)
    assert ((k["kaggle_rmse_lo"] <= k["kaggle_rmse"]) & (k["kaggle_rmse"] <= k["kaggle_rmse_hi"])).all()
    assert t["kaggle_rmse"].isna().equals(t["kaggle_rmse_lo"].isna())
    for task in schema.TASK_SLICES:  # the per-task table: empty exactly for the absent questions
        assert t[f"accuracy:{task}"].isna().all() == (task in ABSENT_17), task
    by = pd.read_csv(k17_study / "model_comparison/by_catalogue.csv")  # one format: all its galaxies, one group
    assert set(by["catalogue"]) == {"all"} and set(runs_) <= set(by["name"])
    assert (by["kaggle_values"] > 4 * by["galaxies"]).all()  # the four questions it has count for every galaxy
    assert (by["kaggle_vs_constant"] > 0).all() and (by["kaggle_vs_constant"] < 2).all()
    assert (t["kaggle_vs_constant"].dropna() > 0).all()
    page = (k17_study / "model_comparison/report.html").read_text()
    assert "<h2>By catalogue</h2>" in page and "kaggle_by_catalogue" not in page  # the figure is inlined
    assert "paired-bootstrap intervals over the test galaxies" in page and page.count("no labels") >= len(ABSENT_17) * len(runs_)


@pytest.mark.parametrize("model", ["lightgbm_resnet50", "ensemble_stacked"])
def test_a_booster_or_ensemble_over_partial_labels_predicts_the_absent_questions_empty(k17_study, model, tmp_path,
                                                                                        capsys):
    from gzpipe.predict import PredictConfig, run_predict

    capsys.readouterr()
    df = run_predict(PredictConfig(model=str(k17_study / model), inputs=[str(PARTIAL / "images" / "100008.jpg")],
                                   out=str(tmp_path / "p.csv"), workers=0)).frame()
    absent_cols = [n for t in ABSENT_17 for n in list(schema.TARGET_NAMES)[schema.TASK_SLICES[t]]]
    present = [c for c in schema.TARGET_NAMES if c not in absent_cols]
    assert df[absent_cols].isna().all().all() and df[present].notna().all().all()
    assert "left empty (NaN): t03_bar, t04_spiral" in capsys.readouterr().out


# ---- 5. the real study ----------------------------------------------------------------------------------------------

def test_the_real_preset_is_the_union_of_the_real_catalogues(real_kaggle):
    from gzpipe.study import resolve_study

    cfg = resolve_study("real", None)
    assert [Path(c).name for c in cfg.data.catalog] == ["labels_manifest_800.csv", "labels_kaggle_37col_420.csv",
                                                        "labels_kaggle_37col_2000.csv", "labels_kaggle_17col.csv"]
    assert len(cfg.data.images) == 4 and cfg.data.target == "weighted_fraction"
    assert cfg.shard["random_draw"] == ["labels_kaggle_37col_2000.csv"]  # the random draw the report leads with
    assert cfg.train["select"] == "kaggle"  # early-stopped on the metric the study is judged by
    assert all(Path(p).exists() for p in [*cfg.data.catalog, *cfg.data.images])
    sample = resolve_study("sample", None)  # the 800 hand-picked galaxies alone, as the real preset was before
    assert Path(sample.data.catalog).name == "labels_manifest_800.csv"


def test_predict_gives_each_galaxy_of_a_union_its_own_catalogues_convention(real_kaggle, tmp_path, capsys):
    """A booster of the union learns each catalogue's labels; `gzpipe predict --catalogue own` on the union's shards
    predicts each galaxy as its own catalogue labels it (as the booster's test split was scored), row for row what
    asking for that catalogue gives, and says whose convention each row follows."""
    from gzpipe.boost import BoostConfig, run_boost
    from gzpipe.features import FeaturesConfig, run_features
    from gzpipe.predict import PredictConfig, run_predict
    from gzpipe.train.config import resolve
    from gzpipe.train.run import run_train

    shards, art = tmp_path / "u", tmp_path / "a"
    run_shard(ShardConfig(catalog=[real_kaggle["gz2"], real_kaggle["k37"], real_kaggle["k17"]],
                          images=[SAMPLE / "images", KAGGLE / "images", PARTIAL / "images"], out=shards,
                          target="weighted_fraction", shard_size=40, resize=40, val=0.2, test=0.3))
    run_train(resolve("resnet50", str(shards), None, out=str(art), image_size=32, batch_size=8, epochs=1, workers=0,
                      device="cpu", backend="pil"))
    run_features(FeaturesConfig("resnet50", out=str(art), workers=0, device="cpu", backend="pil"))
    m = run_boost(BoostConfig(engine="lightgbm", backbone="resnet50", out=str(art), rounds=20, device="cpu"))
    assert set(m["catalogue_rows"]) == {"hart16", "kaggle"}  # on by default: the shards join two formats
    got, said = {}, {}
    for choice in ("own", "hart16", "kaggle"):
        capsys.readouterr()
        got[choice] = run_predict(PredictConfig(model=str(art / "lightgbm_resnet50"), inputs=[str(shards)],
                                                out=str(tmp_path / f"{choice}.parquet"), workers=0,
                                                catalogue=choice)).frame().set_index("id")
        said[choice] = capsys.readouterr().out
    own = got["own"]
    assert len(own) == sum(json.loads((shards / "manifest.json").read_text())["counts"]["per_split"].values())
    prefix = own.index.str.split(":").str[0]
    assert (own["catalogue"] == prefix).all() and set(prefix) == {"hart16", "kaggle"}
    assert (got["hart16"]["catalogue"] == "hart16").all() and (got["kaggle"]["catalogue"] == "kaggle").all()
    cols = list(schema.TARGET_NAMES)
    for c in ("hart16", "kaggle"):
        rows = own.index[prefix == c]
        pd.testing.assert_frame_equal(own.loc[rows, cols], got[c].loc[rows, cols])
    assert not np.allclose(got["hart16"][cols], got["kaggle"][cols])  # the indicator does change the prediction
    test = pd.read_parquet(art / "lightgbm_resnet50/test_predictions.parquet").set_index("id")
    diff = np.abs(own.loc[test.index, cols].to_numpy() - test[cols].to_numpy())
    assert np.nanmean(diff) < 0.01  # the booster's own test predictions (features stored as float16)
    n_h, n_k = (prefix == "hart16").sum(), (prefix == "kaggle").sum()
    assert (f"each galaxy as its own catalogue labels it, by its id's prefix ({n_h} as hart16, {n_k} as kaggle"
            in said["own"])
    assert "as the hart16 catalogue labels galaxies" in said["hart16"]
    from gzpipe.boost.catalogues import default_catalogue  # a new image names no catalogue: the default's, said

    one = run_predict(PredictConfig(model=str(art / "lightgbm_resnet50"), inputs=[str(PARTIAL / "images/100008.jpg")],
                                    out=str(tmp_path / "one.csv"), workers=0, catalogue="own")).frame()
    default = default_catalogue(m["catalogue_rows"])
    assert list(one["catalogue"]) == [default]
    assert f"(1 whose id names no catalogue it learnt, as {default};" in capsys.readouterr().out
    with pytest.raises(GzpipeError, match="pick one of them, or own"):
        run_predict(PredictConfig(model=str(art / "lightgbm_resnet50"), inputs=[str(shards)],
                                  out=str(tmp_path / "x.parquet"), workers=0, catalogue="zoobot"))
