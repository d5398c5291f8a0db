"""Test-time augmentation as views of an already-decoded batch, the same for every loader backend.

* ``dihedral``: the 8 symmetries of the square (rotations by 0/90/180/270 degrees, each with and without a mirror).
  On the centred, square eval crop they are exact permutations of the pixels - no interpolation - and a galaxy's
  morphology does not change under them. ``n`` picks the first n of: identity, rot90, rot180, rot270, mirror,
  mirror+rot90, mirror+rot180, mirror+rot270.
* ``rotate``: ``n`` rotations evenly spaced over the circle, every other one mirrored (bilinear, corners black): the
  arbitrary-angle TTA of earlier releases, kept as an option.

View 0 is always the plain eval view.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from gzpipe.errors import GzpipeError
from gzpipe.loaders.presets import IMAGENET_MEAN, IMAGENET_STD

KINDS = ("dihedral", "rotate")
DIHEDRAL = tuple((k, False) for k in range(4)) + tuple((k, True) for k in range(4))


def check_tta(n: int, kind: str) -> None:
    if kind not in KINDS:
        raise GzpipeError(f"tta_kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if n < 1:
        raise GzpipeError(f"tta must be at least 1, got {n}")
    if kind == "dihedral" and n > 8:
        raise GzpipeError(f"tta {n}: the dihedral group has 8 views; use the rotate kind for more")


def dihedral(x: torch.Tensor, k: int, mirror: bool) -> torch.Tensor:
    """N x C x H x W -> the view rotated by k quarter turns (after a left-right mirror when ``mirror``)."""
    if mirror:
        x = torch.flip(x, dims=(3,))
    return torch.rot90(x, k, dims=(2, 3)) if k % 4 else x


def _rotate(x: torch.Tensor, theta: float, mirror: bool) -> torch.Tensor:
    c, s = math.cos(theta), math.sin(theta)
    f = -1.0 if mirror else 1.0
    a = torch.tensor([[c * f, -s, 0.0], [s * f, c, 0.0]], dtype=torch.float32, device=x.device)
    grid = F.affine_grid(a.expand(len(x), 2, 3), list(x.shape), align_corners=False)
    black = torch.tensor([-m / sd for m, sd in zip(IMAGENET_MEAN, IMAGENET_STD)], device=x.device).view(1, 3, 1, 1)
    # grid_sample pads with zeros; shift so that its zero is a black pixel, as the loaders' warps fill
    return F.grid_sample(x.float() - black, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + black


def views(x: torch.Tensor, n: int = 1, kind: str = "dihedral") -> list[torch.Tensor]:
    """``n`` views of a normalised N x 3 x H x W batch (the first is ``x`` itself)."""
    check_tta(n, kind)
    if kind == "dihedral":
        return [dihedral(x, k, m) for k, m in DIHEDRAL[:n]]
    return [x] + [_rotate(x, 2 * math.pi * i / n, i % 2 == 1) for i in range(1, n)]
