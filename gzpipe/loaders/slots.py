"""Batch buffers in shared memory that DataLoader workers reuse, instead of a fresh one for every batch.

A DataLoader worker's default collation stacks a batch into newly created shared memory: at 64 x 224 px x 3 that
is 9.6 MB of fresh pages, each faulted in and zeroed by the kernel before the copy - about 0.1 ms per image on
this CPU, a fifth of the transform itself (``gzpipe bench loader``, benchmarks/RESULTS.md). Here each worker
keeps a ring of full-batch buffers and writes each batch straight into one; the main process says when it is done
with a buffer through a shared flag per buffer, so a worker never writes over a batch that is still being read.

Rules that keep it safe:
* a worker takes a buffer only when its flag is clear, and sets it before writing; when every flag of its ring
  is set it makes the batch in fresh shared memory as the DataLoader would (it never waits, so it cannot
  deadlock with a main process that stopped reading);
* only full batches use a buffer; a partial batch (a worker's last) is collated as usual;
* the main process clears a batch's flag once the batch has been consumed (normalised into a new array on the
  CPU, or copied to pinned memory / the GPU), and clears every flag before a new epoch's iteration starts: a
  batch left in flight by an epoch that ended early is never read (the DataLoader drops it).
"""

from __future__ import annotations

import multiprocessing as mp

import torch
from torch.utils.data import default_collate, get_worker_info


class BatchSlots:
    """``collate`` runs in the workers; ``release`` / ``reset`` in the main process."""

    def __init__(self, workers: int, batch_size: int, per_worker: int):
        self.batch_size, self.per_worker = batch_size, per_worker
        # One flag per buffer, in shared memory created before the workers start (they inherit it)
        self.flags = mp.Array("b", max(1, workers) * per_worker, lock=False)
        self._ring: list[torch.Tensor] | None = None  # the worker's own buffers, made on its first full batch
        self._turn = 0

    def collate(self, samples: list[tuple]) -> tuple:
        """Samples (image H x W x 3 uint8, targets, mask, id, error) -> the batch, plus the buffer's flag index
        (-1: no buffer, an ordinary batch)."""
        info = get_worker_info()
        images = [s[0] for s in samples]
        rest = default_collate([s[1:] for s in samples])
        if info is None or len(samples) != self.batch_size:
            return (torch.stack(images), *rest, -1)
        if self._ring is None:
            self._ring = [torch.empty((self.batch_size, *images[0].shape), dtype=images[0].dtype).share_memory_()
                          for _ in range(self.per_worker)]
        for step in range(self.per_worker):
            k = (self._turn + step) % self.per_worker
            flag = info.id * self.per_worker + k
            if not self.flags[flag]:
                self._turn = (k + 1) % self.per_worker
                self.flags[flag] = 1
                out = self._ring[k]
                torch.stack(images, out=out)
                return (out, *rest, flag)
        # every buffer is still held (the main process is behind, or an epoch ended early with batches in
        # flight): never wait for one, make the batch the ordinary way
        return (torch.stack(images), *rest, -1)

    def release(self, flag: int) -> None:
        if flag >= 0:
            self.flags[flag] = 0

    def reset(self) -> None:
        self.flags[:] = bytes(len(self.flags))
