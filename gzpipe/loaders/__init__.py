"""Loaders: one batch contract (``Batch``), three backends registered by name.

``create_loader(shards, split, backend="auto"|"dali"|"nvjpeg"|"pil", image_size, batch_size, train, ...)``
returns a ``Loader``; iterating it yields one epoch of ``Batch`` es. ``auto`` picks DALI on a GPU when it imports,
else nvJPEG on a GPU, else PIL. Heavy imports (DALI) happen inside the backend that needs them.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from gzpipe.errors import GzpipeError
from gzpipe.loaders.contract import Batch
from gzpipe.loaders.shards import SplitShards, dist_rank_world, split_shards

__all__ = ["BACKENDS", "Batch", "Loader", "create_loader", "resolve_backend"]


@dataclass(frozen=True)
class Backend:
    name: str
    module: str  # gzpipe.loaders.<module>.build(...)
    needs_cuda: bool
    reads_shards_itself: bool  # True: the backend splits by rank itself (DALI's shard_id / num_shards)


BACKENDS: dict[str, Backend] = {}


def register(b: Backend) -> None:
    BACKENDS[b.name] = b


register(Backend("dali", "gzpipe.loaders.dali", needs_cuda=False, reads_shards_itself=True))
register(Backend("nvjpeg", "gzpipe.loaders.nvjpeg", needs_cuda=True, reads_shards_itself=False))
register(Backend("pil", "gzpipe.loaders.pil", needs_cuda=False, reads_shards_itself=False))


def _dali_imports() -> bool:
    try:
        importlib.import_module("nvidia.dali")
        return True
    except Exception:  # noqa: BLE001 - any failure means "not usable here"
        return False


def resolve_backend(name: str, device: torch.device) -> str:
    if name == "auto":
        if device.type == "cuda":
            return "dali" if _dali_imports() else "nvjpeg"
        return "pil"
    if name not in BACKENDS:
        raise GzpipeError(f"unknown loader backend {name!r}; choose one of auto, {', '.join(BACKENDS)}")
    if BACKENDS[name].needs_cuda and device.type != "cuda":
        raise GzpipeError(f"the {name} backend needs a CUDA device; use --backend pil or dali here")
    if name == "dali" and not _dali_imports():
        raise GzpipeError("the dali backend needs nvidia-dali-cuda130 (pip install nvidia-dali-cuda130)")
    return name


class Loader:
    """One split's batches. ``for batch in loader`` runs one epoch; ``set_epoch`` changes the shuffle."""

    def __init__(self, backend: str, shards: SplitShards, batch_size: int, train: bool, world: int,
                 batches: Callable[[int], Iterator[Batch]]):
        self.backend, self.shards, self.batch_size, self.train = backend, shards, batch_size, train
        self._world, self._batches, self.epoch = world, batches, 0

    @property
    def samples(self) -> int:
        """Samples of the split this rank sees per epoch (approximately, under DDP)."""
        return math.ceil(self.shards.samples / self._world)

    def __len__(self) -> int:
        return self.samples // self.batch_size if self.train else math.ceil(self.samples / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[Batch]:
        try:
            yield from self._batches(self.epoch)
        except GzpipeError:
            raise
        except Exception as e:  # a worker's GzpipeError arrives re-wrapped by the DataLoader: unwrap its message
            msg = str(e)
            marker = "GzpipeError: "
            if marker in msg:
                raise GzpipeError(msg[msg.rindex(marker) + len(marker):].strip().splitlines()[0]) from None
            raise


def create_loader(shards: str | Path, split: str, backend: str = "auto", image_size: int = 224, batch_size: int = 64,
                  train: bool = False, *, device: str | torch.device | None = None, workers: int = 2, seed: int = 42,
                  shuffle_buffer: int = 1000, rank: int | None = None, world_size: int | None = None) -> Loader:
    """Build a loader over ``split`` of the shard folder ``shards`` (see the module docstring)."""
    if image_size < 8:
        raise GzpipeError(f"--image-size must be at least 8, got {image_size}")
    if batch_size < 1:
        raise GzpipeError(f"--batch-size must be at least 1, got {batch_size}")
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = resolve_backend(backend, dev)
    r, w = dist_rank_world()
    rank, world = (r if rank is None else rank), (w if world_size is None else world_size)
    all_shards = split_shards(shards, split)
    spec = BACKENDS[name]
    mine = all_shards if spec.reads_shards_itself else all_shards.for_rank(rank, world, allow_empty=not train)
    module = importlib.import_module(spec.module)
    kwargs = dict(image_size=image_size, batch_size=batch_size, train=train, device=dev, workers=workers, seed=seed,
                  rank=rank, shuffle_buffer=shuffle_buffer)
    if spec.reads_shards_itself:
        kwargs["world"] = world
    batches = module.build(mine, **kwargs)
    loader = Loader(name, mine if not spec.reads_shards_itself else all_shards, batch_size, train,
                    world if spec.reads_shards_itself else 1, batches)
    return loader
