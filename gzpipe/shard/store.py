"""What is stored for each galaxy: the JPEG bytes ``load_jpeg`` returns (the original, or a re-encoding: greyscale or
CMYK made RGB, a non-square image cut to its centred square, any other format or depth made 8-bit RGB) and the note
saying what was done, which the manifest lists under ``converted`` and the shard summary counts by kind
(``CONVERSIONS``). The checks themselves are ``gzpipe.shard.images``'."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from gzpipe.pixels import DEFAULT_STRETCH, DeepImageError, centre_square, decode, square_box
from gzpipe.pixels.fits import FitsError
from gzpipe.shard.images import (MAX_PIXELS, ImageRejected, _check_entropy, _corrupt_as_rejection, _format_of,
                                 _markers, _open, _passes_fast, jpeg_frame, read_image)


# What a conversion note's parts begin with: the shard summary counts each kind (``conversion_kinds``)
CONVERSIONS = {"format": "other formats re-encoded as JPEG", "depth": "deeper than 8 bits or FITS, stretched",
               "colour": "greyscale / CMYK / palette made RGB", "square": "non-square, cut to their centred square"}


def conversion_kinds(note: str) -> list[str]:
    """The ``CONVERSIONS`` kinds a note names (its parts are ``kind: what was done``, joined by ``; ``)."""
    return [part.split(":", 1)[0] for part in note.split("; ") if part.split(":", 1)[0] in CONVERSIONS]


def _square_note(w: int, h: int) -> str:
    side = min(w, h)
    return f"square: {w} x {h} px cut to its centred {side} x {side} square"


def _other_format(data: bytes, name: str, resize: int | None, quality: int, stretch: str) -> tuple[bytes, str]:
    """An image in another format (PNG, TIFF, WebP, FITS ...), decoded whole (which checks it), made 8-bit RGB
    (``gzpipe.pixels.decode``: deep images and FITS through ``stretch``), cut to its centred square and stored as
    a baseline JPEG at ``quality``."""
    fmt = _format_of(data, name)
    try:
        arr, how = decode(data, name, stretch)
    except (FitsError, DeepImageError) as e:
        raise ImageRejected(str(e), "corrupt_image") from None
    except (OSError, SyntaxError, ValueError, Warning) as e:
        raise ImageRejected(f"{name} is a damaged {fmt} file ({str(e).strip() or type(e).__name__})",
                            "corrupt_image") from None
    notes = [f"format: {fmt} re-encoded as a JPEG at quality {quality}"]
    if how:
        notes.append(("depth: " if fmt == "FITS" or "stretch" in how else "colour: ") + how)
    h, w = arr.shape[:2]
    if w * h > MAX_PIXELS:
        raise ImageRejected(f"{name} is {w} x {h} px, over the {MAX_PIXELS // 10**6} Mpx limit", "too_large")
    if w != h:
        notes.append(_square_note(w, h))
    rgb = Image.fromarray(np.ascontiguousarray(centre_square(arr)))
    if resize is not None and rgb.size != (resize, resize):
        rgb = rgb.resize((resize, resize), Image.BILINEAR, reducing_gap=None)
    return _encode(rgb, quality), "; ".join(notes)


def load_jpeg(path: str | Path | bytes, verify: str = "decode", resize: int | None = None,
              quality: int = 90, name: str | None = None, stretch: str = DEFAULT_STRETCH) -> tuple[bytes, str | None]:
    """The bytes to store for one galaxy, and a note when they were converted (``kind: what``, see
    ``CONVERSIONS``): the original JPEG; a baseline RGB re-encoding of a greyscale or CMYK one (so that every loader
    backend decodes 3 channels), of a non-square one (its centred square, ``gzpipe.pixels.square_box``), or at
    ``resize`` px; any other format made 8-bit RGB (``stretch`` for deep images and FITS) and encoded as a JPEG.

    ``verify="decode"`` decodes the image (at 1/8 DCT scale, so it is cheap) and so catches truncated and
    corrupt entropy data; ``"header"`` checks the markers and header only (faster, for trusted inputs). Both
    reject decompression bombs from the header. Raises ``ImageRejected`` with the reason. ``path`` may be the image's
    bytes themselves (a catalogue that carries its images: ``name`` then says which galaxy's).
    """
    if isinstance(path, (bytes, bytearray, memoryview)):
        data, name = bytes(path), name or "the catalogue's image bytes"
    else:
        try:
            data, path = read_image(path)
        except OSError as e:
            raise ImageRejected(f"cannot read image {path}: {e.strerror or e}", "unreadable_image") from None
        name = os.path.basename(path)  # not a Path object: 240,000 of them cost seconds of a pass-through shard
    if not data.startswith(b"\xff\xd8\xff"):
        return _other_format(data, name, resize, quality, stretch)
    eoi = _markers(data, name)
    if resize is None and _passes_fast(data, name, verify) and _is_square(data, name):
        return data, None  # stored as it is; greyscale, CMYK and non-square go on to be converted below
    with _corrupt_as_rejection(name):
        im, stream = _open(data, name)
        mode, (w, h) = im.mode, im.size
        if resize is None and mode == "RGB" and w == h:
            if verify == "decode":  # at 1/8 scale: every Huffman code is still decoded
                im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
                im.load()
                _check_entropy(stream, eoi, name)
            return data, None
        if resize is not None:  # DCT scaling: decode no larger than the square needs
            side = min(w, h)
            im.draft("RGB", (max(1, resize * w // side), max(1, resize * h // side)))
        rgb = im.convert("RGB")
        _check_entropy(stream, eoi, name)
    notes = [] if mode == "RGB" or resize is not None else [f"colour: {mode} JPEG stored as RGB"]
    if w != h:
        x0, y0, side = square_box(*rgb.size)
        rgb = rgb.crop((x0, y0, x0 + side, y0 + side))
        notes.append(_square_note(w, h))
    if resize is not None and rgb.size != (resize, resize):
        rgb = rgb.resize((resize, resize), Image.BILINEAR, reducing_gap=None)
    return _encode(rgb, quality), "; ".join(notes) or None


def _is_square(data: bytes, name: str) -> bool:
    try:
        w, h, _ = jpeg_frame(data, name)
    except ImageRejected:
        return True  # Pillow decides below
    return w == h


def _encode(im: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality, progressive=False, optimize=False)
    return buf.getvalue()
