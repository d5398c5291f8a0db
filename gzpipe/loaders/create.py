"""Building loaders: ``create_loader`` over a shard split, ``create_unit_loader`` over other units."""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from gzpipe.errors import GzpipeError
from gzpipe.loaders.contract import Batch, to_grey
from gzpipe.loaders.presets import DEFAULT_CROP, check_crop
from gzpipe.loaders.registry import BACKENDS, resolve_backend
from gzpipe.loaders.shards import SplitShards, dist_rank_world, split_shards


class Loader:
    """One split's batches. ``for batch in loader`` runs one epoch; ``set_epoch`` changes the shuffle."""

    def __init__(self, backend: str, shards: SplitShards, batch_size: int, train: bool, world: int,
                 batches: Callable[[int], Iterator[Batch]], channels: int = 3):
        self.backend, self.shards, self.batch_size, self.train = backend, shards, batch_size, train
        self._world, self._batches, self.epoch, self.channels = world, batches, 0, channels

    @property
    def samples(self) -> int:
        """Samples of the split this rank sees per epoch. A backend that shards by rank itself (DALI's shard_id /
        num_shards) gives some ranks one sample more than others: training counts the fewest, so that every rank
        has the batches its epoch is sized for (one short rank would leave the others waiting in an all-reduce)."""
        if self.train:
            return self.shards.samples // self._world
        return math.ceil(self.shards.samples / self._world)

    def __len__(self) -> int:
        return self.samples // self.batch_size if self.train else math.ceil(self.samples / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[Batch]:
        try:
            for b in self._batches(self.epoch):
                if self.channels == 1:  # every backend delivers RGB; a greyscale encoder gets one channel
                    b.images = to_grey(b.images)
                yield b
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
                  shuffle_buffer: int = 1000, rank: int | None = None, world_size: int | None = None,
                  crop: float = DEFAULT_CROP, channels: int = 3, turn: float = 0.0) -> Loader:
    """Build a loader over ``split`` of the shard folder ``shards`` (see the module docstring); ``shards`` may also
    be a ``SplitShards`` already chosen (a subset of a split's shards). ``crop``: the share of the image side the
    model sees (``gzpipe.loaders.presets.preset_for``); ``channels``: 3 (RGB) or 1 (greyscale: ``to_grey``);
    ``turn``: an eval loader's rotation in degrees, warped from the stored pixels (``gzpipe.loaders.tta``)."""
    _check_channels(channels)
    if image_size < 8:
        raise GzpipeError(f"image_size must be at least 8, got {image_size}")
    if batch_size < 1:
        raise GzpipeError(f"batch_size must be at least 1, got {batch_size}")
    check_crop(crop)
    from gzpipe.device import resolve_device

    dev = device if isinstance(device, torch.device) else resolve_device(device or "auto")
    name = resolve_backend(backend, dev)
    r, w = dist_rank_world()
    rank, world = (r if rank is None else rank), (w if world_size is None else world_size)
    all_shards = shards if isinstance(shards, SplitShards) else split_shards(shards, split)
    spec = BACKENDS[name]
    mine = all_shards if spec.reads_shards_itself else all_shards.for_rank(rank, world, allow_empty=not train)
    module = importlib.import_module(spec.module)
    kwargs = dict(image_size=image_size, batch_size=batch_size, train=train, device=dev, workers=workers, seed=seed,
                  rank=rank, shuffle_buffer=shuffle_buffer, crop=crop, **_turned(turn, train))
    if spec.reads_shards_itself:
        kwargs["world"] = world
    batches = module.build(mine, **kwargs)
    loader = Loader(name, mine if not spec.reads_shards_itself else all_shards, batch_size, train,
                    world if spec.reads_shards_itself else 1, batches, channels)
    return loader


def _check_channels(channels: int) -> None:
    if channels not in (1, 3):
        raise GzpipeError(f"channels must be 1 (greyscale) or 3 (RGB), got {channels}")


@dataclass(frozen=True)
class Units:
    """Units of work that are not shards (anything with ``read()`` yielding sample dicts), for ``create_unit_loader``."""

    files: tuple
    samples: int


def create_unit_loader(units: Units, backend: str = "auto", image_size: int = 224, batch_size: int = 64, *,
                       device: str | torch.device | None = None, workers: int = 2,
                       crop: float = DEFAULT_CROP, channels: int = 3, turn: float = 0.0) -> Loader:
    """An eval-mode loader over ``units`` (e.g. `predict`'s chunks of image files), in their order, through the
    same backends (and so the same decoding, reduction and warp) as the shard loaders."""
    from gzpipe.device import resolve_device

    check_crop(crop)
    _check_channels(channels)
    dev = device if isinstance(device, torch.device) else resolve_device(device or "auto")
    name = resolve_backend(backend, dev, units=True)
    module = importlib.import_module(BACKENDS[name].module)
    batches = module.build(units, image_size=image_size, batch_size=batch_size, train=False, device=dev,
                           workers=workers, seed=0, rank=0, shuffle_buffer=1, crop=crop, **_turned(turn, False))
    return Loader(name, units, batch_size, False, 1, batches, channels)


def _turned(turn: float, train: bool) -> dict:
    """The backend option of an eval view's rotation, passed only when there is one (a backend registered by a
    plugin need not know it until a caller asks for a turned view)."""
    if not turn:
        return {}
    if train:
        raise GzpipeError("a turned view is for evaluation; training draws its own rotations")
    return {"turn": float(turn)}
