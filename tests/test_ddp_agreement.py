"""Multi-GPU runs decide together (issue 40, items 1 and 2), shown with two gloo ranks on the CPU standing in for
NCCL ones: a timed checkpoint and a stop are one decision of all ranks, taken after the same step. Each rank deciding
on its own clock or its own signal left one rank in the checkpoint's barrier (or rank 0 in torch.save) while the other
ran the next step's all-reduce: a hang until the watchdog. What the CPU cannot show: NCCL's own timeout behaviour and
the GPU streams; the collectives and the order of calls are the same."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ARCH = "timm:resnet10t"


def _torchrun(shards, out, port, plugin_dir, extra=(), env_extra=None, timeout=240):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}", "-m",
           "gzpipe", "train", "--backbone", ARCH, "--shards", str(shards), "--out", str(out), "--image-size", "32",
           "--batch-size", "4", "--workers", "0", "--device", "cpu", "--backend", "pil", "--warmup-epochs", "1",
           *extra]
    env = {**os.environ, "GZPIPE_PROGRESS": "0", "OMP_NUM_THREADS": "1", "GZPIPE_PLUGINS": "skew_plugin",
           "PYTHONPATH": os.pathsep.join([str(plugin_dir), os.environ.get("PYTHONPATH", "")]), **(env_extra or {})}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)  # its own process group: a hung job is killed whole


def _wait(p, what: str, timeout: int = 300):
    try:
        return p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)  # torchrun and both ranks
        p.communicate()
        pytest.fail(what)


def _plugin(tmp_path: Path, body: str) -> Path:
    d = tmp_path / "plugin"
    d.mkdir(exist_ok=True)
    (d / "skew_plugin.py").write_text(textwrap.dedent(body))
    return d


def test_ranks_whose_clocks_disagree_checkpoint_at_the_same_step(train_shards, tmp_path):
    """Rank 1's clock runs 50 times as fast as rank 0's, and a checkpoint is due every 3 s: alone, rank 1 would
    checkpoint (and wait in the barrier after it) at steps where rank 0 runs on into the next all-reduce. Rank 0
    decides for both; the run ends."""
    plugin = _plugin(tmp_path, """
        import os, time
        if os.environ.get("RANK") == "1":
            import gzpipe.train.loop as loop
            real = time.monotonic
            start = real()
            class _Clock:
                def __getattr__(self, name):
                    return getattr(time, name)
                @staticmethod
                def monotonic():
                    return start + 50 * (real() - start)
            loop.time = _Clock()
    """)
    p = _torchrun(train_shards, tmp_path / "art", 29541, plugin, ["--epochs", "3", "--checkpoint-minutes", "0.05"])
    out, err = _wait(p, "the two ranks hung at a timed checkpoint")
    assert p.returncode == 0, err[-3000:]
    m = json.loads((tmp_path / "art" / ARCH / "metrics.json").read_text())
    assert m["epochs_run"] == 3


def test_a_sigterm_to_one_rank_stops_both_with_a_checkpoint_and_the_job_resumes(train_shards, tmp_path):
    """A SIGTERM reaches rank 1 alone (a scheduler's signals reach the ranks at different steps). Both stop after the
    same step, rank 0 writes the stop checkpoint, the job exits 143 (torchrun reports the workers' failure), and the
    same command resumes and finishes."""
    plugin = _plugin(tmp_path, """
        import os, signal, threading
        if os.environ.get("RANK") == "1":
            import gzpipe.train.loop as loop
            original = loop.train_one_epoch
            def patched(*a, **k):
                if k.get("epoch", a[8] if len(a) > 8 else 0) == 1:   # in the second epoch, after a few steps
                    threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()
                return original(*a, **k)
            loop.train_one_epoch = patched
            import gzpipe.train.run as run
            run.train_one_epoch = patched
    """)
    art = tmp_path / "art"
    p = _torchrun(train_shards, art, 29543, plugin, ["--epochs", "6"])
    out, err = _wait(p, "a SIGTERM to one rank hung the job")
    assert p.returncode != 0 and "SIGTERM" in err, err[-3000:]
    assert (art / ARCH / "checkpoints" / "latest_checkpoint.pth").exists()
    assert not (art / ARCH / "training_complete.txt").exists()
    p = _torchrun(train_shards, art, 29545, tmp_path / "none", ["--epochs", "6"], {"GZPIPE_PLUGINS": ""})
    out, err = _wait(p, "the resumed job hung")
    assert p.returncode == 0, err[-3000:]
    assert "resuming the interrupted run" in out
    assert json.loads((art / ARCH / "metrics.json").read_text())["epochs_run"] == 6
