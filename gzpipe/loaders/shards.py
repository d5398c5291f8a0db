"""Which tar files make up a split (from the manifest), checked before any loader opens them, and a plain
reader of one shard's samples that notices truncation."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from gzpipe.errors import GzpipeError
from gzpipe.manifest import read_manifest

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ShardFile:
    path: Path
    index: Path
    samples: int
    bytes: int
    sha256: str | None = None

    def read(self) -> Iterator[dict]:
        """The shard's samples (see ``iter_samples``): the unit of work a loader worker takes."""
        return iter_samples(self)


@dataclass(frozen=True)
class SplitShards:
    root: Path
    split: str
    files: tuple[ShardFile, ...]
    manifest: dict

    @property
    def samples(self) -> int:
        return sum(f.samples for f in self.files)

    def for_rank(self, rank: int, world: int, allow_empty: bool = False) -> SplitShards:
        """This rank's disjoint share of whole shards (used by the tar-reading backends). In evaluation a rank may
        get none (it then contributes nothing to the gathered predictions); in training every rank needs data."""
        if world > 1 and len(self.files) < world and not allow_empty:
            raise GzpipeError(
                f"split {self.split!r} has {len(self.files)} shard(s) for {world} ranks; re-shard with a smaller "
                f"--shard-size so every rank gets at least one"
            )
        return SplitShards(self.root, self.split, self.files[rank::world], self.manifest)


def split_shards(root: str | Path, split: str) -> SplitShards:
    """The shards of ``split`` under ``root``, each checked to exist with the size the manifest recorded."""
    if split not in SPLITS:
        raise GzpipeError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    root = Path(root)
    m = read_manifest(root)
    files = []
    for s in m["shards"]:
        if s["split"] != split or s["samples"] == 0:
            continue
        p = root / s["name"]
        if not p.exists():
            raise GzpipeError(f"shard {p} listed in the manifest is missing; re-run `gzpipe shard` to rewrite it")
        size = p.stat().st_size
        if size != s["bytes"]:
            raise GzpipeError(
                f"shard {p} is {'truncated' if size < s['bytes'] else 'larger than recorded'} ({size} bytes, manifest "
                f"says {s['bytes']}); re-run `gzpipe shard` to rewrite it"
            )
        files.append(ShardFile(p, root / s["index"], s["samples"], s["bytes"], s.get("sha256")))
    if not files:
        per = m.get("counts", {}).get("per_split", {})
        counts = ", ".join(f"{s} {per.get(s, 0)}" for s in SPLITS)
        raise GzpipeError(f"split {split!r} has no galaxies in {root} ({counts}): re-shard with more galaxies or a "
                          f"larger --{split if split != 'train' else 'train-fraction'} (splits go by id hash)")
    return SplitShards(root, split, tuple(files), m)


def _ustar_members(buf: bytes) -> Iterator[tuple[str, int, int]]:
    """(name, start, size) of each regular file in an in-memory ustar archive, from its 512-byte headers (what
    `gzpipe shard` writes; a fifth of the cost of ``tarfile`` per member)."""
    pos, end = 0, len(buf)
    while pos + BLOCK <= end:
        header = buf[pos:pos + BLOCK]
        if header[0] == 0:  # the end-of-archive blocks
            return
        name = header[:100].split(b"\0", 1)[0].decode("utf-8")
        size = int(header[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
        start = pos + BLOCK
        if start + size > end:
            raise ValueError(f"member {name} runs past the end of the file")
        if header[156:157] in (b"0", b"\0"):
            yield name, start, size
        pos = start + (size + BLOCK - 1) // BLOCK * BLOCK


BLOCK = 512


def iter_samples(shard: ShardFile) -> Iterator[dict]:
    """Samples of one tar as dicts {key, jpg, targets, mask, id}. The shard is read whole (a few MB) and checked
    against the manifest's sha256 before any sample is used; damage - truncation, a changed byte, a tar that does not
    parse, a sample count other than the manifest's - is a GzpipeError naming the file."""
    from gzpipe.shard.images import read_file

    try:
        data = read_file(shard.path)
    except OSError as e:
        raise GzpipeError(f"shard {shard.path} cannot be read ({e.strerror or e}); re-run `gzpipe shard` to rewrite "
                          "it") from None
    if shard.sha256 and hashlib.sha256(data).hexdigest() != shard.sha256:
        what = "is truncated" if len(data) < shard.bytes else "has changed since it was written"
        raise GzpipeError(f"shard {shard.path} {what} (its sha256 differs from the manifest's); `gzpipe verify` "
                          "lists every damaged shard and how to rebuild them")
    samples: list[dict] = []
    current: dict | None = None
    try:
        for name, start, size in _ustar_members(data):
            key, _, ext = name.partition(".")
            if current is None or current["key"] != key:
                if current is not None:
                    samples.append(current)
                current = {"key": key}
            current[ext] = data[start:start + size]
    except (ValueError, UnicodeDecodeError) as e:
        raise GzpipeError(f"shard {shard.path} is truncated or corrupt ({e}); re-run `gzpipe shard` to rewrite it") \
            from None
    if current is not None:
        samples.append(current)
    if len(samples) != shard.samples:
        raise GzpipeError(f"shard {shard.path} holds {len(samples)} samples, the manifest says {shard.samples}; "
                          "re-run `gzpipe shard` to rewrite it")
    for s in samples:
        try:
            yield _finish(s, shard.path)
        except (KeyError, ValueError) as e:
            raise GzpipeError(f"shard {shard.path} is corrupt (sample {s['key']}: {type(e).__name__} {e}); re-run "
                              "`gzpipe shard` to rewrite it") from None


def _finish(s: dict, shard: Path) -> dict:
    meta = json.loads(s["json"]) if "json" in s else {"id": s["key"]}
    return {
        "key": s["key"],
        "shard": shard.name,
        "id": str(meta["id"]),
        "jpg": s["jpg"],
        "targets": np.frombuffer(s["targets"], dtype="<f4").copy(),
        "mask": np.frombuffer(s["mask"], dtype="u1").copy(),
    }


def dist_rank_world() -> tuple[int, int]:
    """Rank and world size from torch.distributed when initialised, else from torchrun's environment."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except ImportError:
        pass
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
