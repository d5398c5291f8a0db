"""From the numbers a deep image holds (16-bit, 32-bit, float, FITS fluxes) to the 8 bits gzpipe stores and predicts on.

8-bit images (JPEG, ordinary PNG ...) are pictures already and pass as they are. Deeper ones are scaled, never clipped
at a fixed level, by one of ``STRETCHES`` (astropy's ``visualization`` intervals and stretches, the field's library):

* ``linear``: from the image's own range (its smallest to its largest finite value, over all its bands at once) to
  0..255: a 16-bit PNG saved from an 8-bit picture (x 257) comes back exactly.
* ``percentile``: each band linearly between its ``PERCENTILES`` (0.5 and 99.9), values outside clipped to them.
* ``asinh``: each band over the same percentiles, then astropy's ``AsinhStretch(ASINH_A)``: faint structure
  lifted and bright cores kept, as SDSS's and the Legacy Surveys' colour images (Lupton et al. 2004) and the
  images Zoobot's DESI models were trained on are made.
* ``auto`` (the default): ``asinh`` for FITS (fluxes, whose range a few bright pixels set) and ``linear`` for every
  other deep image (usually a picture saved at a higher depth).

The choice is recorded in the shards' manifest and in every model trained on them; ``predict`` applies the same.
"""

from __future__ import annotations

import numpy as np

STRETCHES = ("auto", "linear", "percentile", "asinh")
DEFAULT_STRETCH = "auto"
PERCENTILES = (0.5, 99.9)
ASINH_A = 0.1


def check_stretch(name: str) -> str:
    from gzpipe.errors import GzpipeError

    if name not in STRETCHES:
        raise GzpipeError(f"unknown stretch {name!r}; choose one of {', '.join(STRETCHES)}")
    return name


def resolve(name: str, fits: bool) -> str:
    """``auto`` made concrete for a FITS file or another deep image."""
    return ("asinh" if fits else "linear") if name == "auto" else name


def to_uint8(planes: np.ndarray, name: str) -> np.ndarray:
    """``planes`` (H x W x C, any numeric dtype; NaN and inf count as the image's lowest value) -> H x W x C uint8
    by the stretch ``name`` (``linear``, ``percentile`` or ``asinh``)."""
    x = np.asarray(planes, dtype=np.float64)
    finite = np.isfinite(x)
    if not finite.any():
        return np.zeros(x.shape, np.uint8)
    if name == "linear":
        lo, hi = float(x[finite].min()), float(x[finite].max())
        out = _scaled(np.where(finite, x, lo), lo, hi)
    else:
        from astropy.visualization import AsinhStretch, AsymmetricPercentileInterval

        interval = AsymmetricPercentileInterval(*PERCENTILES)
        out = np.empty(x.shape, np.float64)
        for c in range(x.shape[2]):
            band, ok = x[..., c], finite[..., c]
            lo, hi = interval.get_limits(band[ok]) if ok.any() else (0.0, 1.0)
            out[..., c] = np.clip(_scaled(np.where(ok, band, lo), lo, hi), 0.0, 1.0)
        if name == "asinh":
            out = AsinhStretch(ASINH_A)(out, clip=True)
    return np.rint(out * 255.0).astype(np.uint8)


def _scaled(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(x - lo) / (hi - lo); a flat image (hi == lo) is all 0."""
    span = hi - lo
    return (x - lo) / span if span > 0 else np.zeros_like(x)
