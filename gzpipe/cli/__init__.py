"""The `gzpipe` command line. Each command parses its options into a config object and calls one stage function.

Bad input raises ``GzpipeError``; ``gzpipe.exits`` turns it (and signals, usage and disk errors) into one line. The
commands live in one module per group (``data``, ``models``, ``results``, ``bench``), registered on the one ``app``
of ``gzpipe.cli.common`` in the order `gzpipe --help` lists them.
"""

from __future__ import annotations

from gzpipe.cli import data, models, results, bench  # noqa: F401 - importing registers the commands, in this order
from gzpipe.cli.common import app
from gzpipe.exits import run_app

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the command; every failure a user can fix ends as one line (see ``gzpipe.exits``)."""
    run_app(app, argv)
