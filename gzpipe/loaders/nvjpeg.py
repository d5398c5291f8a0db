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
from gzpipe.stopping import dataloader_worker_init


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
    """Worker side: no decoding of JPEGs, only their bytes (1-D uint8) and the affine drawn for this sample. Other
    formats (a PNG given to `predict`) are decoded here, to 3 x H x W uint8; a sample that failed is 3 x 1 x 1."""

    def __init__(self, train: bool):
        self.train = train

    def __call__(self, s: dict, rng: np.random.Generator):
        a = draw_affine(rng, self.train, PRESETS["train" if self.train else "eval"])
        data = s["jpg"]
        if data[:3] == b"\xff\xd8\xff":
            payload = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        else:
            from PIL import Image
            import io

            payload = torch.from_numpy(np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))).permute(2, 0, 1)
        return payload, torch.as_tensor(a, dtype=torch.float32), torch.from_numpy(s["targets"]), \
            torch.from_numpy(s["mask"]), s["id"], ""

    def failed(self, s: dict, reason: str):
        a = torch.as_tensor(draw_affine(None, False), dtype=torch.float32)
        return torch.zeros((3, 1, 1), dtype=torch.uint8), a, torch.from_numpy(s["targets"]), \
            torch.from_numpy(s["mask"]), s["id"], reason


def _collate(items):
    payloads, a, t, m, ids, errors = zip(*items)
    return list(payloads), torch.stack(a), torch.stack(t), torch.stack(m), list(ids), list(errors)


def _decode(payloads: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """JPEG bytes decoded in one batched nvJPEG call; images decoded by the workers moved to the device."""
    from torchvision.io import ImageReadMode, decode_jpeg

    jpeg = [i for i, p in enumerate(payloads) if p.dim() == 1]
    out = [p.to(device, non_blocking=True) if p.dim() == 3 else None for p in payloads]
    if jpeg:
        for i, im in zip(jpeg, decode_jpeg([payloads[i] for i in jpeg], mode=ImageReadMode.RGB, device=device)):
            out[i] = im
    return out


def build(shards, *, image_size: int, batch_size: int, train: bool, device: torch.device, workers: int, seed: int,
          rank: int, shuffle_buffer: int):
    if device.type != "cuda":
        raise RuntimeError("the nvjpeg loader backend decodes on a CUDA device; on the CPU use dali or pil")
    ds = ShardStream(shards, _Raw(train), train, seed, rank, shuffle_buffer)
    dl = DataLoader(ds, batch_size=batch_size, num_workers=workers, drop_last=False, generator=torch.Generator().manual_seed(seed), collate_fn=_collate,
                    worker_init_fn=dataloader_worker_init,
                    pin_memory=False, persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None)

    def batches(epoch: int):
        ds.epoch = epoch
        for payloads, a, targets, mask, ids, errors in rebatch(iter(dl), batch_size, drop_last=train):
            images = warp_batch(_decode(payloads, device), a.numpy(), image_size)
            yield Batch(images, targets.to(device, non_blocking=True), mask.to(device, non_blocking=True).bool(),
                        list(ids), list(errors) if any(errors) else None)

    return batches
