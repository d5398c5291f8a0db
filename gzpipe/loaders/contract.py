"""The batch every loader backend returns, and the normalisation they share."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gzpipe.loaders.presets import IMAGENET_MEAN, IMAGENET_STD


@dataclass
class Batch:
    """images: N x 3 x H x W float32, channels-last, normalised, on the training device;
    targets: N x 30 float32 (masked entries are 0); mask: N x 30 bool (True = valid target); ids: N strings;
    errors: None, or N strings (empty, or why that sample could not be decoded: its image is black) - only for
    inputs that are not shards (`predict`'s files), where one bad file must not stop the rest."""

    images: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    ids: list[str]
    errors: list[str] | None = None

    def __len__(self) -> int:
        return len(self.ids)


def normalise_nhwc_uint8(x: torch.Tensor) -> torch.Tensor:
    """N x H x W x 3 uint8 -> N x 3 x H x W float32 normalised; the permute of an NHWC tensor *is* channels-last.

    On the GPU: one conversion and two in-place passes. On the CPU, OpenCV's per-channel multiply (straight from
    uint8 to float32) and add, image by image while it is in cache: 0.26 ms per 224 px image on this CPU against
    0.77 ms for the same three passes in torch, whose broadcast over a last dimension of 3 does not vectorise
    (``gzpipe bench loader``'s time split, benchmarks/RESULTS.md)."""
    if x.device.type != "cpu" or x.dim() != 4 or x.shape[-1] != 3 or x.dtype != torch.uint8:
        scale = torch.tensor([1.0 / (255.0 * s) for s in IMAGENET_STD], device=x.device, dtype=torch.float32)
        shift = torch.tensor([-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)], device=x.device,
                             dtype=torch.float32)
        y = x.to(torch.float32)
        y.mul_(scale).add_(shift)
        return y.permute(0, 3, 1, 2)
    import cv2
    import numpy as np

    cv2.setNumThreads(1)  # as in loaders/pil.py: no OpenCV thread pool in a process that forks loader workers
    src = x.contiguous().numpy()
    out = np.empty(src.shape, np.float32)
    for i in range(src.shape[0]):
        cv2.multiply(src[i], _CV_SCALE, dst=out[i], dtype=cv2.CV_32F)
        cv2.add(out[i], _CV_SHIFT, dst=out[i])
    return torch.from_numpy(out).permute(0, 3, 1, 2)


_CV_SCALE = tuple(1.0 / (255.0 * s) for s in IMAGENET_STD) + (0.0,)
_CV_SHIFT = tuple(-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)) + (0.0,)
