"""Stopping on SIGINT / SIGTERM without losing data: one stop event, checked by every stage at its safe points.

The signal handler only records the request (``STOP``); it never raises. Each stage calls ``STOP.check()`` where
stopping is safe - after a training step, a batch of features, a boosting round, a finished shard - and that raises
``Stopped``, so ``finally`` blocks remove temporaries and stages save what they must (training writes a checkpoint
first). Because nothing is raised asynchronously, a signal can land anywhere - inside an import of a C++ extension,
while a worker pool forks or shuts down - without the aborts and hangs that an exception raised there causes.

Worker processes leave both signals to the main process (a terminal or a batch scheduler signals the whole process
group): pool workers ignore them and die with their parent; DataLoader workers exit quietly on SIGTERM, and a loader
that finds a worker gone after a stop was asked for treats that as the stop (``ends_loading``).
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
NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}
EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}


class Stopped(BaseException):
    """A stop asked for by SIGINT / SIGTERM, raised at a safe point. A BaseException, like KeyboardInterrupt, so
    broad ``except Exception`` handlers let it pass (and not a KeyboardInterrupt, which click would swallow)."""

    def __init__(self, signal_name: str, message: str | None = None):
        super().__init__(message or f"stopped by {signal_name}")
        self.signal_name = signal_name
        self.message = message

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.signal_name]


class StopEvent:
    """The one stop request of this process: set by the signal handler, read at safe points."""

    def __init__(self):
        self.signal: str | None = None

    def request(self, name: str) -> None:
        if self.signal is None:
            self.signal = name

    def reset(self) -> None:
        self.signal = None

    def check(self, message: str | None = None) -> None:
        """Raise ``Stopped`` when a stop has been asked for; call it where stopping is safe."""
        if self.signal is not None:
            raise Stopped(self.signal, message)

    def __bool__(self) -> bool:
        return self.signal is not None


STOP = StopEvent()


def _handle(signum, frame) -> None:
    first = STOP.signal is None
    STOP.request(NAMES[signum])
    if first:  # os.write: safe wherever the main thread was, and unbuffered
        os.write(2, f"{NAMES[signum]} received: stopping at the next safe point (finished outputs are kept)\n".encode())


def install(sigint: bool = True) -> dict:
    """Route SIGTERM (and SIGINT, unless ``sigint`` is False) to the stop event; returns the previous handlers, for
    ``restore``. Only the main thread can install handlers; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    sigs = (signal.SIGINT, signal.SIGTERM) if sigint else (signal.SIGTERM,)
    return {sig: signal.signal(sig, _handle) for sig in sigs}


def restore(previous: dict) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


@contextlib.contextmanager
def handling_stops() -> Iterator[None]:
    """Stop signals go to ``STOP`` inside the block, unless a caller already routes them there (the CLI does): for
    Python callers of a stage that must stop at a safe point (training saves a checkpoint first)."""
    if signal.getsignal(signal.SIGTERM) is _handle:
        yield
        return
    previous = install()
    try:
        yield
    finally:
        restore(previous)


@contextlib.contextmanager
def ends_loading(quiet: bool = False) -> Iterator[None]:
    """A group SIGTERM reaches DataLoader workers too, and they exit at once: the main process may find a worker
    gone before it reaches its next safe point. After a stop was asked for, that is the stop, not an error: the
    block ends quietly (``quiet``, for callers that save their state next) or with ``Stopped``."""
    try:
        yield
    except RuntimeError as e:
        if STOP.signal is None or "exited unexpectedly" not in str(e):
            raise
        if not quiet:
            raise Stopped(STOP.signal) from None


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
    """``worker_init_fn`` of torch DataLoaders. A worker only reads, so on SIGTERM it exits at once with status 0
    (ignoring it would hang the interpreter's exit, which terminates daemonic workers); SIGINT is left to the main
    process, which stops at its next batch."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_quietly)


def _exit_quietly(signum, frame):
    os._exit(0)


def _checked(results: Iterator) -> Iterator:
    for r in results:
        STOP.check()
        yield r


@contextlib.contextmanager
def worker_map(fn: Callable, *iterables: Iterable, workers: int, chunksize: int = 1) -> Iterator[Iterator]:
    """``map(fn, *iterables)`` over ``workers`` processes (in this process when 1), in order, stopping at the next
    result once a stop is asked for. Leaving the block cancels what has not started and waits for what has (each
    worker finishes the file it is writing)."""
    if workers <= 1:
        yield _checked(map(fn, *iterables))
        return
    pool = ProcessPoolExecutor(workers, initializer=_pool_worker_init, initargs=(os.getpid(),))
    try:
        yield _checked(pool.map(fn, *iterables, chunksize=chunksize))
    finally:
        pool.shutdown(cancel_futures=True)
