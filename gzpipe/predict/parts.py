"""`predict`'s work in parts: each part is written to its own file as soon as it is done, so a killed run re-does
only unfinished parts, memory stays flat however many inputs there are, and torchrun ranks can share the parts.

A part is a run of up to ``part_size`` image files (read in chunks by the loader's workers), one loose tar, or a
group of whole shards of one split of a shard folder. The plan - which inputs make which part - has a digest; parts
left by a run with another plan (other inputs, model or options) are not reused.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from gzpipe import schema
from gzpipe.loaders.shards import SplitShards, split_shards
from gzpipe.manifest import read_manifest
from gzpipe.pixels import DEFAULT_STRETCH
from gzpipe.predict.inputs import Item
from gzpipe.shard.images import ImageRejected, check_image, jpeg_frame, read_image
from gzpipe.shard.store import load_jpeg

CHUNK = 64  # files per loader unit: workers share a part's files chunk by chunk
_ZEROS = np.zeros(schema.N_TARGETS, np.float32)
_NONE = np.zeros(schema.N_TARGETS, np.uint8)


@dataclass(frozen=True)
class FileChunk:
    """Loader unit: image files (or tar members) by position; sample ids are the positions within the part."""

    items: tuple[Item, ...]
    start: int
    stretch: str = DEFAULT_STRETCH  # the model's: deep images and FITS made 8-bit as its training images were
    stored: int | None = None  # the side its training images were stored at (`shard --resize`): each file is too
    quality: int = 90  # and at that JPEG quality

    @property
    def samples(self) -> int:
        return len(self.items)

    def read(self) -> Iterator[dict]:
        tars: dict[str, tarfile.TarFile] = {}
        try:
            for k, it in enumerate(self.items):
                s = self._sample(self.start + k, it, tars)
                if self.stored and "jpg" in s:
                    s = self._store(s)
                yield {**s, "stretch": self.stretch}
        finally:
            for t in tars.values():
                t.close()

    def _store(self, s: dict) -> dict:
        """The image as `gzpipe shard --resize` stored the model's training images (its centred square, resized,
        re-encoded): a 424 px cutout then gives the pixels a 424 px training galaxy gave, not a sharper, aliased
        warp of the original (on the real preset's random-draw test galaxies: Kaggle RMSE 0.1019 from the
        original files against 0.1005 from the shards before, benchmarks/RESULTS.md)."""
        try:
            if s["jpg"][:3] == b"\xff\xd8\xff" and jpeg_frame(s["jpg"], s["name"])[:2] == (self.stored,) * 2:
                return s  # stored at that size already (a shard's own image): as it is
            s["jpg"], _ = load_jpeg(s["jpg"], "header", self.stored, self.quality, s["name"], self.stretch)
        except ImageRejected as e:
            del s["jpg"]
            s["error"] = str(e)
        return s

    @staticmethod
    def _sample(pos: int, it: Item, tars: dict) -> dict:
        name = Path(it.path.split("::")[-1]).name if it.path else it.id
        s = {"key": str(pos), "id": str(pos), "name": name, "targets": _ZEROS, "mask": _NONE, "tolerant": True,
             "shard": name}
        try:
            if it.data is not None:  # the catalogue carries the image itself
                if not it.data:
                    raise ImageRejected("no image bytes in the catalogue's image column for this id", "no_path")
                data = it.data
            elif not it.path:
                raise ImageRejected("no image path given for this id in the catalogue", "no_path")
            elif "::" in it.path:
                tar, member = it.path.split("::", 1)
                if tar not in tars:
                    tars[tar] = tarfile.open(tar)
                data = tars[tar].extractfile(member).read()
            else:
                data, found = read_image(it.path)  # <id>.jpg, or the same stem with another suffix
                s["name"] = s["shard"] = name = Path(found).name
            check_image(data, name)
            s["jpg"] = data
        except ImageRejected as e:
            s["error"] = str(e)
        except FileNotFoundError:
            s["error"] = f"image file not found: {it.path}"
        except (OSError, KeyError, tarfile.TarError) as e:
            s["error"] = f"cannot read {it.path}: {getattr(e, 'strerror', None) or e}"
        return s


@dataclass(frozen=True)
class Part:
    name: str
    kind: str  # "files" or "shards"
    items: tuple[Item, ...] = ()  # kind "files"
    shards: SplitShards | None = None  # kind "shards"
    folder: str = ""

    @property
    def rows(self) -> int:
        return len(self.items) if self.kind == "files" else self.shards.samples

    def chunks(self, stretch: str = DEFAULT_STRETCH,
               stored: tuple[int | None, int] = (None, 90)) -> tuple[FileChunk, ...]:
        """The part's files in loader units; ``stored``: (side, JPEG quality) to store each at first, as the model's
        shards stored its training images (``Predictor.stored``)."""
        return tuple(FileChunk(self.items[i:i + CHUNK], i, stretch, *stored) for i in range(0, len(self.items), CHUNK))

    def describe(self) -> list:
        if self.kind == "files":
            return [self.name, [(i.id, i.path) for i in self.items]]
        return [self.name, self.folder, [(f.path.name, f.sha256) for f in self.shards.files]]


def plan_parts(items: list[Item], shard_folders: list[Path], part_size: int) -> list[Part]:
    parts: list[Part] = []

    def name() -> str:
        return f"part-{len(parts):06d}"

    loose = [it for it in items if "::" not in it.path]
    by_tar: dict[str, list[Item]] = {}
    for it in items:
        if "::" in it.path:
            by_tar.setdefault(it.path.split("::", 1)[0], []).append(it)
    for i in range(0, len(loose), part_size):
        parts.append(Part(name(), "files", items=tuple(loose[i:i + part_size])))
    for members in by_tar.values():
        for i in range(0, len(members), part_size):
            parts.append(Part(name(), "files", items=tuple(members[i:i + part_size])))
    for folder in shard_folders:
        m = read_manifest(folder)
        for split in ("train", "val", "test"):
            if not m["counts"]["per_split"].get(split):
                continue
            sp = split_shards(folder, split)
            group: list = []
            for f in sp.files:
                group.append(f)
                if sum(g.samples for g in group) >= part_size:
                    parts.append(Part(name(), "shards", shards=SplitShards(sp.root, split, tuple(group), sp.manifest),
                                      folder=str(folder)))
                    group = []
            if group:
                parts.append(Part(name(), "shards", shards=SplitShards(sp.root, split, tuple(group), sp.manifest),
                                  folder=str(folder)))
    return parts


def plan_digest(parts: list[Part], settings: dict) -> str:
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for p in parts:
        h.update(json.dumps(p.describe(), default=str).encode())
    return h.hexdigest()


def share(left: list[Part], rank: int, world: int) -> list[Part]:
    """This rank's parts among those still to do, round-robin: shared after the finished ones are dropped, so a
    resumed run spreads what is left over every rank (shared before, one rank could get every part left)."""
    return [p for i, p in enumerate(left) if i % world == rank]
