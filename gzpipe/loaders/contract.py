"""The batch every loader backend returns, and the normalisation they share."""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

import torch

from gzpipe.loaders.presets import IMAGENET_MEAN, IMAGENET_STD


@dataclass
class Batch:
    """images: N x C x H x W float32 (C = 3, or 1 for a greyscale encoder: ``to_grey``), channels-last, normalised,
    on the training device;
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

    On the GPU: one conversion and two in-place passes. On the CPU: one pass of OpenCV's per-channel look-up table
    (256 float32 values a channel, the same float32 arithmetic as the GPU path) into a reused output buffer. Both
    matter on a CPU: torch's broadcast over a last dimension of 3 does not vectorise (0.77 ms per 224 px image
    against 0.16 ms), and a fresh 38 MB float32 batch costs as much in page faults as the look-up itself
    (``gzpipe bench loader``'s time split, benchmarks/RESULTS.md)."""
    if x.device.type != "cpu" or x.dim() != 4 or x.shape[-1] != 3 or x.dtype != torch.uint8:
        scale, shift = normalisation(x.device)
        y = x.to(torch.float32)
        y.mul_(scale).add_(shift)
        return y.permute(0, 3, 1, 2)
    import cv2

    cv2.setNumThreads(1)  # as in loaders/pil.py: no OpenCV thread pool in a process that forks loader workers
    src = x.contiguous().numpy()
    out = _OUTPUTS.take(src.shape)
    for i in range(src.shape[0]):
        cv2.LUT(src[i], _LUT, dst=out[i])
    return torch.from_numpy(out).permute(0, 3, 1, 2)


_ON_DEVICE: dict = {}


def normalisation(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) of the ImageNet normalisation for uint8 pixels (x * scale + shift), made on ``device`` once:
    built from a Python list for every batch, each was a blocking host-to-device copy (a sync) per batch."""
    key = str(device)
    if key not in _ON_DEVICE:
        scale = torch.tensor([1.0 / (255.0 * s) for s in IMAGENET_STD], dtype=torch.float32)
        shift = torch.tensor([-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)], dtype=torch.float32)
        _ON_DEVICE[key] = (scale.to(device), shift.to(device))
    return _ON_DEVICE[key]


def _lut() -> np.ndarray:
    """1 x 256 x 3 float32: value v of channel c -> v * scale[c] + shift[c], computed in float32 as on the GPU."""
    scale = np.array([1.0 / (255.0 * s) for s in IMAGENET_STD], np.float32)
    shift = np.array([-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)], np.float32)
    return (np.arange(256, dtype=np.float32)[:, None] * scale + shift)[None].astype(np.float32)


class _Buffers:
    """Output arrays handed back once their batch is gone. Each batch gets a fresh view of a held array, and torch
    keeps the view alive as long as any tensor of the batch (or a view of one) lives; a dead weak reference to the
    view means every consumer has dropped the batch, so its array is safe to write over. A consumer that keeps its
    batches (a list of them) keeps their arrays, and new ones are made. At most ``keep`` arrays are held."""

    def __init__(self, keep: int = 3):
        self.keep = keep
        self._held: list[tuple[np.ndarray, weakref.ref]] = []

    def take(self, shape: tuple) -> np.ndarray:
        for i, (arr, lent) in enumerate(self._held):
            if arr.shape == shape and lent() is None:
                view = arr.view()
                self._held[i] = (arr, weakref.ref(view))
                return view
        arr = np.empty(shape, np.float32)
        view = arr.view()
        self._held.append((arr, weakref.ref(view)))
        if len(self._held) > self.keep:
            self._held.pop(0)
        return view


_LUT = _lut()
_OUTPUTS = _Buffers()


# Greyscale: ITU-R 601 luma of the RGB picture (what Pillow's "L" is), normalised with the same weights' share of
# ImageNet's mean and std, so that a grey image normalises as its RGB copy would on average.
GREY_WEIGHTS = (0.299, 0.587, 0.114)
GREY_MEAN = sum(w * m for w, m in zip(GREY_WEIGHTS, IMAGENET_MEAN))
GREY_STD = sum(w * s for w, s in zip(GREY_WEIGHTS, IMAGENET_STD))


def to_grey(images: torch.Tensor) -> torch.Tensor:
    """A normalised N x 3 x H x W batch -> the normalised N x 1 x H x W greyscale batch (for 1-channel encoders such
    as Zoobot's greyscale ones). Linear in the normalised values: one weighted sum, no un-normalising pass (the
    offsets cancel, since GREY_MEAN is the weighted mean)."""
    key = ("grey", str(images.device), images.dtype)
    if key not in _ON_DEVICE:
        a = torch.tensor([w * s / GREY_STD for w, s in zip(GREY_WEIGHTS, IMAGENET_STD)], dtype=images.dtype)
        _ON_DEVICE[key] = a.to(images.device).view(1, 3, 1, 1)
    grey = (images * _ON_DEVICE[key]).sum(dim=1, keepdim=True)
    return grey.contiguous(memory_format=torch.channels_last)
