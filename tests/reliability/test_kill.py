"""SIGKILL at random points of each stage's work (the whole process group, as a scheduler kills a job): after
every kill no file under a final name is half-written; re-running the same command completes, and its outputs
equal an uninterrupted run's (byte for byte where the stage is deterministic; metrics to 1e-6 for training)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from chaos import (assert_no_half_written_files, digests, gzpipe, kill_at_random_points, run_ok, shard_cmd,
                   temporaries, timed_run, train_cmd)


def _metrics_equal(a: dict, b: dict, tol: float = 1e-6) -> None:
    for split in ("val", "test"):
        for k in ("mae", "mse", "accuracy"):
            assert a[split][k] == pytest.approx(b[split][k], abs=tol), (split, k)


def test_shard_killed_anywhere_resumes_byte_identical(chaos_release, tmp_path):
    out = tmp_path / "shards"
    cmd = shard_cmd(chaos_release, out, "--resize", "64", "--workers", "2")
    timing = timed_run(cmd)
    ref = digests(out)
    assert "manifest.json" in ref and len([k for k in ref if k.endswith(".tar")]) >= 18
    shutil.rmtree(out)
    log = kill_at_random_points(cmd, timing, kills=4, fresh=lambda: shutil.rmtree(out),
                                after_each=lambda: assert_no_half_written_files(out))
    assert log.kills, "no kill landed inside the work"
    run_ok(cmd)
    assert digests(out) == ref  # tars, indexes, labels.parquet and manifest.json, byte for byte
    assert not temporaries(out)


def test_train_killed_anywhere_resumes_to_the_same_metrics(train_shards, tmp_path):
    ref_out, out = tmp_path / "ref", tmp_path / "run"
    timing = timed_run(train_cmd(train_shards, ref_out))
    ref = json.loads((ref_out / "resnet50/metrics.json").read_text())
    log = kill_at_random_points(train_cmd(train_shards, out), timing, kills=3, fresh=lambda: shutil.rmtree(out),
                                after_each=lambda: assert_no_half_written_files(out))
    assert log.kills
    run_ok(train_cmd(train_shards, out))
    got = json.loads((out / "resnet50/metrics.json").read_text())
    _metrics_equal(ref, got)
    assert [h["train_loss"] for h in got["history"]] == pytest.approx([h["train_loss"] for h in ref["history"]], abs=1e-6)
    for split in ("val", "test"):
        a = pd.read_parquet(ref_out / f"resnet50/{split}_predictions.parquet")
        b = pd.read_parquet(out / f"resnet50/{split}_predictions.parquet")
        pd.testing.assert_frame_equal(a, b, atol=1e-6, rtol=0)
    assert not temporaries(out)


@pytest.fixture(scope="module")
def trained(train_shards, tmp_path_factory) -> Path:
    """A finished resnet50 run (32 px, 1 epoch) to extract features from."""
    out = tmp_path_factory.mktemp("trained")
    run_ok(gzpipe("train", "--backbone", "resnet50", "--shards", train_shards, "--out", out, "--epochs", "1",
                  "--image-size", "32", "--batch-size", "4", "--workers", "1", "--device", "cpu", "--backend", "pil"))
    yield out
    shutil.rmtree(out, ignore_errors=True)  # a resnet50 run is ~400 MB of checkpoints


def _features_cmd(out: Path) -> list[str]:
    return gzpipe("features", "--backbone", "resnet50", "--out", out, "--batch-size", "2", "--workers", "1",
                  "--backend", "pil", "--device", "cpu")


def test_features_killed_anywhere_resume_identical(trained, tmp_path):
    ref_out, out = tmp_path / "ref", tmp_path / "run"
    shutil.copytree(trained, ref_out)
    shutil.copytree(trained, out)
    timing = timed_run(_features_cmd(ref_out))
    ref = digests(ref_out / "resnet50/features")
    assert {"train.parquet", "val.parquet", "test.parquet", "meta.json"} <= set(ref)
    log = kill_at_random_points(_features_cmd(out), timing, kills=3,
                                after_each=lambda: assert_no_half_written_files(out))
    assert log.kills
    run_ok(_features_cmd(out))
    assert digests(out / "resnet50/features") == ref
    assert not temporaries(out)


# xgboost ~75 s: in `make test-slow` (CI runs it after the default run when time allows); lightgbm stays default
@pytest.mark.parametrize("engine", [pytest.param("xgboost", marks=pytest.mark.slow), "lightgbm"])
def test_boost_killed_anywhere_resumes_to_the_same_model(trained, tmp_path, engine):
    run_ok(_features_cmd(trained))
    ref_out, out = tmp_path / "ref", tmp_path / "run"
    shutil.copytree(trained, ref_out)
    shutil.copytree(trained, out)

    def cmd(o: Path) -> list[str]:
        return gzpipe("boost", "--engine", engine, "--backbone", "resnet50", "--out", o, "--rounds", "150",
                      "--early-stopping", "150", "--device", "cpu")

    run_dir = f"{engine}_resnet50"
    timing = timed_run(cmd(ref_out))
    log = kill_at_random_points(cmd(out), timing, kills=3,
                                after_each=lambda: assert_no_half_written_files(out))
    assert log.kills
    run_ok(cmd(out))
    same = lambda p: p.name in ("metrics.json", "config.json")  # noqa: E731 - hold timings and the out path
    assert digests(out / run_dir, skip=same) == digests(ref_out / run_dir, skip=same)
    _metrics_equal(json.loads((ref_out / run_dir / "metrics.json").read_text()),
                   json.loads((out / run_dir / "metrics.json").read_text()), tol=0)
    assert not temporaries(out)
