"""Where a CPU loader's time goes: each part of the `pil` path timed alone, per image, on the same galaxies.

* ``read``: tar reading and the shard's sha256 (the stream's own reader);
* ``decode``: the JPEG decode (OpenCV's libjpeg-turbo), at the DCT scale the warp needs;
* ``warp``: OpenCV's affine warp to the output size;
* ``normalise_sample``: one sample to float32, normalised (what a worker would do);
* ``normalise_batch``: the same per image, done once per uint8 batch (what the main process does);
* ``transfer_uint8`` / ``transfer_float32``: a DataLoader with the given workers handing over ready-made batches of
  each type (shared memory, pickling, the queue): the cost of moving a batch, without any work to make it;
* ``transform_ceiling``: workers / (decode + warp) per image, the rate if nothing but the transform cost anything;
* ``decode_ceiling``: workers / decode.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch


def _per_image(fn, n: int, repeats: int = 3) -> float:
    """Median milliseconds per image of ``fn()`` (which handles ``n`` images), after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) / n * 1e3)
    return statistics.median(times)


class _Ready(torch.utils.data.IterableDataset):
    """Hands out ready-made batches: what the DataLoader costs when making a batch costs nothing."""

    def __init__(self, batch: torch.Tensor, batches: int):
        self.batch, self.batches = batch, batches

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        share = self.batches // (info.num_workers if info else 1)
        for _ in range(share):
            yield self.batch.clone()


def _transfer(batch: torch.Tensor, workers: int, batches: int = 40) -> float:
    dl = torch.utils.data.DataLoader(_Ready(batch, batches), batch_size=None, num_workers=workers)
    n = 0
    t = time.perf_counter()
    for b in dl:
        n += len(b)
    return (time.perf_counter() - t) / max(n, 1) * 1e3


def time_split(shards: str | Path, split: str = "train", image_size: int = 224, workers: int = 2,
               batch_size: int = 64, images: int = 256) -> dict:
    from gzpipe.loaders.contract import normalise_nhwc_uint8 as normalise_batch
    from gzpipe.loaders.pil import decode_augment
    from gzpipe.loaders.presets import PRESETS, draw_affine
    from gzpipe.loaders.shards import iter_samples, split_shards

    sp = split_shards(shards, split)
    files = []
    for f in sp.files:
        files.append(f)
        if sum(x.samples for x in files) >= images:
            break
    samples = [s for f in files for s in iter_samples(f)]
    read = _per_image(lambda: [s for f in files for s in iter_samples(f)], len(samples))
    samples = samples[:images]
    n = len(samples)
    rng = np.random.default_rng(0)
    affines = [draw_affine(rng, True, PRESETS["train"]) for _ in samples]
    from gzpipe.loaders.pil import _need, decode as decode_image

    def decode_only():
        for s, a in zip(samples, affines):
            decode_image(s["jpg"], _need(a, image_size))

    def decode_and_warp():
        for s, a in zip(samples, affines):
            decode_augment(s["jpg"], a, image_size)

    decode = _per_image(decode_only, n)
    warp = _per_image(decode_and_warp, n) - decode
    imgs = [torch.from_numpy(decode_augment(s["jpg"], a, image_size)) for s, a in zip(samples, affines)]
    from gzpipe.loaders.presets import IMAGENET_MEAN, IMAGENET_STD

    scale = torch.tensor([1.0 / (255.0 * s) for s in IMAGENET_STD])
    shift = torch.tensor([-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)])

    def norm_samples():
        for im in imgs:
            im.to(torch.float32).mul_(scale).add_(shift)

    batch_u8 = torch.stack(imgs[:batch_size])

    def norm_batch():
        for _ in range(max(1, n // batch_size)):
            normalise_batch(batch_u8)

    out = {
        "read_ms": round(read, 4), "decode_ms": round(decode, 4), "warp_ms": round(warp, 4),
        "normalise_sample_ms": round(_per_image(norm_samples, n), 4),
        "normalise_batch_ms": round(_per_image(norm_batch, max(1, n // batch_size) * len(batch_u8)), 4),
        "collate_float32_ms": round(_per_image(lambda: torch.stack([i.float() for i in imgs[:batch_size]]),
                                               batch_size), 4),
        "transfer_uint8_ms": round(_transfer(batch_u8, workers), 4),
        "transfer_float32_ms": round(_transfer(batch_u8.float(), workers), 4),
    }
    w = max(1, workers)
    out["transform_ceiling_images_per_s"] = round(w / (decode + warp) * 1e3, 1)
    out["decode_ceiling_images_per_s"] = round(w / decode * 1e3, 1)
    out["images"] = n
    return out
