"""One model of a run folder (gzpipe.runs): runs load exactly as they were trained, a finished run's files never
change by re-running a command, and every stage notices when what a run was built from has changed."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from gzpipe import runs
from gzpipe.errors import GzpipeError
from gzpipe.train.config import resolve
from gzpipe.train.run import run_train

FAST = dict(batch_size=8, workers=0, device="cpu", warmup_epochs=1, backend="pil", checkpoint_minutes=0)


@pytest.fixture(scope="module")
def art(train_shards, tmp_path_factory):
    """A finished resnet50 run at 32 px (not the default 224)."""
    out = tmp_path_factory.mktemp("runs_art")
    run_train(resolve("resnet50", str(train_shards), None, out=str(out), image_size=32, epochs=2, **FAST))
    yield out
    shutil.rmtree(out, ignore_errors=True)  # a resnet50 run is ~600 MB of checkpoints


def test_skip_evaluates_as_trained_and_never_changes_a_finished_run(art, train_shards, capsys):
    run = art / "resnet50"
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    # the command line's defaults now say 224 px; --skip must use the run's own 32 px and leave its files alone
    m = run_train(resolve("resnet50", str(train_shards), None, out=str(art), mode="skip", **FAST))
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert after == before
    recorded = json.loads((run / "metrics.json").read_text())
    assert m["test"]["mae"] == recorded["test"]["mae"]
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("resnet50 test:"))
    assert "at 32 px" in line and f"MAE {recorded['test']['mae']:.4f}" in line and "is unchanged" in line


def test_load_trained_returns_the_model_and_its_config(art):
    t = runs.load_trained(art / "resnet50", torch.device("cpu"))
    assert t.image_size == 32 and t.config["head"] == "sigmoid" and t.name == "resnet50"
    f, p = t.features_and_predictions(torch.zeros(2, 3, 32, 32))
    assert f.shape == (2, 2048) and p.shape == (2, 30) and float(p.min()) >= 0 and float(p.max()) <= 1
    assert not t.model.training


def test_model_folders_explain_themselves(art, tmp_path):
    assert runs.model_kind(art / "resnet50") == runs.BACKBONE
    with pytest.raises(GzpipeError, match=r"artifacts folder, not one model.*--model .*resnet50"):
        runs.model_kind(art)
    unfinished = tmp_path / "resnet50"
    (unfinished / "checkpoints").mkdir(parents=True)
    with pytest.raises(GzpipeError, match="unfinished run .*`gzpipe train` command again to finish it"):
        runs.model_kind(unfinished)
    booster = tmp_path / "xgboost_resnet50"  # a booster's config names its engine: the advice names boost
    booster.mkdir()
    (booster / "config.json").write_text('{"engine": "xgboost", "backbone": "resnet50"}')
    with pytest.raises(GzpipeError, match="unfinished run .*`gzpipe boost` command again"):
        runs.model_kind(booster)
    with pytest.raises(GzpipeError, match="not found"):
        runs.model_kind(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GzpipeError, match="not a trained gzpipe model"):
        runs.model_kind(tmp_path / "empty")


def test_one_device_resolver():
    from gzpipe.device import check_device_name, resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("gpu", "cuda:x", "", "CPU"):
        with pytest.raises(GzpipeError, match="must be auto, cpu, cuda or cuda:N"):
            check_device_name(bad)
    if not torch.cuda.is_available():
        with pytest.raises(GzpipeError, match="no CUDA device is usable here; use cpu"):
            resolve_device("cuda:0")


def test_changed_inputs_are_noticed(tmp_path):
    a = tmp_path / "data.bin"
    a.write_bytes(b"one")
    run = tmp_path / "run"
    run.mkdir()
    runs.record_inputs(run, {"data": a})
    assert runs.changed_inputs(run) == []
    a.write_bytes(b"two")
    assert runs.changed_inputs(run) == [f"data ({a}) has changed"]
    a.unlink()
    assert runs.changed_inputs(run) == [f"data ({a}) is gone"]
