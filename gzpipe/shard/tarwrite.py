"""A deterministic WebDataset tar writer that also writes DALI's ``.idx`` for each shard.

Every header field that could vary between runs (mtime, owner, order) is fixed, so the same samples give
byte-identical tars. The tar is written under a temporary name and renamed when complete; the DALI index
(format ``v1.2``: one line per sample, ``ext offset size name`` per member) comes from the offsets we wrote,
so no second pass over the tar is needed.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

from gzpipe.fileio import atomic_open

DALI_INDEX_VERSION = "v1.2"


@dataclass
class ShardInfo:
    name: str
    split: str
    samples: int
    bytes: int
    sha256: str
    index: str


class _HashingWriter(io.RawIOBase):
    """File wrapper that hashes and counts what passes through (so the sha256 costs no re-read)."""

    def __init__(self, f):
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.n

    def write(self, b) -> int:
        self.h.update(b)
        self.n += len(b)
        return self.f.write(b)


def write_shard(path: Path, split: str, samples: list[tuple[str, dict[str, bytes]]]) -> ShardInfo:
    """Write ``samples`` ([(key, {ext: bytes})], extensions in a fixed order) to ``path`` and its ``.idx``."""
    index_lines = []
    with atomic_open(path, "wb") as raw:
        hw = _HashingWriter(raw)
        with tarfile.open(fileobj=hw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for key, members in samples:
                parts = []
                for ext, data in members.items():
                    ti = tarfile.TarInfo(f"{key}.{ext}")
                    ti.size, ti.mtime, ti.mode = len(data), 0, 0o644
                    ti.uid = ti.gid = 0
                    ti.uname = ti.gname = ""
                    offset = hw.n + tarfile.BLOCKSIZE  # data start right after the 512-byte header
                    tar.addfile(ti, io.BytesIO(data))
                    parts.append(f"{ext} {offset} {len(data)} {ti.name}")
                index_lines.append(" ".join(parts))
        size, digest = hw.n, hw.h.hexdigest()
    idx = path.with_suffix(".idx")
    with atomic_open(idx, "w") as f:
        f.write(f"{DALI_INDEX_VERSION} {len(index_lines)}\n")
        f.write("\n".join(index_lines) + "\n")
    return ShardInfo(path.name, split, len(samples), size, digest, idx.name)
