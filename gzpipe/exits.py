"""How a `gzpipe` command ends: every failure a user can fix is one line on stderr and a non-zero exit, never a
traceback: 2 for bad input and usage errors, 1 for file-system errors (a full disk), 143 for SIGTERM, and for SIGINT
death by SIGINT (which a shell shows as 130), always after ``finally`` blocks have removed temporaries. Warnings are
one line too."""

from __future__ import annotations

import errno
import signal
import sys
import threading
import warnings

import typer
from rich.console import Console
from rich.markup import escape as rich_escape

from gzpipe.errors import GzpipeError
from gzpipe.signals import Terminated, install_stop_handlers

try:  # typer >= 0.20 vendors click; older releases use the click package
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover
    from click import exceptions as click_exc


err = Console(stderr=True)
out = Console(soft_wrap=True)

# Errors of the file system that a user fixes outside gzpipe; anything else is a bug and keeps its traceback.
_OS_FIXES = {
    errno.ENOSPC: "free some space (or point --out at a bigger disk) and re-run the same command; finished outputs "
                  "are intact and the run resumes",
    errno.EDQUOT: "the disk quota is exhausted; free some space and re-run the same command to resume",
    errno.EFBIG: "the file is larger than this file system or ulimit allows",
    errno.EROFS: "the file system is read-only; choose another --out",
    errno.EACCES: "check the permissions, or choose another path",
    errno.EPERM: "check the permissions, or choose another path",
    errno.ENOTDIR: "a path given as a folder is a file",
    errno.EISDIR: "a path given as a file is a folder",
    errno.EEXIST: "a file stands where a folder is needed",
}


def _os_error_line(e: OSError) -> str | None:
    fix = _OS_FIXES.get(e.errno)
    if fix is None:
        return None
    where = f" ({e.filename})" if e.filename else ""
    return f"{e.strerror or e}{where}: {fix}"


def run_app(app: typer.Typer, argv: list[str] | None = None) -> None:
    """Entry point: every failure a user can fix is one line on stderr and a non-zero exit (2 for bad input,
    1 for file-system errors), never a traceback. SIGTERM exits 143. SIGINT ends the process by SIGINT (a shell
    shows 130) when run from the command line (``argv`` None), and exits 130 when called from Python."""
    warnings.showwarning = _one_line_warning
    cli = argv is None
    # From the command line, gzpipe takes SIGINT too; called from Python it leaves SIGINT to the caller.
    previous = install_stop_handlers(sigint=cli) if threading.current_thread() is threading.main_thread() else None
    stopped_by = None
    try:
        code = app(args=argv, standalone_mode=False)  # returns the exit status of --help and typer.Exit
        if code == 130:  # typer turns KeyboardInterrupt into Exit(130)
            stopped_by = _interrupted("SIGINT")
        elif isinstance(code, int) and code:
            sys.exit(code)
    except click_exc.NoArgsIsHelpError as e:  # `gzpipe` / `gzpipe bench`: the help is the answer
        out.print(e.ctx.get_help() if e.ctx else str(e), highlight=False, markup=False)
        sys.exit(0)
    except click_exc.UsageError as e:  # bad option values, unknown options or commands (click's multi-line box)
        cmd = e.ctx.command_path if e.ctx else "gzpipe"
        err.print(f"[bold red]error:[/bold red] {e.format_message()} (see `{cmd} --help`)", highlight=False,
                  soft_wrap=True, markup=True)
        sys.exit(2)
    except typer.Abort:
        stopped_by = _interrupted("SIGINT")
    except GzpipeError as e:
        stop = {130: "SIGINT", 143: "SIGTERM"}.get(e.exit_code)
        err.print(f"[bold red]{'interrupted' if stop else 'error'}:[/bold red] {rich_escape(str(e))}",
                  highlight=False, soft_wrap=True)
        if stop is None:
            sys.exit(e.exit_code)
        stopped_by = stop
    except KeyboardInterrupt:  # a second Ctrl-C during training, or any stage without its own handler
        stopped_by = _interrupted("SIGINT")
    except Terminated:
        stopped_by = _interrupted("SIGTERM")
    except Exception as e:
        stopped_by = _signal_behind(e)
        if stopped_by is not None:
            _interrupted(stopped_by)
        else:
            line = _os_error_line(e) if isinstance(e, OSError) else None
            if line is None:
                raise
            err.print(f"[bold red]error:[/bold red] {rich_escape(line)}", highlight=False, soft_wrap=True)
            sys.exit(1)
    finally:
        if previous is not None and cli:
            # The work is done: a signal arriving while the interpreter shuts down has nothing left to stop.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        elif previous is not None:  # called from Python (tests): put the caller's handlers back
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    if stopped_by == "SIGINT" and cli:
        # End as an interrupted program should: killed by SIGINT, after Python's normal shutdown. CPython does that
        # for a KeyboardInterrupt that leaves the main module (and, in 3.11, for one that merely passed through
        # exec() of a string, e.g. a dataclass being created by a lazy import: exit 130 was not reliable anyway).
        # A shell shows 130 either way, but stops a loop around gzpipe only for this one.
        sys.excepthook = _quiet_keyboard_interrupt
        raise KeyboardInterrupt
    if stopped_by is not None:
        sys.exit(130 if stopped_by == "SIGINT" else 143)


def _signal_behind(e: BaseException) -> str | None:
    """"SIGINT" / "SIGTERM" when ``e`` was caused by an interrupt that library code wrapped in another error (Python
    3.11 turns a KeyboardInterrupt inside a descriptor's ``__set_name__`` into RuntimeError, e.g. during an import)."""
    while e is not None:
        if isinstance(e, KeyboardInterrupt):
            return "SIGINT"
        if isinstance(e, Terminated):
            return "SIGTERM"
        e = e.__cause__  # not __context__: an error in cleanup code during an interrupt is a bug to show
    return None


def _quiet_keyboard_interrupt(exc_type, exc, tb) -> None:
    if not issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, tb)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings (a checkpoint fallback, a skipped setting) as one line on stderr, without source locations."""
    err.print(f"[yellow]warning:[/yellow] {rich_escape(str(message))}", highlight=False, soft_wrap=True)


def _interrupted(sig: str) -> str:
    err.print(f"[bold red]interrupted[/bold red] by {sig}: finished outputs are kept; re-run the same command to "
              "resume", highlight=False, soft_wrap=True)
    return sig
