"""Stopping on SIGINT / SIGTERM without losing data.

The CLI turns SIGTERM into ``Terminated`` (like Ctrl-C's ``KeyboardInterrupt``), so ``finally`` blocks run:
temporary files are removed and worker pools shut down before the process exits. Pool workers ignore both
signals (a terminal or a batch scheduler signals the whole process group): the parent alone decides, lets each
worker finish the file it is writing, and prints one message instead of a traceback per worker.
"""

from __future__ import annotations

import os
import signal


class Terminated(BaseException):
    """SIGTERM, raised in the main thread (a BaseException, like KeyboardInterrupt, so broad handlers let it by)."""


def _raise_terminated(signum, frame):
    raise Terminated()


def install_sigterm_handler():
    """Make SIGTERM raise ``Terminated`` in the main thread; returns the previous handler."""
    return signal.signal(signal.SIGTERM, _raise_terminated)


def ignore_stop_signals() -> None:
    """Initializer of pool worker processes: leave SIGINT / SIGTERM to the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def dataloader_worker_init(worker_id: int) -> None:
    """``worker_init_fn`` of torch DataLoaders. A worker only reads, so on SIGTERM it exits at once with status 0:
    torch then raises no "worker killed by signal" error in the main process, which stops on its own SIGTERM.
    (Ignoring SIGTERM would hang the interpreter's exit, which terminates daemonic workers with it.) SIGINT is
    left to the main process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_quietly)


def _exit_quietly(signum, frame):
    os._exit(0)
