"""SIGINT (Ctrl-C) and SIGTERM (a scheduler's or `timeout`'s stop) to the whole process group at random points:
each stage exits with 130 / 143, says how to resume in one message without a traceback, leaves no temporary file
and no half-written one (training saves a checkpoint first), and the same command then finishes with the outputs
of an uninterrupted run."""

from __future__ import annotations

import json
import shutil
import signal

import pytest

from chaos import (assert_no_half_written_files, digests, gzpipe, kill_at_random_points, run_ok, shard_cmd,
                   temporaries, timed_run, train_cmd)

SIGNALS = {"SIGINT": (signal.SIGINT, 130), "SIGTERM": (signal.SIGTERM, 143)}
# Both signals take the same path (an exception in the main thread); SIGINT's runs go to `make test-slow`.
BOTH = [pytest.param("SIGINT", marks=pytest.mark.slow), "SIGTERM"]


def _check_stops(log, code: int) -> None:
    stopped = [(rc, err) for rc, err in zip(log.returncodes, log.stderr) if rc != 0]
    assert stopped, "the signal never landed before the command finished"
    for rc, err in stopped:
        assert rc == code, err[-2000:]
        assert "Traceback" not in err, err[-2000:]
        assert "re-run the same command to resume" in err.strip().splitlines()[-1], err[-2000:]


@pytest.mark.parametrize("name", [
    pytest.param("SIGINT", marks=[pytest.mark.slow, pytest.mark.xfail(
        strict=False, reason="known rare flake: exit status -2 after the interrupted message (tests/reliability/README.md)")]),
    "SIGTERM"])
def test_shard_stops_cleanly(chaos_release, tmp_path, name):
    sig, code = SIGNALS[name]
    out = tmp_path / "shards"
    cmd = shard_cmd(chaos_release, out, "--resize", "64", "--workers", "2")
    timing = timed_run(cmd)
    ref = digests(out)
    shutil.rmtree(out)
    log = kill_at_random_points(cmd, timing, kills=3, sig=sig, salt=name,
                                after_each=lambda: (assert_no_half_written_files(out), _no_temporaries(out)))
    _check_stops(log, code)
    run_ok(cmd)
    assert digests(out) == ref


def _no_temporaries(root) -> None:
    assert not temporaries(root), temporaries(root)


@pytest.mark.parametrize("name", BOTH)
def test_train_checkpoints_and_stops_cleanly(train_shards, tmp_path, name):
    sig, code = SIGNALS[name]
    ref_out, out = tmp_path / "ref", tmp_path / "run"
    timing = timed_run(train_cmd(train_shards, ref_out))
    log = kill_at_random_points(train_cmd(train_shards, out), timing,
                                kills=2, sig=sig, salt=name,
                                after_each=lambda: (assert_no_half_written_files(out), _no_temporaries(out)))
    _check_stops(log, code)
    # Stopped inside the training loop: a checkpoint is saved first (test_train.py also stops it there on purpose);
    # stopped while the model and loaders are built: nothing to save yet.
    for rc, e in zip(log.returncodes, log.stderr):
        if rc == code:
            assert "checkpoint saved in" in e or e.startswith("interrupted by"), e
    run_ok(train_cmd(train_shards, out))
    a = json.loads((ref_out / "resnet50/metrics.json").read_text())
    b = json.loads((out / "resnet50/metrics.json").read_text())
    for split in ("val", "test"):
        assert a[split]["mae"] == pytest.approx(b[split]["mae"], abs=1e-6)


@pytest.mark.parametrize("name", BOTH)
def test_features_and_boost_stop_cleanly(train_shards, tmp_path, name):
    sig, code = SIGNALS[name]
    out = tmp_path / "a"
    run_ok(gzpipe("train", "--backbone", "resnet50", "--shards", train_shards, "--out", out, "--epochs", "1",
                  "--image-size", "32", "--batch-size", "4", "--workers", "1", "--device", "cpu", "--backend", "pil"))
    ref = tmp_path / "ref"
    shutil.copytree(out, ref)
    feats = lambda o: gzpipe("features", "--backbone", "resnet50", "--out", o, "--batch-size", "2",  # noqa: E731
                             "--workers", "1", "--backend", "pil", "--device", "cpu")
    _stop_resume_compare(feats, ref, out, "resnet50/features", sig, code, name)
    boost = lambda o: gzpipe("boost", "--engine", "lightgbm", "--backbone", "resnet50", "--out", o,  # noqa: E731
                             "--rounds", "150", "--early-stopping", "150", "--device", "cpu")
    _stop_resume_compare(boost, ref, out, "lightgbm_resnet50", sig, code, name,
                         skip=lambda p: p.name in ("metrics.json", "config.json"))  # timings and the out path


def _stop_resume_compare(cmd_for, ref, out, folder: str, sig, code: int, name: str, skip=lambda p: False) -> None:
    """Run ``cmd_for(ref)`` whole, stop ``cmd_for(out)`` twice with ``sig``, finish it, and compare ``folder``."""
    timing = timed_run(cmd_for(ref))
    log = kill_at_random_points(cmd_for(out), timing, kills=2, sig=sig, salt=name,
                                after_each=lambda: (assert_no_half_written_files(out), _no_temporaries(out)))
    _check_stops(log, code)
    run_ok(cmd_for(out))
    assert digests(out / folder, skip) == digests(ref / folder, skip)
