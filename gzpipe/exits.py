"""How a `gzpipe` command ends: every failure a user can fix is one line on stderr and a non-zero exit, never a
traceback: 2 for bad input and usage errors, 1 for file-system errors (a full disk), 143 for SIGTERM, and for SIGINT
death by SIGINT (which a shell shows as 130), always after ``finally`` blocks have removed temporaries. Warnings are
one line too."""

from __future__ import annotations

import errno
import signal
import sys
import warnings

import typer
from rich.console import Console
from rich.markup import escape as rich_escape

from gzpipe.errors import GzpipeError
from gzpipe.stopping import EXIT_CODES, STOP, Stopped, install, restore

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
    STOP.reset()
    # From the command line, gzpipe takes SIGINT too; called from Python it leaves SIGINT to the caller.
    previous = install(sigint=cli)
    stopped_by = None
    try:
        code = app(args=argv, standalone_mode=False)  # returns the exit status of --help and typer.Exit
        if code == 130:  # typer turns KeyboardInterrupt into Exit(130)
            stopped_by = _interrupted("SIGINT")
        elif isinstance(code, int) and code:
            sys.exit(code)
        elif STOP.signal is not None:  # asked to stop after the last safe point: the work is done, say so
            stopped_by = _interrupted(STOP.signal, finished=True)
    except click_exc.NoArgsIsHelpError as e:  # `gzpipe` / `gzpipe bench`: the help is the answer
        out.print(e.ctx.get_help() if e.ctx else str(e), highlight=False, markup=False)
        sys.exit(0)
    except click_exc.UsageError as e:  # bad option values, unknown options or commands (click's multi-line box)
        cmd = e.ctx.command_path if e.ctx else "gzpipe"
        err.print(f"[bold red]error:[/bold red] {rich_escape(_usage_message(e))} (see `{cmd} --help`)",
                  highlight=False, soft_wrap=True, markup=True)
        sys.exit(2)
    except typer.Abort:
        stopped_by = _interrupted("SIGINT")
    except Stopped as e:  # a stage stopped at a safe point; its message says what it kept
        if e.message:
            err.print(f"[bold red]interrupted:[/bold red] {rich_escape(e.message)}", highlight=False, soft_wrap=True)
            stopped_by = e.signal_name
        else:
            stopped_by = _interrupted(e.signal_name)
    except GzpipeError as e:
        err.print(f"[bold red]error:[/bold red] {rich_escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:  # Python's own Ctrl-C (when called from Python, SIGINT is the caller's)
        stopped_by = _interrupted("SIGINT")
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
        if cli:
            # The work is done: a signal arriving while the interpreter shuts down has nothing left to stop.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        else:  # called from Python (tests): put the caller's handlers back
            restore(previous)
    if stopped_by == "SIGINT" and cli:
        # End as an interrupted program should: killed by SIGINT, after Python's normal shutdown (which CPython does
        # for a KeyboardInterrupt that leaves the main module). A shell shows 130 either way, but stops a loop around
        # gzpipe only for this one.
        sys.excepthook = _quiet_keyboard_interrupt
        raise KeyboardInterrupt
    if stopped_by is not None:
        sys.exit(EXIT_CODES[stopped_by])


def _usage_message(e) -> str:
    """click's message without pydantic-style internals (``Value error, ...``)."""
    return e.format_message().replace("Value error, ", "")


def _signal_behind(e: BaseException) -> str | None:
    """"SIGINT" when ``e`` was caused by a KeyboardInterrupt that library code wrapped in another error (Python 3.11
    turns one inside a descriptor's ``__set_name__`` into RuntimeError, e.g. during an import)."""
    while e is not None:
        if isinstance(e, Stopped):
            return e.signal_name
        if isinstance(e, KeyboardInterrupt):
            return "SIGINT"
        e = e.__cause__  # not __context__: an error in cleanup code during an interrupt is a bug to show
    return None


def _quiet_keyboard_interrupt(exc_type, exc, tb) -> None:
    if not issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, tb)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings (a checkpoint fallback, a skipped setting) as one line on stderr, without source locations."""
    err.print(f"[yellow]warning:[/yellow] {rich_escape(str(message))}", highlight=False, soft_wrap=True)


def _interrupted(sig: str, finished: bool = False) -> str:
    what = " as it finished: outputs are complete" if finished else ": finished outputs are kept"
    err.print(f"[bold red]interrupted[/bold red] by {sig}{what}; re-run the same command to resume",
              highlight=False, soft_wrap=True)
    return sig
