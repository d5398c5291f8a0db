import numpy as np
import pandas as pd
import pytest

from gzpipe import schema
from gzpipe.catalog import CatalogSource, mask_array, read_catalog, target_array
from gzpipe.errors import CatalogError


def _src(tmp_path, df, **kw):
    p = tmp_path / "cat.csv"
    df.to_csv(p, index=False)
    return CatalogSource(p, tmp_path / "images", **kw)


def test_release_with_mapping(synth_release):
    t = read_catalog(CatalogSource(synth_release / "gz2_hart16.csv", synth_release / "images",
                                   synth_release / "gz2_filename_mapping.csv"))
    assert len(t) == 48 and (t["reject"] == "").all()
    assert t["id"].iloc[0] == "100000" and t["path"].iloc[0].endswith("images/100000.jpg")
    assert t["dr7objid"].iloc[0] == "588000000000000000"  # 18-digit ids survive as strings, not floats
    assert target_array(t).shape == (48, 30) and mask_array(t).shape == (48, 30)


def test_gz2class_alias_and_gz_and_target_kinds(synth_release, tmp_path):
    df = pd.read_csv(synth_release / "gz2_hart16.csv", dtype={"dr7objid": str}).rename(columns={"gz2_class": "gz2class"})
    p = tmp_path / "gz2_hart16.csv.gz"
    df.to_csv(p, index=False, compression="gzip")
    for kind in schema.TARGET_KINDS:
        t = read_catalog(CatalogSource(p, tmp_path, synth_release / "gz2_filename_mapping.csv", target=kind))
        assert "gz2_class" in t.columns
        col = f"{schema.TARGET_NAMES[0]}_{kind}"
        np.testing.assert_allclose(t[schema.TARGET_NAMES[0]].to_numpy(), df[col].to_numpy(), equal_nan=True)


def test_unmatched_mapping_rows_are_rejected_not_fatal(synth_release, tmp_path):
    m = pd.read_csv(synth_release / "gz2_filename_mapping.csv", dtype=str).iloc[5:]
    m.to_csv(tmp_path / "map.csv", index=False)
    t = read_catalog(CatalogSource(synth_release / "gz2_hart16.csv", tmp_path, tmp_path / "map.csv"))
    assert (t["reject"].str.contains("mapping")).sum() == 5


def test_asset_id_csv_without_mapping(synth_release, tmp_path):
    df = pd.read_csv(synth_release / "gz2_hart16.csv", dtype={"dr7objid": str})
    df.insert(0, "asset_id", range(100000, 100048))
    t = read_catalog(_src(tmp_path, df))
    assert t["id"].tolist()[:2] == ["100000", "100001"]


def test_nan_target_has_mask_zero_and_unreached_task_masked(synth_release, tmp_path):
    df = pd.read_csv(synth_release / "gz2_hart16.csv", dtype={"dr7objid": str})
    df.insert(0, "asset_id", range(len(df)))
    df.loc[0, "t03_bar_a06_bar_debiased"] = np.nan
    t = read_catalog(_src(tmp_path, df))
    i = schema.TARGET_INDEX["t03_bar_a06_bar"]
    assert np.isnan(target_array(t)[0, i]) and mask_array(t)[0, i] == 0 and t["reject"].iloc[0] == ""
    # Rows where no volunteer reached the spiral-arm tasks: counts 0 -> mask 0, target 0 (not NaN).
    counts = df[[f"{c}_count" for c in schema.TASKS[9].columns]].sum(axis=1).to_numpy()
    rows = np.flatnonzero(counts == 0)
    assert len(rows) > 0
    s = schema.TASK_SLICES["t10_arms_winding"]
    assert (mask_array(t)[rows, s] == 0).all() and (target_array(t)[rows, s] == 0).all()


