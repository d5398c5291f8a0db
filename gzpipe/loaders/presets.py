"""Augmentation presets, defined once as data; every loader backend implements them the same way.

Both presets are one affine map from output pixels to input pixels (rotation, flips, a crop around the centre,
and the resize to ``image_size``), so each backend does a single bilinear warp: the `pil` backend's OpenCV
``warpAffine`` (after Pillow decodes, with JPEG DCT scaling), DALI's ``fn.warp_affine`` and the `nvjpeg` backend's
``grid_sample`` on the GPU all receive the matrix from ``pixel_matrix``.
That is what makes the backends agree to within interpolation rounding.

Normalised coordinates run from -1 to 1 across the image (pixel centres at (2i + 1) / n - 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the backbones start from ImageNet weights
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True, kw_only=True)
class TrainPreset:
    """Galaxies have no preferred orientation: any angle, either flip; a random-scale crop around the centre."""

    rotation_deg: tuple[float, float] = (-180.0, 180.0)
    hflip: float = 0.5
    vflip: float = 0.5
    crop_scale: tuple[float, float] = (0.7, 0.9)  # side of the centred crop as a share of the image side


@dataclass(frozen=True, kw_only=True)
class EvalPreset:
    """Deterministic: the centred crop at the mean train scale, resized."""

    crop_scale: float = 0.8


PRESETS = {"train": TrainPreset(), "eval": EvalPreset()}


def draw_affine(rng: np.random.Generator | None, train: bool, preset=None) -> np.ndarray:
    """A 2x2 matrix mapping normalised output coordinates to normalised input coordinates."""
    if not train:
        s = (preset or PRESETS["eval"]).crop_scale
        return np.array([[s, 0.0], [0.0, s]])
    p = preset or PRESETS["train"]
    assert rng is not None  # invariant: train mode always passes its generator
    theta = np.radians(rng.uniform(*p.rotation_deg))
    fx = -1.0 if rng.random() < p.hflip else 1.0
    fy = -1.0 if rng.random() < p.vflip else 1.0
    s = rng.uniform(*p.crop_scale)
    c, si = np.cos(theta), np.sin(theta)
    return np.array([[c, -si], [si, c]]) @ np.diag([fx * s, fy * s])


def pixel_matrix(a: np.ndarray, in_w: int, in_h: int, out_size: int) -> np.ndarray:
    """The 2x3 destination->source matrix in pixel coordinates (pixel i spans [i, i + 1), centre i + 0.5)."""
    # x_in = (p_in + 1) * W / 2 ;  p_out = 2 * x_out / S - 1 ;  p_in = A p_out
    scale_in = np.diag([in_w / 2.0, in_h / 2.0])
    lin = scale_in @ a * (2.0 / out_size)
    off = scale_in @ (np.ones(2) - a @ np.ones(2))
    return np.hstack([lin, off[:, None]])


def epoch_rng(seed: int, epoch: int, *stream: int) -> np.random.Generator:
    """The generator of one stream (rank, worker, ...) in one epoch: reproducible for a seed."""
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, *stream]))
