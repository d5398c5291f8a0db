"""The field's tools (issue 28): timm encoders as backbones, safetensors in and out, galaxy-datasets' catalogues as
they ship, PNG inputs, predict reading what shard reads. Nothing downloads: timm networks are built without weights,
and weights files are written by the tests themselves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from gzpipe import schema
from gzpipe.cli import main
from gzpipe.errors import GzpipeError

timm = pytest.importorskip("timm", reason="timm is not installed")
safetensors_torch = pytest.importorskip("safetensors.torch", reason="safetensors is not installed")

ARCH = "resnet10t"  # a small timm architecture (5 M parameters): seconds to train a step at 32 px


def _run(argv, capsys) -> str:
    try:
        main([str(a) for a in argv])
    except SystemExit as e:
        assert e.code in (0, None), capsys.readouterr().err
    return capsys.readouterr().out


# ---- 1. timm encoders as backbones ---------------------------------------------------------------------------

def test_a_timm_architecture_is_a_backbone_by_name():
    from gzpipe.models import BACKBONES, create_model, resolve_name

    name = resolve_name(f"timm:{ARCH}")
    spec = BACKBONES[name]
    assert name == f"timm:{ARCH}" and spec.features == 512 and spec.weights_architecture == ARCH
    m = create_model(name)
    f = m.features(torch.zeros(2, 3, 32, 32))
    assert f.shape == (2, 512) and m(torch.zeros(2, 3, 32, 32)).shape == (2, schema.N_TARGETS)
    with pytest.raises(GzpipeError, match="unknown timm architecture 'resnet1Ot'; did you mean"):
        resolve_name("timm:resnet1Ot")
    with pytest.raises(GzpipeError, match="timm:NAME for any timm architecture"):
        resolve_name("resnet51")


@pytest.fixture(scope="module")
def timm_run(train_shards, tmp_path_factory) -> Path:
    """A finished timm backbone, its features and a booster on them (the stages downstream take it like any)."""
    from gzpipe.boost import BoostConfig, run_boost
    from gzpipe.features import FeaturesConfig, run_features
    from gzpipe.train.config import resolve
    from gzpipe.train.run import run_train

    out = tmp_path_factory.mktemp("timm_art")
    run_train(resolve(f"timm:{ARCH}", str(train_shards), None, out=str(out), image_size=32, batch_size=8, epochs=1,
                      workers=0, device="cpu", warmup_epochs=1, backend="pil"))
    run_features(FeaturesConfig(backbone=f"timm:{ARCH}", out=str(out), workers=0, device="cpu", backend="pil"))
    run_boost(BoostConfig(engine="xgboost", backbone=f"timm:{ARCH}", out=str(out), rounds=3, device="cpu"))
    return out


def test_a_timm_backbone_runs_through_every_stage(timm_run, tmp_path, synth_release, capsys):
    from gzpipe.features import read_features

    d = timm_run / f"timm:{ARCH}"
    assert (d / "training_complete.txt").exists()
    _, x, _, _ = read_features(timm_run, f"timm:{ARCH}", "test")
    assert x.shape[1] == 512
    assert (timm_run / f"xgboost_timm:{ARCH}" / "boost_complete.txt").exists()
    out = _run(["ensemble", "--method", "equal", "--out", timm_run], capsys)
    assert f"ensemble_equal of timm:{ARCH}" in out  # found among the finished runs, not only in the registry
    p = tmp_path / "p.csv"
    _run(["predict", str(synth_release / "images"), "--model", d, "--out", p, "--device", "cpu", "--workers", "0"],
         capsys)
    assert len(pd.read_csv(p)) == 48


def test_the_stages_downstream_run_from_inside_the_artifacts_folder(timm_run, tmp_path, monkeypatch, capsys):
    """`--out .` leaves a timm run folder as the relative path `timm:NAME/...`, which pyarrow and fsspec took for a
    URI ("Unrecognized filesystem type in URI: timm:..."): boost, ensemble and report read it as a folder."""
    import shutil

    art = tmp_path / "art"
    shutil.copytree(timm_run, art)
    monkeypatch.chdir(art)
    _run(["boost", "--engine", "lightgbm", "--backbone", f"timm:{ARCH}", "--out", ".", "--rounds", "3",
          "--device", "cpu"], capsys)
    _run(["ensemble", "--method", "stacked", "--out", "."], capsys)
    _run(["report", "--out", "."], capsys)
    table = pd.read_csv(art / "model_comparison" / "comparison_table.csv")
    assert {f"timm:{ARCH}", f"xgboost_timm:{ARCH}", f"lightgbm_timm:{ARCH}", "ensemble_stacked"} <= set(table["name"])
    assert (art / "model_comparison" / "predicted_vs_true.png").exists()


# ---- 2. safetensors and Hugging Face folders in ---------------------------------------------------------------

def _timm_state(seed: int = 0, arch: str = ARCH) -> dict:
    torch.manual_seed(seed)
    return timm.create_model(arch, pretrained=False).state_dict()  # with its 1000-class classifier, as published


# ---- 3. safetensors out: gzpipe export -------------------------------------------------------------------------

# (weights in and exports out: tests/test_field_artefacts.py, made and read with timm's and Zoobot's own code)


# ---- 4. galaxy-datasets' catalogues as they ship -----------------------------------------------------------------

def _zoobot_rows(synth_release, n=40) -> tuple[pd.DataFrame, list[Path]]:
    hart = pd.read_csv(synth_release / "gz2_hart16.csv", dtype={"dr7objid": str}).iloc[:n]
    mapping = pd.read_csv(synth_release / "gz2_filename_mapping.csv", dtype=str).iloc[:n]
    rows = {"id_str": mapping["asset_id"].tolist()}
    for task in schema.TASKS:  # each question's votes, as galaxy-datasets counts them (0 where nobody reached it)
        votes = hart[[f"{c}_count" for c in task.columns]].sum(axis=1).to_numpy()
        for target in task.columns:
            q, a = schema.ZOOBOT_GZ2[target]
            rows[f"{q}_{a}_fraction"] = hart[f"{target}_fraction"].to_numpy()
            rows[f"{q}_total-votes"] = votes
    files = [(synth_release / "images" / f"{a}.jpg").resolve() for a in mapping["asset_id"]]
    return pd.DataFrame(rows), files


def test_a_catalogue_with_absolute_file_locs_needs_no_images_folder(synth_release, tmp_path, capsys):
    df, files = _zoobot_rows(synth_release)
    df["file_loc"] = [str(f) for f in files]
    df.to_csv(tmp_path / "zoo_abs.csv", index=False)
    out = _run(["shard", "--catalog", tmp_path / "zoo_abs.csv", "--out", tmp_path / "s"], capsys)
    assert "40 written, 0 rejected of 40 inputs" in out
    assert json.loads((tmp_path / "s/manifest.json").read_text())["target"]["kind"] == "fraction"


def test_a_parquet_that_carries_its_images_shards_without_any_folder(synth_release, tmp_path):
    from gzpipe.loaders import create_loader
    from gzpipe.shard import ShardConfig, run_shard

    df, files = _zoobot_rows(synth_release)
    images = [{"bytes": f.read_bytes(), "path": f.name} for f in files]  # Hugging Face's Image feature
    images[3] = {"bytes": b"", "path": "empty.jpg"}
    df["image"] = images
    df.to_parquet(tmp_path / "train.parquet", index=False)
    m = run_shard(ShardConfig(catalog=tmp_path / "train.parquet", images=None, out=tmp_path / "s", shard_size=8,
                              val=0.2, test=0.2))
    assert m["counts"]["written"] == 39 and [r["reason"] for r in m["rejected"]] == ["no image bytes in column image"]
    ids = {gid for split in ("train", "val", "test")
           for b in create_loader(tmp_path / "s", split, "pil", image_size=32, batch_size=8, device="cpu", workers=0)
           for gid in b.ids}
    assert ids == set(df["id_str"]) - {df["id_str"][3]}


# ---- 5. PNG inputs -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def png_release(synth_release, tmp_path_factory) -> Path:
    """The synthetic galaxies as PNG files named <asset_id>.png beside a Hart16-style catalogue with asset_id."""
    root = tmp_path_factory.mktemp("png")
    (root / "img").mkdir()
    hart = pd.read_csv(synth_release / "gz2_hart16.csv", dtype={"dr7objid": str})
    mapping = pd.read_csv(synth_release / "gz2_filename_mapping.csv", dtype=str)
    for a in mapping["asset_id"]:
        Image.open(synth_release / "images" / f"{a}.jpg").save(root / "img" / f"{a}.png")
    hart.insert(0, "asset_id", mapping["asset_id"])
    hart.drop(columns=["dr7objid"]).to_csv(root / "cat.csv", index=False)
    return root


def test_a_folder_of_pngs_shards_and_every_backend_reads_it(png_release, tmp_path):
    from gzpipe.loaders import create_loader
    from gzpipe.shard import ShardConfig, run_shard

    m = run_shard(ShardConfig(catalog=png_release / "cat.csv", images=png_release / "img", out=tmp_path / "s",
                              shard_size=8, val=0.2, test=0.2))
    assert m["counts"]["written"] == 48 and m["counts"]["converted"] == 48
    assert "PNG re-encoded as a JPEG at quality 90" in m["converted"][0]["reason"]
    for backend in ("pil", "dali"):
        if backend == "dali":
            pytest.importorskip("nvidia.dali")
        n = sum(len(b) for b in create_loader(tmp_path / "s", "val", backend, image_size=32, batch_size=4,
                                               device="cpu", workers=1))
        assert n == m["counts"]["per_split"]["val"], backend


def test_a_missing_image_names_what_was_looked_for(png_release, tmp_path):
    from gzpipe.shard import ShardConfig, run_shard

    cat = pd.read_csv(png_release / "cat.csv", dtype={"asset_id": str})
    cat.loc[0, "asset_id"] = "999999"
    cat.to_csv(tmp_path / "cat.csv", index=False)
    m = run_shard(ShardConfig(catalog=tmp_path / "cat.csv", images=png_release / "img", out=tmp_path / "s",
                              shard_size=8, val=0.2, test=0.2))
    reason = next(r["reason"] for r in m["rejected"] if r["id"] == "999999")
    assert "image file not found" in reason and "999999.jpg" in reason and "999999.png" in reason, reason


# ---- 6. predict reads what shard reads ---------------------------------------------------------------------------

def test_predict_joins_asset_ids_to_image_files_and_writes_kaggles_layout(png_release, timm_run, tmp_path, capsys):
    p = tmp_path / "p.csv"
    _run(["predict", png_release / "cat.csv", "--images", png_release / "img", "--model", timm_run / f"timm:{ARCH}",
          "--out", p, "--device", "cpu", "--workers", "0", "--cumulative"], capsys)
    df = pd.read_csv(p, dtype={"id": str, "error": str}, keep_default_na=False)
    assert len(df) == 48 and (df["error"] == "").all()
    assert df["path"].str.endswith(".png").all()  # the <id>.jpg the catalogue names, found as <id>.png
    kaggle = [c for c in df.columns if c.startswith("Class")]
    assert kaggle == list(schema.KAGGLE_COLUMNS) and len(kaggle) == 37
    assert (df[[c for c in kaggle if c.startswith("Class8.")]] == "").all().all()  # task 8 is not a GZ2 target
    assert pd.to_numeric(df["Class1.1"]).between(0, 1).all()
    help_text = _run(["predict", "--help"], capsys)
    assert "Class8.x" in " ".join(help_text.split())


# ---- 7. the real release in two commands -------------------------------------------------------------------------

def test_the_full_preset_reads_the_release_where_download_writes_it(tmp_path, monkeypatch):
    from gzpipe.study import resolve_study

    monkeypatch.chdir(tmp_path)
    with pytest.raises(GzpipeError, match=r"data/gz2/gz2_hart16.csv.gz not found: the full preset reads the release "
                                          r"where `gzpipe download` writes it .*gzpipe download --dest data/gz2"):
        resolve_study("full", None)
    (tmp_path / "data/gz2/images").mkdir(parents=True)
    for f in ("gz2_hart16.csv.gz", "gz2_filename_mapping.csv"):
        (tmp_path / "data/gz2" / f).write_bytes(b"")
    cfg = resolve_study("full", None)
    assert (cfg.data.catalog, cfg.data.mapping, cfg.data.images) == (
        "data/gz2/gz2_hart16.csv.gz", "data/gz2/gz2_filename_mapping.csv", "data/gz2/images")
