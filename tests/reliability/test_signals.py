"""SIGINT (Ctrl-C) and SIGTERM (a scheduler's or `timeout`'s stop) to the whole process group at random points:
each stage exits with 143 (SIGTERM) or ends by SIGINT (shown as 130 by a shell), says how to resume in one message without a traceback, leaves no temporary file
and no half-written one (training saves a checkpoint first), and the same command then finishes with the outputs
of an uninterrupted run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from chaos import (assert_no_half_written_files, digests, gzpipe, kill_at_random_points, run_ok, shard_cmd,
                   temporaries, timed_run, train_cmd)

# SIGTERM: exit status 143. SIGINT: the process ends killed by SIGINT (a shell shows 130), as CPython does for an
# unhandled KeyboardInterrupt, so a shell loop around gzpipe stops too.
SIGNALS = {"SIGINT": (signal.SIGINT, -signal.SIGINT), "SIGTERM": (signal.SIGTERM, 143)}
# Both signals take the same path (a stop request checked at safe points); SIGINT's runs go to `make test-slow`.
BOTH = [pytest.param("SIGINT", marks=pytest.mark.slow), "SIGTERM"]


def _check_stops(log, code: int) -> None:
    stopped = [(rc, err) for rc, err in zip(log.returncodes, log.stderr) if rc != 0]
    assert stopped, "the signal never landed before the command finished"
    for rc, err in stopped:
        assert rc == code, err[-2000:]
        assert "Traceback" not in err, err[-2000:]
        assert "re-run the same command to resume" in err.strip().splitlines()[-1], err[-2000:]


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM"])  # a few seconds each: both run by default
def test_shard_stops_cleanly(chaos_release, tmp_path, name):
    sig, code = SIGNALS[name]
    out = tmp_path / "shards"
    cmd = shard_cmd(chaos_release, out, "--resize", "64", "--workers", "2")
    timing = timed_run(cmd)
    ref = digests(out)
    shutil.rmtree(out)
    log = kill_at_random_points(cmd, timing, kills=3, sig=sig, salt=name, fresh=lambda: shutil.rmtree(out),
                                after_each=lambda: (assert_no_half_written_files(out), _no_temporaries(out)))
    _check_stops(log, code)
    run_ok(cmd)
    assert digests(out) == ref


def _no_temporaries(root) -> None:
    assert not temporaries(root), temporaries(root)


# ~100 s; keeps the default run under CI's 20 minutes (`make test-slow`, which CI runs after it when time
# allows); the default run covers the same path with test_train.py::test_sigterm_mid_epoch_checkpoints_and_resumes_exactly
@pytest.mark.slow
@pytest.mark.parametrize("name", BOTH)
def test_train_checkpoints_and_stops_cleanly(train_shards, tmp_path, name):
    sig, code = SIGNALS[name]
    ref_out, out = tmp_path / "ref", tmp_path / "run"
    timing = timed_run(train_cmd(train_shards, ref_out))
    log = kill_at_random_points(train_cmd(train_shards, out), timing,
                                kills=2, sig=sig, salt=name, fresh=lambda: shutil.rmtree(out),
                                after_each=lambda: (assert_no_half_written_files(out), _no_temporaries(out)))
    _check_stops(log, code)
    # Stopped inside the training loop: a checkpoint is saved first (test_train.py also stops it there on purpose);
    # stopped while the model and loaders are built: nothing to save yet; stopped while the best model is evaluated
    # after the last epoch: the checkpoints are already there; stopped while the finished run is written: its
    # outputs are complete (exits.py says so).
    for rc, e in zip(log.returncodes, log.stderr):
        if rc == code:
            assert ("checkpoint saved in" in e or e.startswith("interrupted by")
                    or "training is complete (checkpoints in" in e
                    or f"interrupted by {name} as it finished: outputs are complete" in e), e
    run_ok(train_cmd(train_shards, out))
    a = json.loads((ref_out / "resnet50/metrics.json").read_text())
    b = json.loads((out / "resnet50/metrics.json").read_text())
    for split in ("val", "test"):
        assert a[split]["mae"] == pytest.approx(b[split]["mae"], abs=1e-6)


# ~130 s; keeps the default run under CI's 20 minutes (`make test-slow`, which CI runs after it when time
# allows); the default run covers the same path with test_kill.py's SIGKILLs of both and test_retry.py's SIGTERM to boost --force
@pytest.mark.slow
@pytest.mark.parametrize("name", BOTH)
def test_features_and_boost_stop_cleanly(train_shards, tmp_path, name):
    sig, code = SIGNALS[name]
    out = tmp_path / "a"
    run_ok(gzpipe("train", "--backbone", "resnet50", "--shards", train_shards, "--out", out, "--epochs", "1",
                  "--image-size", "32", "--batch-size", "4", "--workers", "1", "--device", "cpu", "--backend", "pil"))
    ref = tmp_path / "ref"
    shutil.copytree(out, ref)
    feats = lambda o: gzpipe("features", "--backbone", "resnet50", "--out", o, "--batch-size", "2",  # noqa: E731
                             "--workers", "1", "--backend", "pil", "--device", "cpu")
    _stop_resume_compare(feats, ref, out, "resnet50/features", sig, code, name)
    boost = lambda o: gzpipe("boost", "--engine", "lightgbm", "--backbone", "resnet50", "--out", o,  # noqa: E731
                             "--rounds", "150", "--early-stopping", "150", "--device", "cpu")
    _stop_resume_compare(boost, ref, out, "lightgbm_resnet50", sig, code, name,
                         skip=lambda p: p.name in ("metrics.json", "config.json"))  # timings and the out path


def _stop_resume_compare(cmd_for, ref, out, folder: str, sig, code: int, name: str, skip=lambda p: False) -> None:
    """Run ``cmd_for(ref)`` whole, stop ``cmd_for(out)`` twice with ``sig``, finish it, and compare ``folder``."""
    timing = timed_run(cmd_for(ref))
    log = kill_at_random_points(cmd_for(out), timing, kills=2, sig=sig, salt=name,
                                fresh=lambda: shutil.rmtree(out / folder),
                                after_each=lambda: (assert_no_half_written_files(out), _no_temporaries(out)))
    _check_stops(log, code)
    run_ok(cmd_for(out))
    assert digests(out / folder, skip) == digests(ref / folder, skip)


# ---- the two rare faults a stress run of Ctrl-Cs found (README: "Found by CI"), forced at the bad moment ------------

_POOL_INTERRUPTED = """
import os, signal, sys, threading, time
import concurrent.futures.process as P
from gzpipe.stopping import Stopped, install, worker_map
install()

