"""Progress where no terminal is: plain lines a scheduler's job log keeps (done / total, rate, ETA), silenced by
GZPIPE_PROGRESS=0."""

from __future__ import annotations

import os
import re
import subprocess
import sys


def test_a_batch_job_log_shows_the_stage_advancing(synth_release, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "GZPIPE_PROGRESS"}
    r = subprocess.run([sys.executable, "-m", "gzpipe", "shard", "--catalog", synth_release / "gz2_hart16.csv",
                        "--mapping", synth_release / "gz2_filename_mapping.csv", "--images", synth_release / "images",
                        "--out", tmp_path / "a", "--shard-size", "4", "--resize", "64"],
                       capture_output=True, text=True, timeout=300, env={**env, "GZPIPE_PROGRESS_INTERVAL": "0.02"})
    assert r.returncode == 0, r.stderr
    lines = r.stderr.strip().splitlines()
    pattern = re.compile(r"^shard: \d+/48 img \(\d+%\), [\d.,]+ img/s, (eta \d+[hms]|done after \d+[hms])")
    assert len(lines) >= 2 and all(pattern.match(ln) for ln in lines), lines
    assert lines[-1].startswith("shard: 48/48 img (100%)") and "done after" in lines[-1]
    done = [int(ln.split()[1].split("/")[0]) for ln in lines]
    assert done == sorted(done)  # advancing
    r = subprocess.run([sys.executable, "-m", "gzpipe", "shard", "--catalog", synth_release / "gz2_hart16.csv",
                        "--mapping", synth_release / "gz2_filename_mapping.csv", "--images", synth_release / "images",
                        "--out", tmp_path / "b", "--shard-size", "4", "--resize", "64"],
                       capture_output=True, text=True, timeout=300,
                       env={**env, "GZPIPE_PROGRESS_INTERVAL": "0.02", "GZPIPE_PROGRESS": "0"})
    assert r.returncode == 0 and r.stderr == ""


def test_lines_keep_a_modest_pace():
    from gzpipe import progress

    env = os.environ.get("GZPIPE_PROGRESS"), os.environ.get("GZPIPE_PROGRESS_INTERVAL")
    os.environ["GZPIPE_PROGRESS"], os.environ["GZPIPE_PROGRESS_INTERVAL"] = "lines", "30"
    try:
        lines = progress._Lines("x", 1000, "img", 30)
        printed = []
        lines._line = lambda now, final="": printed.append(now)  # noqa: E731
        for _ in range(1000):  # 1000 steps in well under MIN_GAP_S: no line at all
            lines.advance(1)
        assert printed == []
        lines = progress._Lines("x", 1000, "img", 30)
        lines._line = lambda now, final="": printed.append(now)  # noqa: E731
        lines.last -= progress.MIN_GAP_S  # pretend 2 s passed: the next 10% step prints once
        for _ in range(150):
            lines.advance(1)
        assert len(printed) == 1
    finally:
        for k, v in zip(("GZPIPE_PROGRESS", "GZPIPE_PROGRESS_INTERVAL"), env):
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
