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


@pytest.mark.slow  # ~90 s on 2 cores: in `make test-slow`, keeping the default run under CI's 20 minutes
def test_gpu_suite_dry_run_runs_the_planned_calls(tmp_path):
    """`--dry-run` runs the window's two calls (every step in a process of its own) on the CPU at toy size, then
    the steps outside the plan, then the figures row."""
    r = subprocess.run([str(ROOT / "benchmarks/gpu_suite.sh"), "--dry-run", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=1200, env={**os.environ, "GZPIPE_PROGRESS": "0"})
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(ln) for ln in (tmp_path / "gpu_results.jsonl").read_text().splitlines()]
    assert {row["step"] for row in rows} == set(range(0, 8))
    assert not [row for row in rows if "error" in row], [row for row in rows if "error" in row]
    by = {s: [row for row in rows if row["step"] == s] for s in range(0, 8)}
    assert by[1][0]["returncode"] == 0 and by[1][0]["ok"] and by[1][0].get("skipped", 0) >= 10  # GPU tests skip here
    assert {row["backend"] for row in by[2] if "backend" in row} >= {"nvjpeg", "pil", "baseline", "decode_ceiling"}
    assert all(row["images_per_s"] > 0 for row in by[2] if row.get("images_per_s") is not None)
    assert any("data" in row for row in rows)  # which images were measured: the real sample, or a stand-in
    assert {row["mode"] for row in by[3]} == {"device_data", "loader"}
    assert {row["engine"] for row in by[4]} == {"xgboost", "lightgbm"}
    assert by[5][0]["images_per_s"] > 0 and by[6][0]["models"] == 7
    assert by[7][0].get("backend") == "dali"
    fig = by[0][0]["figures"]
    assert fig["loader_target"] == 15_000 and fig["resnet50_target"] == 3_000 and fig["data_stall"]
    env = json.loads((tmp_path / "environment.json").read_text())
    assert "torch" in env and env["cuda"] is False


def test_a_step_is_killed_at_its_budget_with_what_it_started(tmp_path, monkeypatch):
    """An in-process step ignored its budget and could not be stopped (the pil references of step 2, XGBoost's CPU
    figure at 200,000 x 2,048 x 30). Each step now runs in a process group of its own, killed at its budget."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_suite

    script = tmp_path / "slow.py"
    script.write_text("import subprocess, sys, time\n"
                      "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
                      "time.sleep(60)\n")
    monkeypatch.setattr(gpu_suite, "__file__", str(script))  # run_step starts this file as the step
    import time as _time

    t = _time.monotonic()
    assert gpu_suite.run_step(tmp_path, tmp_path, 3, False, 1.0) is None  # killed
    assert _time.monotonic() - t < 30
    alive = subprocess.run(["pgrep", "-f", "time.sleep\\(60\\)"], capture_output=True, text=True).stdout.split()
    assert not alive  # its child went with it


def test_the_plan_fits_the_gpu_window():
    """GPU.md: 15 minutes of device time a window, the machine's start included; calls of at most 10 minutes;
    at most 64 MiB carried a call (the checkout, the real sample and the call's wheels)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_suite

    plan = gpu_suite.PLAN
    assert set(gpu_suite.BUDGET_S) == set(gpu_suite.NEEDS) == set(gpu_suite.STEPS) - {0}
    calls = [sum(gpu_suite.BUDGET_S[s] for s in c["steps"]) + c["overhead_s"] for c in plan["calls"]]
    assert all(c <= plan["call_limit_s"] for c in calls), calls
    assert plan["machine_start_s"] + sum(calls) <= plan["window_s"], calls
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True).stdout.split("\0")
    checkout_mib = sum((ROOT / f).stat().st_size for f in files if f and (ROOT / f).is_file()) / 2**20
    for c in plan["calls"]:
        carried = checkout_mib + gpu_suite.SAMPLE_MIB + sum(c["wheels_mib"].values())
        assert carried <= plan["carry_limit_mib"], (c["steps"], round(carried, 1))
    assert all(v > plan["carry_limit_mib"] for v in plan["not_carried_mib"].values())  # why steps 4, 7 are not planned
