"""The GPU suite's dry run: every step of benchmarks/gpu_suite.sh on the CPU at toy size, so the script is known to
work before a rare GPU window is spent on it; and its sizing for that window."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # ~70 s on 2 cores: in `make test-slow`, keeping the default run under CI's 20 minutes
def test_gpu_suite_dry_run_runs_every_step(tmp_path):
    r = subprocess.run([str(ROOT / "benchmarks/gpu_suite.sh"), "--dry-run", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=900, env={**os.environ, "GZPIPE_PROGRESS": "0"})
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(ln) for ln in (tmp_path / "gpu_results.jsonl").read_text().splitlines()]
    assert {row["step"] for row in rows} == set(range(1, 8))
    assert not [row for row in rows if "error" in row], [row for row in rows if "error" in row]
    by = {s: [row for row in rows if row["step"] == s] for s in range(1, 8)}
    assert by[1][0]["returncode"] == 0 and by[1][0].get("skipped", 0) >= 10  # the GPU tests, skipped without CUDA
    assert {row["backend"] for row in by[2] if "backend" in row} >= {"nvjpeg", "pil", "baseline", "decode_ceiling"}
    assert all(row["images_per_s"] > 0 for row in by[2] if row.get("images_per_s") is not None)
    assert any("data" in row for row in rows)  # which images were measured: the real sample, or a stand-in
    assert {row["mode"] for row in by[3]} == {"device_data", "loader"}
    assert {row["engine"] for row in by[4]} == {"xgboost", "lightgbm"}
    assert all(row["seconds_per_round"] > 0 for row in by[4] if row["engine"] == "xgboost")
    assert len([row for row in by[4] if row["engine"] == "xgboost"]) == 2  # both strategies, each on its own
    assert by[5][0]["images_per_s"] > 0 and by[6][0]["models"] == 7
    assert by[7][0].get("backend") == "dali"
    env = json.loads((tmp_path / "environment.json").read_text())
    assert "torch" in env and env["cuda"] is False


def test_the_suite_fits_the_gpu_window():
    """GPU.md: 15 minutes a window, calls of at most 10; the two planned calls each fit one call with room for
    the machine's start-up, and every step has a budget of its own."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_suite

    assert set(gpu_suite.BUDGET_S) == set(gpu_suite.STEPS) == set(gpu_suite.NEEDS)
    first, second = (1, 2, 3), (4, 5, 6)
    assert sum(gpu_suite.BUDGET_S[s] for s in first) <= 540 and sum(gpu_suite.BUDGET_S[s] for s in second) <= 540
    assert all(b <= 240 for b in gpu_suite.BUDGET_S.values())
