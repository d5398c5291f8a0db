"""Stopping on SIGINT / SIGTERM without losing data.

The CLI turns SIGTERM into ``Terminated`` (like Ctrl-C's ``KeyboardInterrupt``), so ``finally`` blocks run:
temporary files are removed and worker pools shut down before the process exits. Neither is raised inside an
import, nor while a worker pool starts or shuts down: there the signal is held back until it is safe. Pool
workers ignore both signals (a terminal or a batch scheduler signals the whole process group): the parent alone
decides, lets each worker finish the file it is writing, and prints one message instead of a traceback per worker.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


class Terminated(BaseException):
    """SIGTERM, raised in the main thread (a BaseException, like KeyboardInterrupt, so broad handlers let it by)."""


def _stop(signum, frame):
    """SIGINT raises KeyboardInterrupt and SIGTERM ``Terminated`` in the main thread, but never inside an import:
    an exception raised while a C++ extension initialises (torch, through pybind11) aborts the process with
    "terminate called after throwing ... KeyboardInterrupt" (seen in 1 of 40 Ctrl-Cs to `features`). There the
    signal is sent again 50 ms later, until the import is done; imports take a second or two at most."""
    if _in_import(frame):
        retry = threading.Timer(0.05, os.kill, (os.getpid(), signum))
        retry.daemon = True
        retry.start()
        return
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated()


def _in_import(frame) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib._bootstrap"):
            return True
        frame = frame.f_back
    return False


def install_stop_handlers(sigint: bool = True) -> dict:
    """Make SIGTERM (and SIGINT, unless ``sigint`` is False) stop the main thread with an exception, held back
    during imports; returns the previous handlers, to put back with ``signal.signal``."""
    sigs = (signal.SIGINT, signal.SIGTERM) if sigint else (signal.SIGTERM,)
    return {sig: signal.signal(sig, _stop) for sig in sigs}


def _pool_worker_init(parent: int) -> None:
    """Initializer of pool worker processes: leave SIGINT / SIGTERM to the parent, and die with it. A worker that
    ignores SIGTERM and waits for work would otherwise outlive a parent killed with SIGKILL (by the OOM killer, say)
    for ever. Its files are written atomically, so being killed loses nothing."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):  # no prctl in this libc: the worker may outlive a killed parent
            return
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(0)


def dataloader_worker_init(worker_id: int) -> None:
    """``worker_init_fn`` of torch DataLoaders. A worker only reads, so on SIGTERM it exits at once with status 0:
    torch then raises no "worker killed by signal" error in the main process, which stops on its own SIGTERM.
    (Ignoring SIGTERM would hang the interpreter's exit, which terminates daemonic workers with it.) SIGINT is
    left to the main process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_quietly)


def _exit_quietly(signum, frame):
    os._exit(0)


@contextlib.contextmanager
def deferred_stop_signals() -> Iterator[None]:
    """Hold SIGINT / SIGTERM back while worker processes are forked and a pool's manager thread starts, or while
    the pool shuts down.

    An interrupt landing in between leaves workers that the pool's ``shutdown`` does not know about, and the
    interpreter's exit then waits for them forever (seen about once in 100 Ctrl-Cs to ``shard``); a worker forked
    before its initializer runs would also raise KeyboardInterrupt itself. The same hang follows an interrupt of
    the pool's ``shutdown``. A signal that arrives here is re-sent to this process when the block ends, to the
    handlers that were in place before."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    old = {sig: signal.signal(sig, lambda signum, frame: received.append(signum))
           for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if received:
            signal.raise_signal(received[0])


@contextlib.contextmanager
def worker_map(fn: Callable, *iterables: Iterable, workers: int, chunksize: int = 1) -> Iterator[Iterator]:
    """``map(fn, *iterables)`` over ``workers`` processes (in this process when 1), in order. Workers leave SIGINT
    and SIGTERM to this process; leaving the block, by an error or a signal, cancels what has not started and
    waits for what has (each worker finishes the file it is writing)."""
    if workers <= 1:
        yield map(fn, *iterables)
        return
    pool = None
    try:
        with deferred_stop_signals():
            pool = ProcessPoolExecutor(workers, initializer=_pool_worker_init, initargs=(os.getpid(),))
            results = pool.map(fn, *iterables, chunksize=chunksize)
        yield results
    finally:
        if pool is not None:
            # Held back here too: a second Ctrl-C (or `timeout`, which signals the command and then its whole process
            # group) that interrupts the shutdown leaves workers waiting for a stop that never comes.
            with deferred_stop_signals():
                pool.shutdown(cancel_futures=True)
