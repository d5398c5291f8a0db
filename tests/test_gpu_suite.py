"""The GPU suite's dry run: every step of benchmarks/gpu_suite.sh on the CPU at toy size, so the script is known to
work before a rare GPU hour is spent on it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # ~55 s on 2 cores: in `make test-slow`, keeping the default run well under CI's 20 minutes
def test_gpu_suite_dry_run_runs_every_step(tmp_path):
    r = subprocess.run([str(ROOT / "benchmarks/gpu_suite.sh"), "--dry-run", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=900, env={**os.environ, "GZPIPE_PROGRESS": "0"})
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(ln) for ln in (tmp_path / "gpu_results.jsonl").read_text().splitlines()]
    assert {row["step"] for row in rows} == {1, 2, 3, 4, 5, 6}
    assert not [row for row in rows if "error" in row], [row for row in rows if "error" in row]
    by = {s: [row for row in rows if row["step"] == s] for s in range(1, 7)}
    assert by[1][0]["returncode"] == 0 and by[1][0].get("skipped", 0) >= 10  # the GPU tests, skipped without CUDA
    assert {row["backend"] for row in by[2]} >= {"pil", "baseline", "decode_ceiling"}
    assert all(row["images_per_s"] > 0 for row in by[2] if row.get("images_per_s") is not None)
    assert {row["mode"] for row in by[3]} == {"device_data", "loader"}
    assert by[4][0]["images_per_s"] > 0 and by[5][0]["seconds_per_round"] > 0
    assert by[6][0]["models"] == 7
    env = json.loads((tmp_path / "environment.json").read_text())
    assert "torch" in env and env["cuda"] is False