def test_out_of_range_rejected_with_reason_small_excess_clipped(synth_release, tmp_path):
    df = pd.read_csv(synth_release / "gz2_hart16.csv", dtype={"dr7objid": str})
    df.insert(0, "asset_id", range(len(df)))
    df.loc[1, "t02_edgeon_a04_yes_debiased"] = 1.3
    df.loc[2, "t01_smooth_or_features_a01_smooth_debiased"] = -0.2
    df.loc[3, "t01_smooth_or_features_a01_smooth_debiased"] = 1 + 5e-7
    t = read_catalog(_src(tmp_path, df))
    assert "t02_edgeon_a04_yes_debiased = 1.3 is outside [0, 1]" == t["reject"].iloc[1]
    assert "outside [0, 1]" in t["reject"].iloc[2]
    assert t["reject"].iloc[3] == "" and target_array(t)[3, 0] == pytest.approx(1.0)


def test_kaggle_format(tmp_path):
    rng = np.random.default_rng(0)
    cond = np.zeros((5, 30))
    for task in schema.TASKS:
        s = schema.TASK_SLICES[task.name]
        cond[:, s] = rng.dirichlet(np.ones(s.stop - s.start), 5)
    cum = schema.conditional_to_cumulative(cond)
    df = pd.DataFrame({"GalaxyID": [100008, 100023, 100053, 100078, 100090]})
    for c in schema.KAGGLE_COLUMNS:
        df[c] = cum[:, schema.KAGGLE_TARGET_COLUMNS.index(c)] if c in schema.KAGGLE_TARGET_COLUMNS else 0.0
    t = read_catalog(_src(tmp_path, df))
    assert t["id"].tolist()[0] == "100008" and t["path"].iloc[0].endswith("100008.jpg")
    np.testing.assert_allclose(target_array(t), cond, atol=1e-6)
    assert mask_array(t).all()


@pytest.mark.parametrize("content,match", [
    ("", "empty"),
    ("asset_id,foo\n", "no rows"),
    ("asset_id,foo\n1,2\n", "missing 30 column"),
    ("GalaxyID,Class1.1\n1,0.5\n", "question t01_smooth_or_features has Class1.1 but not Class1.2"),
    ("GalaxyID,Class8.1\n1,0.5\n", "missing 30 column"),
    ("a,b\n1,2\n", "cannot tell the format"),
    ('x,"y\n1,2\n', "cannot read it as comma-separated text"),
])
def test_bad_catalogues_raise_one_readable_error(tmp_path, content, match):
    p = tmp_path / "bad.csv"
    p.write_text(content)
    with pytest.raises(CatalogError, match=match):
        read_catalog(CatalogSource(p, tmp_path))


def test_missing_column_message_names_them_and_release_needs_mapping(synth_release, tmp_path):
    df = pd.read_csv(synth_release / "gz2_hart16.csv", dtype={"dr7objid": str})
    df2 = df.drop(columns=["t03_bar_a06_bar_debiased"])
    df2.insert(0, "asset_id", range(len(df)))
    # only the target's columns are read when they are complete; the error still names the complete families
    with pytest.raises(CatalogError, match=r"t03_bar_a06_bar_debiased.*complete --target families: weighted_fraction, "
                                           r"fraction"):
        read_catalog(_src(tmp_path, df2))
    with pytest.raises(CatalogError, match="--mapping"):
        read_catalog(_src(tmp_path, df))


def test_real_sample_reads_cleanly(real_sample):
    t = read_catalog(CatalogSource(real_sample / "labels_manifest_800.csv", real_sample / "images"))
    assert len(t) == 800 and (t["reject"] == "").all()
    a = target_array(t)
    assert np.nanmin(a) >= 0 and np.nanmax(a) <= 1
    t01 = a[:, :3].sum(axis=1)  # debiased values do not sum to 1 (SOURCE.md: 0.17 .. 1.80)
    assert t01.min() < 0.5 and t01.max() > 1.5
    w = read_catalog(CatalogSource(real_sample / "labels_manifest_800.csv", real_sample / "images",
                                   target="weighted_fraction"))
    np.testing.assert_allclose(target_array(w)[:, :3].sum(axis=1), 1.0, atol=2e-3)
