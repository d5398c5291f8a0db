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
    One conversion and two in-place passes (a fresh ``(x - mean) / std`` costs twice as much on the CPU)."""
    scale = torch.tensor([1.0 / (255.0 * s) for s in IMAGENET_STD], device=x.device, dtype=torch.float32)
    shift = torch.tensor([-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)], device=x.device, dtype=torch.float32)
    y = x.to(torch.float32)
    y.mul_(scale).add_(shift)
    return y.permute(0, 3, 1, 2)
