"""Where a CPU loader's time goes: each part of the `pil` path timed alone, per image, on the same galaxies.

* ``read``: tar reading and the shard's sha256 (the stream's own reader);
* ``decode``: the JPEG decode (OpenCV's libjpeg-turbo), at the DCT scale the warp needs;
* ``warp``: OpenCV's affine warp to the output size;
* ``normalise_sample``: one sample to float32, normalised (what a worker would do);
* ``normalise_batch``: the same per image, done once per uint8 batch (what the main process does);
* ``transfer_uint8`` / ``transfer_float32``: a DataLoader with the given workers handing over ready-made images of
  each type (uint8 into the backend's reused shared-memory buffers, float32 into fresh shared memory per batch as
  the DataLoader does by default; pickling, the queue): the cost of moving a batch, without any work to make it;
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
    """Hands out ready-made images: what the DataLoader costs when making them costs nothing."""

    def __init__(self, image: torch.Tensor, images: int):
        self.image, self.images = image, images
        self.targets, self.mask = torch.zeros(30), torch.ones(30, dtype=torch.bool)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        for i in range(self.images // (info.num_workers if info else 1)):
            yield self.image, self.targets, self.mask, str(i), ""


def _transfer(image: torch.Tensor, workers: int, batch_size: int, images: int = 2560) -> float:
    """Milliseconds per image to hand batches of ``image`` from the workers to the main process the way the `pil`
    backend does (uint8 into reused shared-memory buffers, gzpipe/loaders/slots.py); float32 images go the
    DataLoader's default way (fresh shared memory per batch), as the backend did before."""
    from gzpipe.loaders.slots import BatchSlots

    slots = BatchSlots(workers, batch_size, per_worker=6)
    collate = slots.collate if image.dtype == torch.uint8 else None
    dl = torch.utils.data.DataLoader(_Ready(image, images), batch_size=batch_size, num_workers=workers,
                                     collate_fn=collate, prefetch_factor=4 if workers else None)
    n = 0
    t = time.perf_counter()
    for b in dl:
        n += len(b[0])
        if collate is not None:
            slots.release(b[-1])
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
        "transfer_uint8_ms": round(_transfer(imgs[0], workers, batch_size), 4),
        "transfer_float32_ms": round(_transfer(imgs[0].float(), workers, batch_size), 4),
    }
    w = max(1, workers)
    out["transform_ceiling_images_per_s"] = round(w / (decode + warp) * 1e3, 1)
    out["decode_ceiling_images_per_s"] = round(w / decode * 1e3, 1)
    out["images"] = n
    return out
