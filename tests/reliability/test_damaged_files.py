"""Files damaged after they were written: a shard truncated, a shard with a changed byte (same size), a damaged
index, a missing shard, a corrupt latest checkpoint. Each is named by `gzpipe verify` and by the loader, and the
same command that wrote it rebuilds just the damaged files."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys

import pytest

from chaos import ENV, digests, gzpipe, run_ok, shard_cmd, train_cmd
from gzpipe.errors import GzpipeError
from gzpipe.loaders import create_loader


def _flip_byte_inside_a_jpeg(tar) -> None:
    data = bytearray(tar.read_bytes())
    i = data.index(b"\xff\xd8\xff") + 400  # inside the first JPEG's entropy-coded data
    data[i] ^= 0x55
    tar.write_bytes(bytes(data))


def test_verify_names_damaged_shards_and_their_rebuild_rewrites_only_those(chaos_release, tmp_path):
    out = tmp_path / "shards"
    run_ok(shard_cmd(chaos_release, out, "--resize", "64"))
    good = digests(out)
    good_copy = tmp_path / "good"
    shutil.copytree(out, good_copy)
    assert run_ok(gzpipe("verify", out)).stdout.startswith(f"{sum(k.endswith('.tar') for k in good)} shards OK")

    truncated, flipped, bad_index, missing = out / "train-000001.tar", out / "val-000000.tar", out / "train-000002.idx", out / "test-000001.tar"
    truncated.write_bytes(truncated.read_bytes()[:5000])
    _flip_byte_inside_a_jpeg(flipped)
    bad_index.write_text(bad_index.read_text().replace(" 512 ", " 1024 ", 1))
    missing.unlink()
    untouched = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")
                 if p.name not in (truncated.name, flipped.name, "train-000002.tar")}

    r = subprocess.run(gzpipe("verify", out), capture_output=True, text=True, env=ENV)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    lines = r.stdout.splitlines()
    assert any(truncated.name in ln and "truncated" in ln for ln in lines)
    assert any(flipped.name in ln and "sha256" in ln for ln in lines)
    assert any("train-000002.tar" in ln and "index" in ln for ln in lines)
    assert any(missing.name in ln and "missing" in ln for ln in lines)
    assert "4 of" in r.stdout
    # --quick (no hashing) still finds all but the same-size change
    q = subprocess.run(gzpipe("verify", out, "--quick"), capture_output=True, text=True, env=ENV)
    assert q.returncode == 1 and flipped.name not in q.stdout and truncated.name in q.stdout

    # the loaders name the file too: the truncated one before reading, the changed one as it is read (its sha256 is
    # checked before any of its samples is used)
    with pytest.raises(GzpipeError, match="train-000001.tar is truncated"):
        create_loader(out, "train", "pil", 32, 8, train=False, device="cpu", workers=0)
    for workers in (0, 2):
        loader = create_loader(out, "val", "pil", 32, 8, train=False, device="cpu", workers=workers)
        with pytest.raises(GzpipeError, match="^shard .*val-000000.tar has changed since it was written.*gzpipe verify"):
            for _ in loader:
                pass
    # a changed target value decodes fine: the sha256, checked as the shard is read, catches it
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    shutil.copy(good_copy / "val-000000.tar", copy / "val-000000.tar")
    target = copy / "val-000001.tar"
    entry = (copy / "val-000001.idx").read_text().splitlines()[1].split()
    offset = int(entry[entry.index("targets") + 1])
    data = bytearray(target.read_bytes())
    data[offset + 2] ^= 0x01
    target.write_bytes(bytes(data))
    loader = create_loader(copy, "val", "pil", 32, 8, train=False, device="cpu", workers=2)
    with pytest.raises(GzpipeError, match="^shard .*val-000001.tar has changed since it was written.*gzpipe verify"):
        for _ in loader:
            pass

    # the printed command rebuilds exactly the damaged shards; the others are not rewritten
    rebuild = shlex.split(lines[-1].strip())
    assert rebuild[:2] == ["gzpipe", "shard"]
    run_ok([sys.executable, "-m", "gzpipe", *rebuild[1:]])
    assert digests(out) == good
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar") if p.name in untouched} == untouched
    assert run_ok(gzpipe("verify", out)).returncode == 0


# ~80 s; keeps the default run under CI's 20 minutes (`make test-slow`, which CI runs after it when time
# allows); the default run covers the same path with test_train.py::test_corrupt_latest_checkpoint_falls_back_to_previous
@pytest.mark.slow
def test_corrupt_latest_checkpoint_falls_back_with_a_warning(train_shards, tmp_path):
    ref, out = tmp_path / "ref", tmp_path / "run"
    run_ok(train_cmd(train_shards, ref))
    run_ok(train_cmd(train_shards, out) + ["--stop-after", "2"])
    ckpts = out / "resnet50/checkpoints"
    assert (ckpts / "previous_checkpoint.pth").exists()
    (ckpts / "latest_checkpoint.pth").write_bytes(b"\x00garbage" * 100)
    r = run_ok(train_cmd(train_shards, out))
    warning = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warning) == 1 and "latest_checkpoint.pth is unreadable" in warning[0] and "previous_checkpoint.pth" in warning[0]
    assert "resuming the interrupted run (at epoch 2: 1 of 3 epochs reused)" in r.stdout
    a = json.loads((ref / "resnet50/metrics.json").read_text())
    b = json.loads((out / "resnet50/metrics.json").read_text())
    assert b["test"]["mae"] == pytest.approx(a["test"]["mae"], abs=1e-6)


# ~40 s; keeps the default run under CI's 20 minutes (`make test-slow`, which CI runs after it when time
# allows); the default run covers the same path with the single corrupt checkpoint of test_train.py
@pytest.mark.slow
def test_both_checkpoints_corrupt_starts_over_and_says_so(train_shards, tmp_path):
    out = tmp_path / "run"
    run_ok(train_cmd(train_shards, out) + ["--stop-after", "2"])
    for name in ("latest_checkpoint.pth", "previous_checkpoint.pth"):
        (out / "resnet50/checkpoints" / name).write_bytes(b"PK\x03\x04 not a checkpoint")
    r = run_ok(train_cmd(train_shards, out) + ["--epochs", "1", "--restart"])
    assert "Traceback" not in r.stderr
    shutil.rmtree(out)
