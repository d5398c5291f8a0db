"""gzpipe as a package that installs where its users are (issue 39): the wheel's metadata states ranges and keeps the
GPU-only and Dask packages in extras, `twine check` passes, and a fresh virtual environment without DALI installs
the wheel and runs synth -> shard -> train -> predict on the CPU."""

from __future__ import annotations

import email
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True, text=True)
    (whl,) = out.glob("gzpipe-*.whl")
    return whl


def test_the_wheel_states_ranges_and_keeps_gpu_packages_in_an_extra(wheel):
    with zipfile.ZipFile(wheel) as z:
        meta = email.message_from_string(z.read(next(n for n in z.namelist() if n.endswith("METADATA"))).decode())
        names = z.namelist()
    requires = meta.get_all("Requires-Dist")
    core = [r for r in requires if "extra ==" not in r]
    assert any(r.startswith("torch>=") for r in core) and not any("==" in r for r in core)  # ranges, never one torch
    for gpu_only in ("nvidia-dali", "nvidia-nvimgcodec", "dask", "distributed"):
        assert not any(r.startswith(gpu_only) for r in core), gpu_only
        assert any(r.startswith(gpu_only) and "extra ==" in r for r in requires), gpu_only
    assert meta["Version"] and meta["License-Expression"] == "MIT"
    assert "gzpipe/api.py" in names and "gzpipe/pixels/fits.py" in names and not any(n.startswith("tests/") for n in names)


def test_twine_check_passes(wheel):
    twine = pytest.importorskip("twine", reason="twine is not installed (a test dependency)")
    del twine
    r = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(wheel)], capture_output=True, text=True)
    assert r.returncode == 0 and "PASSED" in r.stdout, r.stdout + r.stderr


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_fresh_environment_without_dali_installs_and_runs_the_pipeline(wheel, tmp_path):
    """A new virtual environment, the wheel and its dependencies only (the exact versions of constraints.txt, no
    `gpu` extra: DALI is not there, as on macOS, Windows or a CPU-only machine): synth, shard, train, predict."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    py = bindir / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt"), str(wheel)],
                   check=True, capture_output=True, text=True)
    no_dali = subprocess.run([str(py), "-c", "import nvidia.dali"], capture_output=True, text=True)
    assert no_dali.returncode != 0  # the environment really has no DALI
    gz = str(bindir / "gzpipe")
    env = {**os.environ, "GZPIPE_PROGRESS": "0"}

    def run(*args):
        r = subprocess.run([gz, *map(str, args)], capture_output=True, text=True, env=env, cwd=tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout

    run("synth", tmp_path / "release", "--n", "40", "--seed", "0")
    run("shard", "--catalog", tmp_path / "release/gz2_hart16.csv", "--mapping",
        tmp_path / "release/gz2_filename_mapping.csv", "--images", tmp_path / "release/images", "--out",
        tmp_path / "shards", "--resize", "40", "--val", "0.2", "--test", "0.2")
    out = run("train", "--backbone", "timm:resnet10t", "--shards", tmp_path / "shards", "--out", tmp_path / "art",
              "--image-size", "32", "--epochs", "1", "--batch-size", "8", "--workers", "0", "--warmup-epochs", "1")
    assert "pil loader on cpu" in out  # auto chose the CPU loader: DALI is not there
    out = run("predict", "--model", tmp_path / "art/timm:resnet10t", tmp_path / "release/images", "--out",
              tmp_path / "p.csv", "--workers", "0")
    assert "predicted 40 image(s)" in out
    api = subprocess.run([str(py), "-c", "import gzpipe; print(len(gzpipe.load_model('art/timm:resnet10t').predict("
                                         "'release/images')))"], capture_output=True, text=True, cwd=tmp_path)
    assert api.returncode == 0 and api.stdout.strip().endswith("40"), api.stderr
