"""Catalogues the field already has: galaxy-datasets' (Zoobot's) GZ2 format, read by `shard` and by `predict`."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gzpipe import schema
from gzpipe.catalog import CatalogSource, read_catalog
from gzpipe.shard import ShardConfig, run_shard


def to_zoobot(hart: pd.DataFrame, ids: pd.Series, locs: list[str], kind: str, with_fraction: bool) -> pd.DataFrame:
    """A Hart16 table in galaxy-datasets' layout: counts from the ``kind`` fractions (about 40 votes a question),
    each question's total the sum of its counts (as galaxy-datasets' ``_total-votes`` are), the fractions themselves
    under ``..._fraction`` when asked."""
    out = {"id_str": ids.astype(str).to_numpy(), "file_loc": locs, "ra": 1.0, "dec": 2.0}
    for task in schema.TASKS:
        fr = hart[[f"{c}_{kind}" for c in task.columns]].to_numpy(float)
        counts = np.rint(np.nan_to_num(fr) * 40).astype(int)
        question = schema.ZOOBOT_GZ2[task.columns[0]][0]
        out[f"{question}_total-votes"] = counts.sum(1)
        for j, c in enumerate(task.columns):
            _, answer = schema.ZOOBOT_GZ2[c]
            out[f"{question}_{answer}"] = counts[:, j]
            if with_fraction:
                out[f"{question}_{answer}_fraction"] = fr[:, j]
    return pd.DataFrame(out)


def _targets(shards):
    lab = pd.read_parquet(shards / "labels.parquet").set_index("id").sort_index()
    return lab[list(schema.TARGET_NAMES)].to_numpy(), lab[[f"mask:{n}" for n in schema.TARGET_NAMES]].to_numpy()


def test_the_real_sample_in_zoobot_format_shards_to_the_same_targets(real_sample, tmp_path):
    hart = pd.read_csv(real_sample / "labels_manifest_800.csv", dtype={"asset_id": str})
    locs = [f"{a}.jpg" for a in hart["asset_id"]]  # relative: resolved against --images
    z = to_zoobot(hart, hart["asset_id"], locs, "weighted_fraction", with_fraction=True)
    z.to_parquet(tmp_path / "gz2_train_catalog.parquet")
    a = run_shard(ShardConfig(catalog=tmp_path / "gz2_train_catalog.parquet", images=real_sample / "images",
                              out=tmp_path / "z", shard_size=200))
    b = run_shard(ShardConfig(catalog=real_sample / "labels_manifest_800.csv", images=real_sample / "images",
                              out=tmp_path / "h", shard_size=200, target="weighted_fraction"))
    assert a["counts"]["written"] == b["counts"]["written"] == 800 and a["target"]["kind"] == "fraction"
    ya, ma = _targets(tmp_path / "z")
    yb, mb = _targets(tmp_path / "h")
    both = ma & mb
    assert both.sum() > 0.9 * mb.sum()  # the same answers reached (a task with any votes)
    np.testing.assert_allclose(ya[both], yb[both], atol=1e-6)
    assert a["counts"]["per_split"] == b["counts"]["per_split"]  # the same galaxies in the same splits


def test_counts_only_synth_release_and_format_detection(synth_release, tmp_path):
    hart = pd.read_csv(synth_release / "gz2_hart16.csv", dtype={"dr7objid": str})
    mapping = pd.read_csv(synth_release / "gz2_filename_mapping.csv", dtype=str)
    locs = [str(synth_release / "images" / f"{a}.jpg") for a in mapping["asset_id"]]  # absolute paths
    z = to_zoobot(hart, mapping["asset_id"], locs, "fraction", with_fraction=False)
    z.to_csv(tmp_path / "cat.csv", index=False)
    t = read_catalog(CatalogSource(tmp_path / "cat.csv", tmp_path / "unused"))
    assert t.attrs["target_kind"] == "fraction" and list(t["path"]) == locs
    y = t[list(schema.TARGET_NAMES)].to_numpy()
    ref = hart[[f"{n}_fraction" for n in schema.TARGET_NAMES]].to_numpy()
    m = t[[f"mask:{n}" for n in schema.TARGET_NAMES]].to_numpy()
    assert np.abs(y - ref)[m].max() < 0.02  # counts of 40 votes reproduce the fractions to 1/80
    m_ = run_shard(ShardConfig(catalog=tmp_path / "cat.csv", images=tmp_path, out=tmp_path / "s", shard_size=16))
    assert m_["counts"]["written"] == 48 and m_["config"]["format"] == "auto"


def test_predict_takes_a_zoobot_catalogue_as_its_input_list(synth_release, tmp_path):
    from gzpipe.predict.inputs import collect_inputs

    mapping = pd.read_csv(synth_release / "gz2_filename_mapping.csv", dtype=str).iloc[:5]
    pd.DataFrame({"id_str": mapping["objid"], "file_loc": [f"{a}.jpg" for a in mapping["asset_id"]]}).to_parquet(
        tmp_path / "cat.parquet")
    found = collect_inputs([tmp_path / "cat.parquet"], images=synth_release / "images")
    assert [i.id for i in found.items] == list(mapping["objid"])
    assert all(i.path.startswith(str(synth_release / "images")) for i in found.items)
    with pytest.raises(Exception, match="no image path column"):
        pd.DataFrame({"id_str": ["1"]}).to_csv(tmp_path / "bad.csv", index=False)
        collect_inputs([tmp_path / "bad.csv"])
