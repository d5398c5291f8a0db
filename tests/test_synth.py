import hashlib

import numpy as np
import pandas as pd
from PIL import Image

from gzpipe import schema
from gzpipe.catalog import CatalogSource, mask_array, read_catalog, target_array
from gzpipe.synth import SynthConfig, synth


def _digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def test_writes_the_release_layout(synth_release):
    img = Image.open(synth_release / "images" / "100000.jpg")
    assert img.format == "JPEG" and img.size == (424, 424) and img.mode == "RGB"
    assert "progressive" not in img.info  # baseline JPEG
    hart = pd.read_csv(synth_release / "gz2_hart16.csv")
    for suffix in ("count", "weight", "fraction", "weighted_fraction", "debiased", "flag"):
        assert all(f"{c}_{suffix}" in hart.columns for t in schema.ALL_TASKS for c in t.columns)
    assert {"dr7objid", "gz2_class", "total_votes"} <= set(hart.columns)
    m = pd.read_csv(synth_release / "gz2_filename_mapping.csv")
    assert list(m.columns) == ["objid", "sample", "asset_id"] and len(m) == 48


def test_deterministic_for_a_seed_and_independent_of_workers(tmp_path):
    synth(SynthConfig(out=tmp_path / "a", n=6, seed=3))
    synth(SynthConfig(out=tmp_path / "b", n=6, seed=3, workers=2))
    synth(SynthConfig(out=tmp_path / "c", n=6, seed=4))
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_votes_are_tree_consistent(synth_release):
    hart = pd.read_csv(synth_release / "gz2_hart16.csv")
    for t in schema.ALL_TASKS:
        total = hart[[f"{c}_count" for c in t.columns]].sum(axis=1)
        if t.parent is None:
            np.testing.assert_array_equal(total, hart["total_classifications"])
        else:  # exactly the volunteers who gave the parent answer reach the task
            np.testing.assert_array_equal(total, hart[f"{t.parent}_count"])
        frac = hart[[f"{c}_fraction" for c in t.columns]].sum(axis=1)
        assert np.allclose(frac[total > 0], 1.0, atol=3e-3)


def test_fractions_follow_the_parameters(tmp_path):
    out = tmp_path / "s"
    synth(SynthConfig(out=out, n=150, seed=11, workers=2))
    par = pd.read_csv(out / "synth_params.csv")
    t = read_catalog(CatalogSource(out / "gz2_hart16.csv", out / "images", out / "gz2_filename_mapping.csv",
                                   target="fraction"))
    y, m = target_array(t), mask_array(t).astype(bool)

    def corr(param, target):
        j = schema.TARGET_INDEX[target]
        ok = m[:, j]
        return np.corrcoef(par[param].to_numpy()[ok], y[ok, j])[0, 1]

    assert corr("bulge_to_total", "t01_smooth_or_features_a01_smooth") > 0.5
    assert corr("inclination_deg", "t02_edgeon_a04_yes") > 0.5
    assert corr("bar_strength", "t03_bar_a06_bar") > 0.5
    assert corr("arm_strength", "t04_spiral_a08_spiral") > 0.4
    assert corr("merger", "t06_odd_a14_yes") > 0.5
    assert corr("pitch_deg", "t10_arms_winding_a30_loose") > 0.3
