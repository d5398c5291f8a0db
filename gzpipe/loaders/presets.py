"""Augmentation presets, defined once as data; every loader backend implements them the same way.

Both presets are one affine map from output pixels to input pixels (rotation, flips, a crop around the centre,
and the resize to ``image_size``), so each backend does a single bilinear warp: the `pil` backend's OpenCV
``warpAffine`` (after Pillow decodes, with JPEG DCT scaling), DALI's ``fn.warp_affine`` and the `nvjpeg` backend's
``grid_sample`` on the GPU all receive the matrix from ``pixel_matrix``.
That is what makes the backends agree to within interpolation rounding.

Normalised coordinates run from -1 to 1 across the image's centred square (``gzpipe.pixels.square_box``: the
largest square that fits, at integer offsets), so a non-square image is never stretched: every backend sees the same
square that `gzpipe shard` cuts (pixel centres at (2i + 1) / n - 1 across a square image).
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
    """Deterministic: the centred crop at the mean train scale, resized; ``turn_deg`` rotates it (the views of
    ``gzpipe.loaders.tta``'s ``angles`` kind, each warped from the stored pixels)."""

    crop_scale: float = 0.8
    turn_deg: float = 0.0


PRESETS = {"train": TrainPreset(), "eval": EvalPreset()}
#: The share of the cutout's side the model sees (the eval preset's crop): GZ2's cutouts are cut at a multiple of each
#: galaxy's Petrosian radius, so the galaxy sits in the central third to half and the rest is mostly sky. A smaller
#: crop spends the same pixels on the galaxy: `--crop 0.5` at 48 px gives it 1.6x the pixels of the default 0.8.
DEFAULT_CROP = PRESETS["eval"].crop_scale
CROP_RANGE = (0.2, 1.0)


def check_crop(crop: float) -> None:
    from gzpipe.errors import GzpipeError

    if not CROP_RANGE[0] <= crop <= CROP_RANGE[1]:
        raise GzpipeError(f"crop must be between {CROP_RANGE[0]:g} and {CROP_RANGE[1]:g} (the share of the image side "
                          f"the model sees), got {crop:g}")


def preset_for(train: bool, crop: float = DEFAULT_CROP, turn: float = 0.0):
    """The train or eval preset with its centred crop scaled to ``crop`` (the eval crop; train draws around it in
    the same proportion as the defaults, 0.7-0.9 around 0.8, never beyond the image). ``turn``: the eval view's
    rotation in degrees (train draws its own)."""
    if not train and turn:
        return EvalPreset(crop_scale=crop, turn_deg=float(turn))
    if crop == DEFAULT_CROP:
        return PRESETS["train" if train else "eval"]
    if not train:
        return EvalPreset(crop_scale=crop)
    lo, hi = PRESETS["train"].crop_scale
    k = crop / DEFAULT_CROP
    return TrainPreset(crop_scale=(lo * k, min(hi * k, 1.0)))


def draw_affine(rng: np.random.Generator | None, train: bool, preset=None) -> np.ndarray:
    """A 2x2 matrix mapping normalised output coordinates to normalised input coordinates."""
    if not train:
        p = preset or PRESETS["eval"]
        s, t = p.crop_scale, np.radians(p.turn_deg)
        if not t:
            return np.array([[s, 0.0], [0.0, s]])
        return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) * s
    p = preset or PRESETS["train"]
    assert rng is not None  # invariant: train mode always passes its generator
    theta = np.radians(rng.uniform(*p.rotation_deg))
    fx = -1.0 if rng.random() < p.hflip else 1.0
    fy = -1.0 if rng.random() < p.vflip else 1.0
    s = rng.uniform(*p.crop_scale)
    c, si = np.cos(theta), np.sin(theta)
    return np.array([[c, -si], [si, c]]) @ np.diag([fx * s, fy * s])


def square_affine(a: np.ndarray, in_w, in_h) -> tuple[np.ndarray, np.ndarray]:
    """Affines ``a`` (N x 2 x 2, normalised over each image's centred square) as (linear parts N x 2 x 2, offsets
    N x 2) in the images' own normalised coordinates (-1..1 across each axis), for warps that take those
    (``grid_sample``): x_img = lin @ p_out + off. ``in_w`` / ``in_h``: the N images' sizes (arrays or numbers)."""
    w, h = np.broadcast_arrays(np.asarray(in_w, dtype=np.int64), np.asarray(in_h, dtype=np.int64))
    side = np.minimum(w, h)
    x0, y0 = (w - side) // 2, (h - side) // 2  # gzpipe.pixels.square_box, for many sizes at once
    scale = np.stack([side / w, side / h], axis=-1)
    centre = np.stack([(2 * x0 + side) / w - 1.0, (2 * y0 + side) / h - 1.0], axis=-1)  # 0, 0 for a square
    return scale[..., :, None] * np.asarray(a, dtype=np.float64), centre


def pixel_matrix(a: np.ndarray, in_w: int, in_h: int, out_size: int) -> np.ndarray:
    """The 2x3 destination->source matrix in pixel coordinates (pixel i spans [i, i + 1), centre i + 0.5), over the
    image's centred square (side s at x0, y0)."""
    from gzpipe.pixels import square_box

    # x_in = c + p_in * s / 2 ;  p_out = 2 * x_out / S - 1 ;  p_in = A p_out ;  c = (x0 + s / 2, y0 + s / 2)
    x0, y0, side = square_box(in_w, in_h)
    c = np.array([x0 + side / 2.0, y0 + side / 2.0])
    lin = a * (side / out_size)
    off = c - (side / 2.0) * (a @ np.ones(2))
    return np.hstack([lin, off[:, None]])


def epoch_rng(seed: int, epoch: int, *stream: int) -> np.random.Generator:
    """The generator of one stream (rank, worker, ...) in one epoch: reproducible for a seed."""
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, *stream]))
