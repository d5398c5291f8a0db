"""Any image a user brings, as the 8-bit RGB picture gzpipe stores and predicts on, and the one geometry every path
applies to it.

* ``decode(data, name, stretch)``: image bytes -> H x W x 3 uint8. JPEGs and other 8-bit pictures (PNG, TIFF, WebP,
  BMP, GIF ...) as they are (greyscale and palette made RGB); deeper ones (16-bit and 32-bit integers, floats) and
  FITS (``gzpipe.pixels.fits``) scaled from their own values by a stretch (``gzpipe.pixels.stretch``), never
  clipped at a fixed level.
* ``square_box(w, h)``: the centred square (the largest that fits) that every path cuts from a non-square image
  before any resize (``shard``, every loader backend's warp and so ``predict``): galaxy cutouts are centred on the
  galaxy, and stretching one axis would change the ellipticity the edge-on and roundness questions measure.

Shard and predict both decode through here, so a file reaches the model as the same pixels whichever stage reads it.
"""

from __future__ import annotations

import io
import warnings

import numpy as np

from gzpipe.pixels.fits import FITS_SUFFIXES, FitsError, is_fits, read_planes  # noqa: F401 - FitsError: the callers'
from gzpipe.pixels.stretch import DEFAULT_STRETCH, STRETCHES, check_stretch, resolve, to_uint8

__all__ = ["DEFAULT_STRETCH", "FITS_SUFFIXES", "STRETCHES", "DeepImageError", "check_stretch", "decode", "is_deep",
           "square_box", "centre_square"]

# Pillow modes that hold more than 8 bits a sample (a 16-bit RGB PNG opens as "RGB" with a ";16" raw mode)
_DEEP_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F", "I;32", "F;32")


class DeepImageError(ValueError):
    """The bytes cannot be made into a picture; the message says why (``decode``'s callers word the rejection)."""


def square_box(width: int, height: int) -> tuple[int, int, int]:
    """(left, top, side) of the centred square, the largest that fits: integer offsets, the same in every path
    (an odd difference puts the extra column or row on the right or at the bottom)."""
    side = min(width, height)
    return (width - side) // 2, (height - side) // 2, side


def centre_square(arr: np.ndarray) -> np.ndarray:
    """The centred square of an H x W (x C) array (a view; the array itself when it is square)."""
    h, w = arr.shape[:2]
    if h == w:
        return arr
    x0, y0, side = square_box(w, h)
    return arr[y0:y0 + side, x0:x0 + side]


def _deep_pillow(im) -> bool:
    rawmode = getattr(im.tile[0], "args", None) if getattr(im, "tile", None) else None
    rawmode = rawmode[0] if isinstance(rawmode, tuple) else rawmode
    return im.mode in _DEEP_MODES or (isinstance(rawmode, str) and ";16" in rawmode)


def is_deep(data: bytes) -> bool:
    """Whether ``data`` is FITS or an image of more than 8 bits a sample (which a stretch makes into 8 bits). JPEGs
    and ordinary 8-bit images are not."""
    if data[:3] == b"\xff\xd8\xff":
        return False
    if is_fits(data):
        return True
    from PIL import Image

    try:
        im = Image.open(io.BytesIO(data))
    except Exception:  # noqa: BLE001 - what Pillow cannot open may be a float TIFF OpenCV reads
        return opencv_deep(data) is not None
    return _deep_pillow(im)


def opencv_deep(data: bytes) -> np.ndarray | None:
    """OpenCV's reading of ``data`` at its own depth where that is more than 8 bits (16-bit RGB PNGs, float and
    multi-band TIFFs Pillow cannot open), as H x W x C in RGB order; None otherwise."""
    import cv2

    if len(data) < 8:
        return None
    try:
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        return None
    if arr is None or arr.dtype == np.uint8:
        return None
    if arr.ndim == 2:
        return arr[..., None]
    if arr.shape[2] >= 3:  # BGR(A) -> RGB; an alpha plane is not a band
        return arr[..., 2::-1]
    return arr[..., :1]  # grey + alpha


def decode(data: bytes, name: str = "image", stretch: str = DEFAULT_STRETCH) -> tuple[np.ndarray, str | None]:
    """Image bytes -> (H x W x 3 uint8 RGB, a note saying how it was made 8-bit RGB, or None for an RGB picture).

    FITS and deep images go through ``stretch``; 8-bit ones through Pillow as they are. Raises ``FitsError`` or
    ``DeepImageError`` with the reason, Pillow's errors as they come (the callers word them)."""
    from PIL import Image

    if is_fits(data):
        planes = read_planes(data, name)
        how = resolve(stretch, fits=True)
        bands = "1 band" if planes.shape[2] == 1 else "3 bands"
        return _rgb(to_uint8(planes, how)), f"FITS ({bands}) with the {how} stretch"
    try:
        im = Image.open(io.BytesIO(data))
    except Exception:  # noqa: BLE001
        deep = opencv_deep(data)
        if deep is None:
            raise
        how = resolve(stretch, fits=False)
        return _rgb(to_uint8(deep, how)), f"{deep.dtype} {_bands(deep)} image with the {how} stretch"
    if _deep_pillow(im):
        fmt = im.format or "image"
        deep = opencv_deep(data)
        if deep is None:  # a deep mode OpenCV does not read: Pillow's single plane
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                deep = np.asarray(im)[..., None] if im.mode in _DEEP_MODES else None
        if deep is None:
            raise DeepImageError(f"{name}: a {im.mode} {fmt} gzpipe cannot read at its depth")
        how = resolve(stretch, fits=False)
        return _rgb(to_uint8(deep, how)), f"{deep.dtype} {_bands(deep)} {fmt} with the {how} stretch"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mode = im.mode
        rgb = np.asarray(im.convert("RGB"))
    return rgb, None if mode == "RGB" else f"{mode} {im.format or 'image'} made RGB"


def _bands(a: np.ndarray) -> str:
    return "greyscale" if a.shape[2] == 1 else "colour"


def _rgb(a: np.ndarray) -> np.ndarray:
    """H x W x 1 -> H x W x 3 (grey in every channel); H x W x 3 as it is."""
    return np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a
