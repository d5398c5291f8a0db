"""Test-time augmentation as views of an already-decoded batch, the same for every loader backend.

* ``dihedral``: the 8 symmetries of the square (rotations by 0/90/180/270 degrees, each with and without a mirror).
  On the centred, square eval crop they are exact permutations of the pixels - no interpolation - and a galaxy's
  morphology does not change under them. ``n`` picks the first n of: identity, rot90, rot180, rot270, mirror,
  mirror+rot90, mirror+rot180, mirror+rot270.
* ``rotate``: ``n`` rotations evenly spaced over the circle, every other one mirrored (bilinear, corners black): the
  arbitrary-angle TTA of earlier releases, kept as an option.
* ``angles``: ``n`` = 8 k views: the eval crop warped from the stored pixels at k rotations evenly spaced over a
  quarter turn (0, 90 / k, ... degrees; one loader each, ``turns``), each with its 8 dihedral views. Every view is
  one bilinear warp of the stored image, like a training image (training draws any angle and scale, so its samples
  fall between the stored pixels; where the crop spans as many stored pixels as the view has, as in the real
  preset, the plain view is those pixels exactly, and only the turned ones are interpolated as training is). On
  the real preset's random-draw galaxies 32 views beat the 8 dihedral ones by 0.0022 for one network and 0.0003 for
  another (benchmarks/RESULTS.md): an option, not the default.

View 0 is always the plain eval view.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F

from gzpipe.errors import GzpipeError
from gzpipe.loaders.presets import IMAGENET_MEAN, IMAGENET_STD

KINDS = ("dihedral", "rotate", "angles")
DIHEDRAL = tuple((k, False) for k in range(4)) + tuple((k, True) for k in range(4))


def check_tta(n: int, kind: str) -> None:
    if kind not in KINDS:
        raise GzpipeError(f"tta_kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if n < 1:
        raise GzpipeError(f"tta must be at least 1, got {n}")
    if kind == "dihedral" and n > 8:
        raise GzpipeError(f"tta {n}: the dihedral group has 8 views; for more use the angles kind (a multiple of 8: "
                          "those 8 at n / 8 angles) or the rotate kind")
    if kind == "angles" and n % 8:
        raise GzpipeError(f"tta {n} with the angles kind: it takes the 8 dihedral views at each of n / 8 rotations, "
                          "so n must be a multiple of 8 (8, 16, 32 ...)")


def turns(n: int = 1, kind: str = "dihedral") -> list[float]:
    """The rotations (degrees) at which a loader warps the stored images, one loader each (``ViewLoader``); the
    other kinds make every view from the one plain batch."""
    check_tta(n, kind)
    if kind != "angles":
        return [0.0]
    k = n // 8
    return [90.0 * j / k for j in range(k)]


def in_batch(n: int = 1, kind: str = "dihedral") -> tuple[int, str]:
    """The views made from each loader's batch: (how many, of which kind)."""
    return (8, "dihedral") if kind == "angles" else (n, kind)


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
    """``n`` views of a normalised N x 3 x H x W batch (the first is ``x`` itself). For the ``angles`` kind, the
    views of one loader's batch (its 8 dihedral ones): ``ViewLoader`` gathers the loaders'."""
    check_tta(n, kind)
    if kind == "angles":
        return views(x, *in_batch(n, kind))
    if kind == "dihedral":
        return [dihedral(x, k, m) for k, m in DIHEDRAL[:n]]
    return [x] + [_rotate(x, 2 * math.pi * i / n, i % 2 == 1) for i in range(1, n)]


class ViewLoader:
    """Eval batches with all their test-time views: ``make(turn)`` builds one eval loader per rotation of
    ``turns(n, kind)`` (one for every kind but ``angles``), read in lock-step; yields (the plain loader's batch,
    every view of it: N x C x H x W each, the plain view first). Eval loaders keep their order, so the batches of
    the loaders hold the same galaxies; a loader that did not would be an error here, never a silent mix."""

    def __init__(self, make: Callable[[float], Iterable], n: int = 1, kind: str = "dihedral"):
        self.per_batch = in_batch(n, kind)
        self.loaders = [make(t) for t in turns(n, kind)]

    def __len__(self) -> int:
        return len(self.loaders[0])

    def __iter__(self) -> Iterator[tuple]:
        its = [iter(ld) for ld in self.loaders]
        for first in its[0]:
            out = list(views(first.images, *self.per_batch))
            for it in its[1:]:
                other = next(it, None)
                if other is None or list(other.ids) != list(first.ids):
                    raise GzpipeError("the loaders of the turned views gave their galaxies in different orders; "
                                      "evaluate with --tta-kind dihedral, or the pil backend")
                out += views(other.images, *self.per_batch)
            yield first, out
        for it in its[1:]:
            if next(it, None) is not None:
                raise GzpipeError("the loaders of the turned views gave different numbers of batches")


def view_batches(loader, n: int = 1, kind: str = "dihedral") -> Iterator[tuple]:
    """(batch, its views) from a ``ViewLoader``, or from one loader for the kinds made from a batch alone."""
    if isinstance(loader, ViewLoader):
        yield from loader
        return
    if len(turns(n, kind)) > 1:
        raise GzpipeError(f"tta {n} {kind} warps each view from the stored pixels: give a ViewLoader, one loader per "
                          "turn")
    for batch in loader:
        yield batch, views(batch.images, n, kind)
