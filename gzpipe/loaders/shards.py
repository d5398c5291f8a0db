"""Which tar files make up a split (from the manifest), checked before any loader opens them, and a plain
reader of one shard's samples that notices truncation."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
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
        raise GzpipeError(f"split {split!r} has no samples in {root} (see counts.per_split in manifest.json)")
    return SplitShards(root, split, tuple(files), m)


class _HashingReader(io.RawIOBase):
    """Reads a file while hashing it, so a shard's sha256 is checked in the same pass that reads it (no second
    read; sha256 runs at over 1 GB/s, far above the loader's byte rate)."""

    def __init__(self, f):
        self.f, self.h = f, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = self.f.readinto(b)
        self.h.update(memoryview(b)[:n])
        return n

    def drain(self) -> str:
        while block := self.f.read(1 << 20):
            self.h.update(block)
        return self.h.hexdigest()


def iter_samples(shard: ShardFile) -> Iterator[dict]:
    """Samples of one tar as dicts {key, jpg, targets, mask, id}; raises GzpipeError naming the file on damage:
    truncation, a tar that does not parse, a sample count or a sha256 other than the manifest's (checked once the
    whole shard has been read)."""
    count = 0
    current: dict | None = None
    try:
        with open(shard.path, "rb") as raw, tarfile.open(fileobj=(reader := _HashingReader(raw)), mode="r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, _, ext = member.name.partition(".")
                data = tar.extractfile(member).read()
                if current is None or current["key"] != key:
                    if current is not None:
                        count += 1
                        yield _finish(current, shard.path)
                    current = {"key": key}
                current[ext] = data
            digest = reader.drain()
        if shard.sha256 and digest != shard.sha256:
            raise GzpipeError(f"shard {shard.path} has changed since it was written (its sha256 differs from the "
                              "manifest's); `gzpipe verify` lists every damaged shard and how to rebuild them")
        if current is not None:
            count += 1
            yield _finish(current, shard.path)
    except (tarfile.TarError, OSError, EOFError, KeyError, ValueError) as e:
        raise GzpipeError(f"shard {shard.path} is truncated or corrupt ({type(e).__name__}: {e}); "
                          "re-run `gzpipe shard` to rewrite it") from None
    if count != shard.samples:
        raise GzpipeError(f"shard {shard.path} holds {count} samples, the manifest says {shard.samples}; "
                          "re-run `gzpipe shard` to rewrite it")


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
