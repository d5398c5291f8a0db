"""The CPU-side sample stream shared by the `pil` and `nvjpeg` backends: a torch IterableDataset built as a chain
of small generator stages (webdataset style). Each DataLoader worker reads its own whole units.

  units (shard files, or `predict`'s chunks of image files; shuffled per epoch in train)
  -> this rank's / this worker's units -> samples (dicts: key, id, jpg, targets, mask [, error])
  -> [train] seeded shuffle buffer -> ``transform(sample, rng)`` -> what the DataLoader collates

A unit is anything with ``read()`` yielding sample dicts. Shards are verified data, so a sample that fails to decode
there means a damaged shard (an error naming it). Units marked ``tolerant`` (files a user points `predict` at) turn
such a sample into an error sample instead: ``transform.failed(sample, reason)`` stands in for it.
"""

from __future__ import annotations

import multiprocessing as mp
import random
from typing import Callable, Iterator

import torch
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from gzpipe.loaders.presets import epoch_rng
from gzpipe.errors import GzpipeError
from gzpipe.loaders.shards import SplitShards


class ShardStream(IterableDataset):
    def __init__(self, shards: SplitShards, transform: Callable, train: bool, seed: int, rank: int,
                 shuffle_buffer: int = 1000):
        self.shards, self.transform, self.train = shards, transform, train
        self.seed, self.rank, self.shuffle_buffer = seed, rank, shuffle_buffer
        # Shared memory, so persistent workers (started once) see the epoch the main process sets
        self._epoch = mp.Value("q", 0, lock=False)

    @property
    def epoch(self) -> int:
        return int(self._epoch.value)

    @epoch.setter
    def epoch(self, value: int) -> None:
        self._epoch.value = int(value)

    def __iter__(self) -> Iterator:
        info = get_worker_info()
        wid, nworkers = (info.id, info.num_workers) if info else (0, 1)
        if info is not None:
            torch.set_num_threads(1)  # one decode per worker process; intra-op threads would oversubscribe
        files = list(self.shards.files)
        if self.train:  # the same shard order on every worker, so the split below stays disjoint
            random.Random(int(epoch_rng(self.seed, self.epoch, self.rank).integers(2**62))).shuffle(files)
        mine = files[wid::nworkers]
        rng = epoch_rng(self.seed, self.epoch, self.rank, wid)
        # stream: sample dicts {key, id, jpg, targets, mask [, error]}
        stream: Iterator = (s for f in mine for s in f.read())
        if self.train:
            # stream: the same dicts, shuffled in a seeded buffer (shards were shuffled at write time too)
            shuffle = wds.shuffle(self.shuffle_buffer, initial=min(self.shuffle_buffer, 100),
                                  rng=random.Random(int(rng.integers(2**62))))
            stream = shuffle(stream)
        # stream: whatever the backend's transform returns (decoded+augmented images, or raw JPEG bytes)
        for s in stream:
            if s.get("error"):
                yield self.transform.failed(s, s["error"])
                continue
            try:
                out = self.transform(s, rng)
            except Exception as e:  # noqa: BLE001 - any decoding failure: name the sample and its shard
                if s.get("tolerant"):
                    yield self.transform.failed(s, _reason(e, s))
                    continue
                raise GzpipeError(f"sample {s['key']} in shard {s['shard']} cannot be decoded ({type(e).__name__}: "
                                  f"{e}); the shard was damaged after it was written: `gzpipe verify` lists every "
                                  "damaged shard and how to rebuild them") from None
            yield out


def _reason(e: Exception, s: dict) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if "cannot identify image file" in msg:
        msg = "not an image in a format Pillow reads"
    return f"cannot read image {s.get('name', s['key'])}: {msg}"


def _unwrapped(batches: Iterator[tuple]) -> Iterator[tuple]:
    """A GzpipeError raised in a DataLoader worker reaches the main process with the worker's traceback in its
    message; keep only gzpipe's own one-line message."""
    it = iter(batches)
    while True:
        try:
            b = next(it)
        except StopIteration:
            return
        except GzpipeError as e:
            msg = str(e)
            if msg.startswith("Caught ") and "GzpipeError: " in msg:
                raise GzpipeError(msg.rsplit("GzpipeError: ", 1)[1].strip()) from None
            raise
        yield b


def rebatch(batches: Iterator[tuple], batch_size: int, drop_last: bool) -> Iterator[tuple]:
    """Collated batches from several workers -> batches of exactly ``batch_size`` (the last may be short unless
    ``drop_last``). Each worker's final batch is partial; merging them here loses at most one batch per epoch
    instead of one per worker. Fields are tensors (concatenated) or lists (extended)."""
    batches = _unwrapped(batches)
    pending: list[tuple] = []
    have = 0
    for b in batches:
        n = len(b[-1])
        if n == batch_size and not pending:
            yield b
            continue
        pending.append(b)
        have += n
        while have >= batch_size:
            merged = _merge(pending)
            yield _take(merged, 0, batch_size)
            rest = _take(merged, batch_size, have)
            have -= batch_size
            pending = [rest] if have else []
    if pending and not drop_last:
        yield _merge(pending)


def _merge(parts: list[tuple]) -> tuple:
    if len(parts) == 1:
        return parts[0]
    return tuple(torch.cat(f) if isinstance(f[0], torch.Tensor) else [x for p in f for x in p] for f in zip(*parts))


def _take(b: tuple, start: int, stop: int) -> tuple:
    return tuple(f[start:stop] for f in b)
