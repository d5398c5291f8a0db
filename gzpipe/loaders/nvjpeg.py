"""`nvjpeg` backend: tar samples are read by CPU workers, JPEGs decoded in batches by
``torchvision.io.decode_jpeg(device="cuda")`` (nvJPEG) and augmented with torch ops on the GPU.

The warp (``warp_batch``) is the preset's affine through ``affine_grid`` + ``grid_sample``; it runs on any device,
which is how CI checks it against the PIL backend without a GPU.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from gzpipe.loaders.contract import Batch
from gzpipe.loaders.presets import IMAGENET_MEAN, IMAGENET_STD, PRESETS, draw_affine
from gzpipe.loaders.stream import ShardStream, rebatch
from gzpipe.signals import dataloader_worker_init


def warp_batch(images: list[torch.Tensor], a: np.ndarray, image_size: int) -> torch.Tensor:
    """Decoded uint8 images (each 3 x H x W, one device) + affines (N x 2 x 2, normalised coordinates) ->
    N x 3 x S x S float32, normalised, channels-last."""
    dev = images[0].device
    theta = torch.zeros((len(images), 2, 3), dtype=torch.float32, device=dev)
    theta[:, :, :2] = torch.as_tensor(a, dtype=torch.float32).to(dev, non_blocking=True)
    grid = F.affine_grid(theta, [len(images), 3, image_size, image_size], align_corners=False)
    if all(im.shape == images[0].shape for im in images):
        x = torch.stack(images).to(torch.float32)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    else:  # mixed stored sizes: warp one by one (normalised coordinates make the matrix size-independent)
        out = torch.cat([F.grid_sample(im[None].to(torch.float32), grid[i : i + 1], mode="bilinear",
                                       padding_mode="zeros", align_corners=False) for i, im in enumerate(images)])
    mean = torch.tensor(IMAGENET_MEAN, device=dev).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(IMAGENET_STD, device=dev).view(1, 3, 1, 1) * 255.0
    return ((out - mean) / std).contiguous(memory_format=torch.channels_last)


class _Raw:
    """Worker side: no decoding, only the JPEG bytes and the affine drawn for this sample."""

    def __init__(self, train: bool):
        self.train = train

    def __call__(self, s: dict, rng: np.random.Generator):
        a = draw_affine(rng, self.train, PRESETS["train" if self.train else "eval"])
        jpg = torch.frombuffer(bytearray(s["jpg"]), dtype=torch.uint8)
        return jpg, torch.as_tensor(a, dtype=torch.float32), torch.from_numpy(s["targets"]), torch.from_numpy(s["mask"]), s["id"]


def _collate(items):
    jpgs, a, t, m, ids = zip(*items)
    return list(jpgs), torch.stack(a), torch.stack(t), torch.stack(m), list(ids)


def build(shards, *, image_size: int, batch_size: int, train: bool, device: torch.device, workers: int, seed: int,
          rank: int, shuffle_buffer: int):
    from torchvision.io import ImageReadMode, decode_jpeg

    if device.type != "cuda":
        raise RuntimeError("the nvjpeg backend decodes on a CUDA device; use --backend pil or dali on a CPU")
    ds = ShardStream(shards, _Raw(train), train, seed, rank, shuffle_buffer)
    dl = DataLoader(ds, batch_size=batch_size, num_workers=workers, drop_last=False, generator=torch.Generator().manual_seed(seed), collate_fn=_collate,
                    worker_init_fn=dataloader_worker_init,
                    pin_memory=False, persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None)

    def batches(epoch: int):
        ds.epoch = epoch
        for jpgs, a, targets, mask, ids in rebatch(iter(dl), batch_size, drop_last=train):
            decoded = decode_jpeg(jpgs, mode=ImageReadMode.RGB, device=device)  # one batched nvJPEG call
            images = warp_batch(decoded, a.numpy(), image_size)
            yield Batch(images, targets.to(device, non_blocking=True), mask.to(device, non_blocking=True).bool(),
                        list(ids))

    return batches