launch = P.ProcessPoolExecutor._launch_processes
def interrupted_launch(self):  # Ctrl-C lands while the pool forks its workers, before its manager thread exists
    self._spawn_process()
    os.kill(os.getpid(), signal.SIGINT)
    launch(self)
join, joins = P._ExecutorManagerThread.join, []
def interrupted_join(self, timeout=None):  # a second Ctrl-C lands while shutdown waits for the pool's manager
    if not joins:
        joins.append(self)
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
    return join(self, timeout)
if sys.argv[1] == "start":
    P.ProcessPoolExecutor._launch_processes = interrupted_launch
else:
    P._ExecutorManagerThread.join = interrupted_join
try:
    with worker_map(time.sleep, [0.5] * 8, workers=2) as results:
        if sys.argv[1] == "shutdown":
            os.kill(os.getpid(), signal.SIGINT)  # the first Ctrl-C, while both workers are busy
        for _ in results:
            pass
    print("not stopped", flush=True)
except Stopped:
    print("interrupted", flush=True)
"""


@pytest.mark.parametrize("moment", ["start", "shutdown"])
def test_ctrl_c_while_a_worker_pool_starts_or_stops_does_not_hang(moment):
    """Both used to hang for ever when the signal raised an exception there: the pool's shutdown never told the workers
    to stop, and the interpreter's exit waited for them. Now the signal only asks for a stop, which the pool's
    results honour at the next one, so neither moment can hang."""
    r = subprocess.run([sys.executable, "-c", _POOL_INTERRUPTED, moment], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "interrupted", r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr


def test_an_interrupt_wrapped_in_another_error_is_still_an_interrupt(capsys):
    """Python 3.11 wraps a KeyboardInterrupt that lands in a descriptor's __set_name__ (seen while pandas imports)
    in a RuntimeError; it is still reported as an interrupt, not as a crash with a traceback."""
    import typer

    from gzpipe.exits import run_app

    app = typer.Typer()

    @app.command()
    def work() -> None:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as e:
            raise RuntimeError("Error calling __set_name__ on 'cached_property' instance") from e

    @app.command()
    def other() -> None:
        pass

    with pytest.raises(SystemExit) as exit_:
        run_app(app, ["work"])
    assert exit_.value.code == 130
    assert "interrupted by SIGINT" in capsys.readouterr().err


def _children(pid: int) -> list[int]:
    path = f"/proc/{pid}/task/{pid}/children"
    try:
        with open(path) as f:
            return [int(c) for c in f.read().split()]
    except FileNotFoundError:
        return []


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signals are Linux's (prctl)")
def test_pool_workers_die_with_a_parent_killed_by_sigkill(tmp_path):
    """Pool workers leave SIGINT / SIGTERM to the parent; killed alone (no group signal), the parent must not leave
    them waiting for work for ever."""
    p = subprocess.Popen(gzpipe("synth", tmp_path / "s", "--n", "3000", "--workers", "2"), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while len(workers := _children(p.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        if len(workers) < 2:
            pytest.skip("/proc/PID/task/PID/children is not available here, or the pool never started")
        p.kill()
        p.wait()
        deadline = time.monotonic() + 20
        while any(map(_alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(map(_alive, workers)), f"pool workers {workers} outlived their parent"
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)  # whatever is left of its process group
        except ProcessLookupError:
            pass


_INTERRUPTED_IMPORT = """
import os, signal, sys, time
sys.path.insert(0, sys.argv[1])
from gzpipe.stopping import STOP, Stopped, install

install()
try:
    import slow_module  # sends itself the signal, then takes 0.3 s more to finish importing
    print("import finished:", sys.modules["slow_module"].done)
    STOP.check()  # the next safe point
    print("not stopped")
except Stopped as e:
    print(e.signal_name, "stopped after the import")
"""


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM"])
def test_a_stop_signal_waits_for_the_import_it_lands_in(tmp_path, name):
    """An exception raised while torch initialises (pybind11) aborted `features` with "terminate called after
    throwing ... KeyboardInterrupt": a stop signal raises nothing where it lands; the import finishes and the stop
    happens at the next safe point."""
    (tmp_path / "slow_module.py").write_text(
        f"import os, signal, time\ndone = False\nos.kill(os.getpid(), signal.{name})\n"
        "for _ in range(30):\n    time.sleep(0.01)\ndone = True\n")
    r = subprocess.run([sys.executable, "-c", _INTERRUPTED_IMPORT, str(tmp_path)], capture_output=True, text=True,
                       timeout=60)
    assert r.stdout.strip().splitlines() == ["import finished: True", f"{name} stopped after the import"], \
        r.stdout + r.stderr
