"""What a new user hit following the README (issue 17), one test per item; each failed before its fix."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from gzpipe.errors import GzpipeError

ENV = {**os.environ, "GZPIPE_PROGRESS": "0"}
FAST = ["--image-size", "32", "--batch-size", "8", "--workers", "0", "--device", "cpu", "--backend", "pil",
        "--warmup-epochs", "1"]


def gz(*args, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gzpipe", *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=timeout)


# 1. stale models ---------------------------------------------------------------------------------------------------

@pytest.mark.slow  # ~90 s: trains a backbone twice, with boosters and an ensemble between
def test_a_retrained_backbone_makes_its_boosters_and_ensembles_stale(train_shards, tmp_path):
    art = tmp_path / "art"
    assert gz("train", "--backbone", "resnet50", "--shards", train_shards, "--out", art, "--epochs", "1",
              *FAST).returncode == 0
    assert gz("features", "--backbone", "resnet50", "--out", art, "--workers", "0").returncode == 0
    assert gz("boost", "--engine", "xgboost", "--backbone", "resnet50", "--out", art, "--rounds", "5").returncode == 0
    assert gz("ensemble", "--method", "equal", "--out", art).returncode == 0
    # retrain with another seed: other weights, other features
    r = gz("train", "--backbone", "resnet50", "--shards", train_shards, "--out", art, "--epochs", "1", "--seed", "7",
           "--restart", *FAST)
    assert r.returncode == 0, r.stderr
    r = gz("boost", "--engine", "xgboost", "--backbone", "resnet50", "--out", art, "--rounds", "5")
    assert r.returncode == 2 and "xgboost_resnet50 is out of date" in r.stderr and "checkpoint" in r.stderr
    assert "--force` retrains it" in r.stderr and r.stderr.strip().count("\n") == 0
    img = _an_image(tmp_path)
    r = gz("predict", "--model", art / "xgboost_resnet50", img, "--out", tmp_path / "p.csv", "--workers", "0")
    assert r.returncode == 2 and "xgboost_resnet50 is out of date" in r.stderr
    r = gz("report", "--out", art)
    assert r.returncode == 0 and "report leaves out xgboost_resnet50" in r.stderr
    assert "report leaves out ensemble_equal" in r.stderr
    table = pd.read_csv(art / "model_comparison/comparison_table.csv")
    assert list(table["name"]) == ["resnet50"]
    assert "Left out, out of date" in (art / "model_comparison/report.html").read_text()
    assert gz("features", "--backbone", "resnet50", "--out", art, "--workers", "0").returncode == 0  # re-extracts
    r = gz("boost", "--engine", "xgboost", "--backbone", "resnet50", "--out", art, "--rounds", "5")
    assert r.returncode == 2 and "features" in r.stderr  # still out of date until retrained
    r = gz("boost", "--engine", "xgboost", "--backbone", "resnet50", "--out", art, "--rounds", "5", "--force")
    assert r.returncode == 0, r.stderr
    r = gz("predict", "--model", art / "xgboost_resnet50", img, "--out", tmp_path / "p.csv", "--workers", "0")
    assert r.returncode == 0, r.stderr


def _an_image(tmp_path: Path) -> Path:
    p = tmp_path / "g.png"
    Image.new("RGB", (64, 64), (30, 30, 30)).save(p)
    return p


# 2. tracebacks from `ensemble` -----------------------------------------------------------------------------------

def test_ensemble_names_untrained_misspelt_and_spaced_backbones(tmp_path):
    from gzpipe.ensemble import EnsembleConfig, run_ensemble

    art = tmp_path / "art"
    (art / "resnet50").mkdir(parents=True)
    (art / "resnet50/training_complete.txt").write_text("done\n")
    (art / "resnet50/config.json").write_text("{}")
    with pytest.raises(GzpipeError, match=r"convnext_base is not trained in .*gzpipe train --backbone convnext_base"):
        run_ensemble(EnsembleConfig("equal", str(art), "resnet50,convnext_base"))
    with pytest.raises(GzpipeError, match=r"unknown backbone 'resnet5'; choose one of resnet50"):
        run_ensemble(EnsembleConfig("equal", str(art), "resnet5"))
    with pytest.raises(GzpipeError, match=r"regnety_8gf is not trained"):  # the space is stripped, the name found
        run_ensemble(EnsembleConfig("equal", str(art), "resnet50, regnety_8gf"))
    r = gz("ensemble", "--method", "equal", "--out", art, "--backbones", "resnet50, convnext_base")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "convnext_base is not trained" in r.stderr


# 3. empty or mostly rejected output ------------------------------------------------------------------------------

def test_shard_with_nothing_or_mostly_rejected_is_an_error(synth_release, tmp_path):
    base = ["shard", "--catalog", synth_release / "gz2_hart16.csv", "--mapping",
            synth_release / "gz2_filename_mapping.csv"]
    (tmp_path / "wrong").mkdir()
    r = gz(*base, "--images", tmp_path / "wrong", "--out", tmp_path / "s1")
    assert r.returncode == 2 and "no galaxy was written" in r.stderr and "missing_image 48" in r.stderr
    assert "is --images" in r.stderr and (tmp_path / "s1/manifest.json").exists()
    r = gz("verify", tmp_path / "s1")
    assert r.returncode == 0 and "hold no samples" in r.stdout
    cat = pd.read_csv(synth_release / "gz2_hart16.csv", dtype={"dr7objid": str})
    cols = [c for c in cat.columns if c.endswith("_debiased")]
    cat.loc[::2, cols] = cat.loc[::2, cols] * 100  # half the rows in percent
    cat.to_csv(tmp_path / "percent.csv", index=False)
    r = gz("shard", "--catalog", tmp_path / "percent.csv", "--mapping", synth_release / "gz2_filename_mapping.csv",
           "--images", synth_release / "images", "--out", tmp_path / "s2")
    assert r.returncode == 2 and "rejected (more than --max-rejected 0.1)" in r.stderr and "in percent" in r.stderr
    r = gz("shard", "--catalog", tmp_path / "percent.csv", "--mapping", synth_release / "gz2_filename_mapping.csv",
           "--images", synth_release / "images", "--out", tmp_path / "s2", "--max-rejected", "1")
    # the failed run's shards are reused: only the check differs
    assert r.returncode == 0 and "24 stored, 24 rejected" in r.stdout and "3 of 3 shards reused" in r.stdout


# 4. study's flags ------------------------------------------------------------------------------------------------

def test_study_has_the_flags_its_messages_name(train_shards, tmp_path, capsys):
    from gzpipe.train.config import resolve
    from gzpipe.train.run import run_train

    r = gz("study", "--help")
    assert "--restart" in r.stdout and "--force STAGES" in r.stdout
    kw = dict(out=str(tmp_path), epochs=1, batch_size=8, workers=0, device="cpu", backend="pil", warmup_epochs=1)
    run_train(resolve("resnet50", str(train_shards), None, image_size=32, **kw))
    capsys.readouterr()
    run_train(resolve("resnet50", str(train_shards), None, image_size=40, **kw),
              restart_hint="`gzpipe study --force train`")  # what the study passes
    out = capsys.readouterr().out
    assert "image_size 32 -> 40" in out and "kept and skipped: `gzpipe study --force train` replaces it" in out
    assert "--restart" not in out


# 6. predict: ids, paths, duplicates, one reduction for every format, skipped files -------------------------------

def test_one_reduction_whatever_the_file_format():
    from gzpipe.loaders.pil import decode_augment
    from gzpipe.loaders.presets import draw_affine

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:424, 0:424]
    img = (120 * np.exp(-((xx - 212) ** 2 + (yy - 200) ** 2) / 4000)[..., None] * np.array([1.0, 0.9, 0.7])
           + rng.normal(0, 2, (424, 424, 1))).clip(0, 255).astype(np.uint8)
    png, jpg = io.BytesIO(), io.BytesIO()
    Image.fromarray(img).save(png, format="PNG")
    Image.fromarray(img).save(jpg, format="JPEG", quality=100)
    a = draw_affine(None, False)
    p = decode_augment(png.getvalue(), a, 32).astype(float)
    j = decode_augment(jpg.getvalue(), a, 32).astype(float)
    full = decode_augment(png.getvalue(), a, 32, draft=False).astype(float)  # what a PNG got before the fix
    assert np.abs(p - j).mean() < 0.5 * np.abs(full - j).mean()  # the same pixels, the same reduction


def test_predict_ids_paths_duplicates_and_skipped_files(tmp_path):
    from gzpipe.predict.inputs import collect_inputs

    d1, d2 = tmp_path / "a", tmp_path / "b"
    d1.mkdir()
    d2.mkdir()
    Image.new("RGB", (40, 40)).save(d1 / "101654.jpg")
    Image.new("RGB", (40, 40)).save(d1 / "101654.png")
    Image.new("RGB", (40, 40)).save(d2 / "101654.jpg")
    (d1 / "notes.txt").write_text("not an image")
    found = collect_inputs([d1, d2, d1 / "101654.jpg"])
    assert [i.id for i in found.items] == ["101654"] * 3
    assert len({i.path for i in found.items}) == 3 and found.duplicates == 1
    assert len(found.skipped) == 1 and "notes.txt" in found.skipped[0]


# 7. output paths checked before any work -------------------------------------------------------------------------

def test_predict_out_is_checked_first(tmp_path):
    (tmp_path / "folder").mkdir()
    r = gz("predict", "--model", tmp_path / "no-model", tmp_path, "--out", tmp_path / "folder")
    assert r.returncode == 2 and "--out" in r.stderr and "is a folder" in r.stderr
    r = gz("predict", "--model", tmp_path, tmp_path, "--out", tmp_path / "p.txt")
    assert r.returncode == 2 and "ending in .csv or .parquet" in r.stderr


# 9. delimiters ---------------------------------------------------------------------------------------------------

def test_a_tab_separated_catalogue_is_read(synth_release, tmp_path):
    from gzpipe.shard import ShardConfig, run_shard

    pd.read_csv(synth_release / "gz2_hart16.csv", dtype={"dr7objid": str}).to_csv(tmp_path / "cat.tsv", sep="\t",
                                                                                   index=False)
    m = run_shard(ShardConfig(catalog=tmp_path / "cat.tsv", mapping=synth_release / "gz2_filename_mapping.csv",
                              images=synth_release / "images", out=tmp_path / "s", shard_size=20))
    assert m["counts"]["written"] == 48
    (tmp_path / "junk.csv").write_text("x" * 9000 + "\n1\n")
    with pytest.raises(GzpipeError) as e:
        run_shard(ShardConfig(catalog=tmp_path / "junk.csv", images=synth_release / "images", out=tmp_path / "j"))
    assert len(str(e.value)) < 400


# 10. --help at 80 columns ----------------------------------------------------------------------------------------

COMMANDS = [[], ["info"], ["synth"], ["download"], ["shard"], ["verify"], ["train"], ["features"], ["boost"],
            ["ensemble"], ["report"], ["predict"], ["study"], ["demo"], ["bench"], ["bench", "loader"],
            ["bench", "train"]]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "gzpipe")
def test_help_is_readable_at_80_columns(cmd):
    r = subprocess.run([sys.executable, "-m", "gzpipe", *cmd, "--help"], capture_output=True, text=True,
                       env={**ENV, "COLUMNS": "80"}, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert all(len(ln) <= 80 for ln in lines), [ln for ln in lines if len(ln) > 80]
    assert "…" not in r.stdout and "<str>" not in r.stdout and not re.search(r"\w \.(\s|$)", r.stdout)
    if cmd == ["shard"]:
        assert "<debiased|weighted_fraction|fraction>" in r.stdout
    if cmd == ["train"]:
        assert "--checkpoint-minutes" in r.stdout and "<auto|dali|nvjpeg|pil>" in r.stdout


# 11. smaller -----------------------------------------------------------------------------------------------------

def test_option_value_errors_have_no_internal_prefix(tmp_path):
    r = gz("shard", "--catalog", tmp_path / "c.csv", "--images", tmp_path, "--out", tmp_path / "o", "--target",
           "debaised")
    assert r.returncode == 2 and "Value error" not in r.stderr and "'debaised' is not one of" in r.stderr


def test_python_api_errors_do_not_speak_in_flags():
    import torch

    from gzpipe.loaders import resolve_backend

    with pytest.raises(GzpipeError) as e:
        resolve_backend("nvjpeg", torch.device("cpu"))
    assert "--" not in str(e.value)
    from gzpipe.train.config import TrainConfig, validate

    with pytest.raises(GzpipeError, match="^epochs must be at least 1") as e:
        validate(TrainConfig("resnet50", "x", epochs=0), check_paths=False)


def test_verify_a_missing_folder_says_not_found(tmp_path):
    r = gz("verify", tmp_path / "nope")
    assert r.returncode == 2 and "shard folder not found" in r.stderr


def test_synth_into_a_larger_earlier_synth_removes_the_extra_images(tmp_path):
    assert gz("synth", tmp_path / "s", "--n", "12").returncode == 0
    assert gz("synth", tmp_path / "s", "--n", "5").returncode == 0
    assert len(list((tmp_path / "s/images").glob("*.jpg"))) == 5
    assert len(pd.read_csv(tmp_path / "s/gz2_hart16.csv")) == 5


def test_a_warmup_longer_than_the_run_is_said(train_shards, tmp_path):
    r = gz("train", "--backbone", "resnet50", "--shards", train_shards, "--out", tmp_path, "--epochs", "1",
           *FAST[:-2], "--warmup-epochs", "3", "--stop-after", "1")
    assert "warm-up (3 epochs) is longer than the run (1 epoch)" in r.stderr and "33%" in r.stderr


def test_one_epoch_curves_show_both_losses_on_a_sensible_axis(tmp_path):
    from gzpipe.train.plots import curves_figure

    fig = curves_figure([{"epoch": 1, "train_loss": 0.2, "val_loss": 0.15, "val_mae": 0.3, "lr": 1e-3}], 1, "t")
    ax = fig.axes[0]
    labels = [ln.get_label() for ln in ax.get_lines()]
    assert "train" in labels and "validation" in labels
    lo, hi = ax.get_xlim()
    assert lo <= 0.5 and hi >= 1.5  # not 0.96-1.04
    ylo, yhi = ax.get_ylim()
    assert ylo <= 0.15 and yhi >= 0.2
