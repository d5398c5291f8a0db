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


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc): torchrun starts each rank in a session of its own, so killing
    torchrun's process group leaves hung ranks alive, holding the pipes this test reads."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            found.append(c)
            todo.append(c)
    return found


def _wait(p, what: str, timeout: int = 300):
    try:
        return p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for pid in [p.pid, *_descendants(p.pid)]:  # torchrun and both ranks
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        out, err = p.communicate()
        pytest.fail(f"{what}; its last output:\n{err[-3000:]}")


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


# Where the SIGTERM reaches rank 1: during a step of the second epoch, or after the epoch's last step, when
# the ranks' last agreement is behind them and each goes on to the epoch's end on its own (CI hit this one: rank 1
# went to the stop checkpoint's barrier while rank 0 ran the epoch's loss all-reduce, and the job hung).
_SIGTERM_AT = {
    "during a step": """
        def patched(*a, **k):
            if k.get("epoch", a[8] if len(a) > 8 else 0) == 1:   # in the second epoch's second step
                steps, before = [0], k.get("on_step")
                def on_step():
                    steps[0] += 1
                    if steps[0] == 2:
                        os.kill(os.getpid(), signal.SIGTERM)
                    if before is not None:
                        before()
                k["on_step"] = on_step
            return original(*a, **k)
    """,
    "after the epoch's last step": """
        def patched(*a, **k):
            state = original(*a, **k)
            if k.get("epoch", a[8] if len(a) > 8 else 0) == 1:   # the second epoch's steps are all agreed and done
                os.kill(os.getpid(), signal.SIGTERM)
            return state
    """,
}


@pytest.mark.parametrize("when", list(_SIGTERM_AT))
def test_a_sigterm_to_one_rank_stops_both_with_a_checkpoint_and_the_job_resumes(train_shards, tmp_path, when):
    """A SIGTERM reaches rank 1 alone (a scheduler's signals reach the ranks at different steps). Both stop at the
    same point, rank 0 writes the stop checkpoint, each rank exits 143 and torchrun reports their failure (exit 1),
    and the same command resumes and finishes."""
    plugin = _plugin(tmp_path, """
        import os, signal
        if os.environ.get("RANK") == "1":
            import gzpipe.train.loop as loop
            original = loop.train_one_epoch
""" + textwrap.indent(textwrap.dedent(_SIGTERM_AT[when]), " " * 12) + """
            loop.train_one_epoch = patched
            import gzpipe.train.run as run
            run.train_one_epoch = patched
    """)
    art = tmp_path / "art"
    p = _torchrun(train_shards, art, 29543 + 10 * list(_SIGTERM_AT).index(when), plugin, ["--epochs", "6"])
    out, err = _wait(p, "a SIGTERM to one rank hung the job")
    assert p.returncode != 0 and "SIGTERM" in err, err[-3000:]
    assert (art / ARCH / "checkpoints" / "latest_checkpoint.pth").exists()
    assert not (art / ARCH / "training_complete.txt").exists()
    p = _torchrun(train_shards, art, 29545 + 10 * list(_SIGTERM_AT).index(when), tmp_path / "none", ["--epochs", "6"],
                  {"GZPIPE_PLUGINS": ""})
    out, err = _wait(p, "the resumed job hung")
    assert p.returncode == 0, err[-3000:]
    assert "resuming the interrupted run" in out
    assert json.loads((art / ARCH / "metrics.json").read_text())["epochs_run"] == 6
