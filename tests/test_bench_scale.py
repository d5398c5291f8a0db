"""A small-N run of the scale benchmark, so that it keeps working (its full run takes ~1 h: benchmarks/RESULTS.md)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_scale_runs_every_stage_at_a_small_size(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks/bench_scale.py"), "--sizes", "1500,3000",
                        "--shard-repeats", "1", "--resize-rows", "200", "--loader-images", "512", "--boost-rounds", "2",
                        "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    timed = {row["stage"] for row in rows if "rows" in row and "seconds" in row and row["stage"] != "build stand-in"}
    assert timed >= {"catalog", "tar cf", "tar cf + sync", "shard", "shard --verify header", "shard --resize 256",
                     "verify", "loader", "features", "boost xgboost (full preset)", "boost lightgbm (full preset)",
                     "ensemble", "report", "predict"}
    fits = {row["stage"]: row for row in rows if "growth_exponent_time" in row}
    assert set(fits) == timed and all(f["sizes"] == [1500, 3000] for f in fits.values())
    measured = [row for row in rows if row["stage"] in timed and "growth_exponent_time" not in row]
    assert {row["stage"] for row in measured} == timed
    assert all(row["seconds"] > 0 and row["peak_rss_mb"] > 0 for row in measured)
    assert not any(tmp_path.iterdir())  # the benchmark removes what it wrote
