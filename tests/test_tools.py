"""tools/: each script has --help and does what its README line says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / name), *map(str, args)], capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("name", ["preview.py", "compare_runs.py", "train_determinism.py"])
def test_help(name):
    r = _tool(name, "--help")
    assert r.returncode == 0 and "usage:" in r.stdout and len(r.stdout) > 300
    assert name in (ROOT / "tools/README.md").read_text()


def test_preview_draws_eval_and_train_views_of_the_same_galaxies(marker_shards, tmp_path):
    import sys as _sys

    _sys.path.insert(0, str(ROOT / "tools"))
    import preview

    got = preview.collect(marker_shards, "train", 4, 2, 48, "pil", 0)
    assert len(got) == 4
    for ev, trains, t, m in got.values():
        assert ev.shape == (48, 48, 3) and len(trains) == 2 and all(x.shape == ev.shape for x in trains)
        # the marker's disc colour (its id) is the same in every view; the augmentation moves the white dot
        centre = lambda im: im[20:28, 20:28].reshape(-1, 3).mean(0)  # noqa: E731
        assert all(abs(centre(x) - centre(ev)).max() < 12 for x in trains)
    out = tmp_path / "p.png"
    r = _tool("preview.py", marker_shards, "--n", 3, "--views", 2, "--image-size", 48, "--out", out)
    assert r.returncode == 0, r.stderr
    im = Image.open(out)
    assert im.width > 300 and im.height > 300
    r = _tool("preview.py", tmp_path / "nope")
    assert r.returncode == 2 and "shard folder not found" in r.stderr


def _table(folder: Path, rows: dict) -> None:
    (folder / "model_comparison").mkdir(parents=True)
    pd.DataFrame([{"name": n, "kind": k, "mae": mae, "accuracy": acc} for n, (k, mae, acc) in rows.items()]).to_csv(
        folder / "model_comparison/comparison_table.csv", index=False)


def test_compare_runs_side_by_side(tmp_path):
    _table(tmp_path / "before", {"resnet50": ("deep", 0.20, 0.80), "xgboost_resnet50": ("xgboost", 0.21, 0.79)})
    _table(tmp_path / "after", {"resnet50": ("deep", 0.18, 0.82), "ensemble_stacked": ("ensemble", 0.17, 0.83)})
    r = _tool("compare_runs.py", tmp_path / "before", tmp_path / "after", "--csv", tmp_path / "c.csv", "--plot",
              tmp_path / "c.png")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[1].split()[0] == "ensemble_stacked"  # best of the second folder first
    assert any(ln.startswith("resnet50") and "-0.0200" in ln for ln in lines)
    m = pd.read_csv(tmp_path / "c.csv")
    assert set(m["name"]) == {"resnet50", "xgboost_resnet50", "ensemble_stacked"}
    assert m.set_index("name").loc["resnet50", "mae_change"] == pytest.approx(-0.02)
    assert Image.open(tmp_path / "c.png").width > 300
    r = _tool("compare_runs.py", tmp_path / "before", tmp_path / "missing")
    assert r.returncode == 2 and "gzpipe report --out" in r.stderr


def test_train_determinism_runs_the_command_and_finds_where_runs_part(train_shards, tmp_path):
    """Two real hooked runs of a tiny training agree to the last bit (or say where not); a log changed by hand at
    the first optimizer step is traced to that step and parameter."""
    import json

    out = tmp_path / "run"
    r = _tool("train_determinism.py", "--runs", "2", "--", "--backbone", "resnet50", "--shards", train_shards,
              "--out", out, "--epochs", "1", "--image-size", "32", "--batch-size", "8", "--workers", "0",
              "--device", "cpu", "--backend", "pil", "--warmup-epochs", "1", "--checkpoint-minutes", "0")
    assert r.returncode == 0, r.stderr
    assert "run 0: 3 train batches" in r.stdout and "runs differ from the first" in r.stdout
    assert (out / "resnet50/metrics.json").exists()  # the command really trained

    import sys as _sys
    _sys.path.insert(0, str(ROOT / "tools"))
    from train_determinism import where_they_part

    ref = {"batches": ["a", "b"], "loss": [0.5, 0.4], "grads": [["g0", "g1"]], "params": [["p0", "p1"]],
           "names": ["backbone.conv1.weight", "head.fc.weight"]}
    assert where_they_part(ref, json.loads(json.dumps(ref))) is None
    other = {**ref, "params": [["p0x", "p1"]], "loss": [0.5, 0.41]}
    said = where_they_part(ref, other)
    assert "after step 0: 1 parameter(s) differ, first backbone.conv1.weight" in said and "loss call 1" in said
