"""`predict` at survey scale: parts written as they finish (a killed run re-does only the rest), Parquet or CSV,
memory that does not grow with the inputs, and torchrun ranks sharing the parts."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gzpipe import schema

ENV = {**os.environ, "GZPIPE_PROGRESS": "0", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def model(train_shards, tmp_path_factory):
    from gzpipe.train.config import resolve
    from gzpipe.train.run import run_train

    out = tmp_path_factory.mktemp("scale_art")
    run_train(resolve("resnet50", str(train_shards), None, out=str(out), image_size=32, batch_size=8, epochs=1,
                      workers=0, device="cpu", warmup_epochs=1, backend="pil"))
    yield out / "resnet50"
    shutil.rmtree(out, ignore_errors=True)  # a resnet50 run is ~400 MB of checkpoints


@pytest.fixture(scope="module")
def images(synth_release, tmp_path_factory):
    d = tmp_path_factory.mktemp("many")
    for i, f in enumerate(sorted((synth_release / "images").glob("*.jpg")) * 2):  # 96 files
        os.link(f, d / f"g{i:03d}.jpg")
    return d


def _predict(model, inputs, out, *extra):
    return [sys.executable, "-m", "gzpipe", "predict", "--model", str(model), *map(str, inputs), "--out", str(out),
            "--workers", "0", "--batch-size", "8", *map(str, extra)]


def _frame(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, keep_default_na=False)


def test_a_killed_predict_redoes_only_unfinished_parts(model, images, tmp_path):
    ref = tmp_path / "ref.parquet"
    r = subprocess.run(_predict(model, [images], ref, "--part-size", 8), env=ENV, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "p.parquet"
    parts = tmp_path / "p.parquet.parts"
    p = subprocess.Popen(_predict(model, [images], out, "--part-size", 8), env=ENV, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(list(parts.glob("part-*.parquet"))) < 3 and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    done = len(list(parts.glob("part-*.parquet")))
    assert 3 <= done < 12 and not out.exists()
    r = subprocess.run(_predict(model, [images], out, "--part-size", 8), env=ENV, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"{done} of 12 parts already done" in r.stdout
    a, b = _frame(ref), _frame(out)
    assert list(a["id"]) == list(b["id"]) == [f"g{i:03d}" for i in range(96)]  # input order, every file once
    np.testing.assert_allclose(a[list(schema.TARGET_NAMES)].to_numpy(), b[list(schema.TARGET_NAMES)].to_numpy(),
                               atol=1e-6)
    assert not parts.exists()  # merged, then cleaned up


def test_output_format_follows_the_suffix_and_the_size(model, images, tmp_path):
    r = subprocess.run(_predict(model, [images / "g000.jpg", images / "g001.jpg"], tmp_path / "small.csv"),
                       env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and list(pd.read_csv(tmp_path / "small.csv").columns[:3]) == ["id", "path", "error"]
    from gzpipe.predict import CSV_MAX_ROWS

    assert CSV_MAX_ROWS == 5000  # beyond it the default --out is predictions.parquet (README)


def test_two_torchrun_ranks_match_one_process(model, images, train_shards, tmp_path):
    one = tmp_path / "one.parquet"
    r = subprocess.run(_predict(model, [images, train_shards], one, "--part-size", 16), env=ENV, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    two = tmp_path / "two.parquet"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533", "-m",
           "gzpipe", "predict", "--model", str(model), str(images), str(train_shards), "--out", str(two),
           "--workers", "0", "--batch-size", "8", "--part-size", "16"]
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = _frame(one), _frame(two)
    assert len(a) == 96 + 48 and list(a["id"]) == list(b["id"]) and list(a["path"]) == list(b["path"])
    np.testing.assert_allclose(a[list(schema.TARGET_NAMES)].to_numpy(), b[list(schema.TARGET_NAMES)].to_numpy(),
                               atol=1e-6)
    assert r.stdout.count("predicted ") == 1  # one summary, from rank 0
