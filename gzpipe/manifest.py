"""A shard folder's ``manifest.json`` and ``labels.parquet``: read by every stage downstream of `gzpipe shard`.

The shard writer (``gzpipe.shard.stage``) writes both; loaders, training, ensembles and reports read them through
this module, so none of them imports the writer.
"""

from __future__ import annotations

import json
from pathlib import Path

from gzpipe.errors import GzpipeError
from gzpipe.fileio import sha256_file

MANIFEST = "manifest.json"
LABELS = "labels.parquet"


def read_manifest(shards: str | Path) -> dict:
    """The manifest of a shard folder; a one-line error when the folder or its manifest is missing or broken."""
    root = Path(shards)
    if not root.exists():
        raise GzpipeError(f"shard folder not found: {root}")
    if not root.is_dir():
        raise GzpipeError(f"{root} is a file; give the folder written by `gzpipe shard`")
    p = root / MANIFEST
    if not p.exists():
        raise GzpipeError(f"no {MANIFEST} in {root}: is this a folder written by `gzpipe shard`?")
    try:
        return json.loads(p.read_text())
    except ValueError as e:
        raise GzpipeError(f"{p} is not valid JSON ({e}); re-run `gzpipe shard` to rewrite it") from None


def manifest_digest(shards: str | Path) -> str:
    """The sha256 of the manifest: it names every shard's sha256, so it changes whenever the data do."""
    p = Path(shards) / MANIFEST
    if not p.exists():
        raise GzpipeError(f"no {MANIFEST} in {shards}: is this a folder written by `gzpipe shard`?")
    return sha256_file(p)
