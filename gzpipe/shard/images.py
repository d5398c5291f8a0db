"""Checking each galaxy's image before it goes into a shard, and finding and reading its file (what is stored, and
any re-encoding: ``gzpipe.shard.store``).

Every shard stores JPEGs, so that every loader backend (DALI, nvJPEG, Pillow) decodes every sample: an image in
another format Pillow reads (PNG, TIFF, WebP, BMP ...) is decoded, checked and re-encoded as a baseline RGB JPEG at
``--quality`` (listed under ``converted`` in the manifest). A catalogue's ``<id>.jpg`` that is not there is looked
for under the other suffixes (``ALTERNATIVE_SUFFIXES``) before the row is rejected, naming what was looked for."""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path
from typing import Iterator

from PIL import Image

from gzpipe.pixels import opencv_deep
from gzpipe.pixels.fits import FITS_SUFFIXES, FitsError, band_files, find_band_set, is_fits, stack_band_files

VERIFY_MODES = ("decode", "header")
_MAGIC = {b"\x89PNG": "a PNG file", b"GIF8": "a GIF file", b"BM": "a BMP file", b"II*\x00": "a TIFF file",
          b"MM\x00*": "a TIFF file", b"RIFF": "a WebP/RIFF file"}


class ImageRejected(Exception):
    """The file cannot go into a shard; the message is the reason recorded in the manifest, ``code`` its kind."""

    def __init__(self, reason: str, code: str):
        super().__init__(reason)
        self.code = code


def _what_is(head: bytes) -> str:
    for magic, name in _MAGIC.items():
        if head.startswith(magic):
            return name
    if not head:
        return "an empty file"
    try:
        head[:64].decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        return "not a JPEG (no JPEG start marker)"


MAX_PIXELS = 8192 * 8192  # GZ2 cut-outs are 424 x 424; anything this large is an error or a decompression bomb
_READ_BLOCK = 256  # how far past the bytes it needs the decoder may read (see _check_entropy)


class _ReadTracker(io.BytesIO):
    """A byte stream that remembers how far a decoder has read into it. Reads end in small blocks only near the
    end (``fine_from``): the decoder's position matters there alone, and 50 small reads per image would cost as much
    as the decode itself."""

    furthest = 0
    fine_from = 0  # before this offset a read returns everything up to it in one piece

    def read(self, n: int = -1) -> bytes:
        pos = self.tell()
        if 0 <= n < self.fine_from - pos:
            n = self.fine_from - pos
        out = super().read(n)
        self.furthest = max(self.furthest, self.tell())
        return out


def _markers(data: bytes, name: str) -> int:
    """Start and end-of-image markers; returns the end marker's offset."""
    if not data.startswith(b"\xff\xd8\xff"):
        raise ImageRejected(f"{name} is {_what_is(data[:64])}, not a JPEG", "not_jpeg")
    end = len(data.rstrip(b"\x00"))
    eoi = data.rfind(b"\xff\xd9", 0, end)
    if eoi < end - 2:
        raise ImageRejected(f"{name} is a truncated JPEG (no end-of-image marker)", "truncated_jpeg")
    return eoi


@contextlib.contextmanager
def _corrupt_as_rejection(name: str) -> Iterator[None]:
    """Decoding inside: PIL's warnings on corrupt data count as errors, and any decoder error becomes a
    ``corrupt_jpeg`` rejection (other rejections pass through)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            yield
    except ImageRejected:
        raise
    except (OSError, SyntaxError, ValueError, Warning) as e:
        raise ImageRejected(f"{name} is a corrupt JPEG ({str(e).strip() or type(e).__name__})", "corrupt_jpeg") from None


def _open(data: bytes, name: str) -> tuple[Image.Image, _ReadTracker]:
    """PIL's header parse (no pixel decoding), with decompression bombs and non-JPEGs turned into reasons. The
    header is parsed from a plain stream (it takes ~40 small reads: tracking them cost 0.06 ms an image); the
    tracker takes over for the decode, whose reads are the ones the entropy check needs."""
    try:
        im = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageRejected(f"{name} is too large to decode safely ({e})", "too_large") from None
    if im.format != "JPEG":
        raise ImageRejected(f"{name} is a {im.format} file, not a JPEG", "not_jpeg")
    if im.width * im.height > MAX_PIXELS:
        raise ImageRejected(f"{name} is {im.width} x {im.height} px, over the {MAX_PIXELS // 10**6} Mpx limit "
                            "(a decompression bomb, or not a galaxy cut-out)", "too_large")
    stream = _ReadTracker(data)
    stream.fine_from = max(0, len(data) - 8 * _READ_BLOCK)
    im.fp = stream  # load() seeks to the scan's offset itself
    im.decodermaxblock = _READ_BLOCK
    return im, stream


_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame markers (DHT, JPG, DAC are not)


def jpeg_frame(data: bytes, name: str) -> tuple[int, int, int]:
    """(width, height, components) from the frame header, walking the marker segments up to the scan: the header
    check of ``verify="header"`` without Pillow (a tenth of its cost), for a bare size check and the mode."""
    i, end = 2, len(data)
    frame = None
    while i + 4 <= end:
        if data[i] != 0xFF:
            raise ImageRejected(f"{name} is a corrupt JPEG (no marker at byte {i} of its header)", "corrupt_jpeg")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if length < 2:
            break
        if marker in _SOF and i + 10 <= end:
            frame = (int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big"), data[i + 9])
        if marker == 0xDA:  # start of scan: the header is over
            if frame is None or frame[0] == 0 or frame[1] == 0:
                break
            return frame
        i += 2 + length
    raise ImageRejected(f"{name} is a corrupt JPEG (its header has no frame and scan)", "corrupt_jpeg")


def _check_entropy(stream: _ReadTracker, eoi: int, name: str) -> None:
    """libjpeg conceals corrupt Huffman data: it fills the rest of the image with grey and prints a warning that
    Pillow drops. But it then stops reading early, while a sound image is read up to its end marker. So a decoder
    that finished more than two read blocks before the end marker met corrupt data."""
    if stream.furthest + 2 * _READ_BLOCK < eoi:
        raise ImageRejected(f"{name} is a corrupt JPEG (the decoder finished at byte {stream.furthest} of {eoi}: "
                            "corrupt entropy-coded data)", "corrupt_jpeg")


def check_jpeg(data: bytes, name: str) -> None:
    """All of ``load_jpeg``'s checks on JPEG bytes (markers, header, size limit, a 1/8-scale decode and the
    entropy check); raises ``ImageRejected``. For `predict`, which reads files it did not shard."""
    eoi = _markers(data, name)
    _decode_small(data, eoi, name)


def check_image(data: bytes, name: str) -> None:
    """For `predict`, which also takes PNG / TIFF / WebP / FITS: JPEGs get every check; FITS and other formats are
    decoded later, where a damaged one gets its reason; here the size limit for what Pillow opens."""
    if data.startswith(b"\xff\xd8\xff"):
        check_jpeg(data, name)
        return
    _format_of(data, name)


def _format_of(data: bytes, name: str) -> str:
    """The format name of a non-JPEG image, with Pillow's header checks (size limit, readable); FITS, and what only
    OpenCV reads at its depth (a float colour TIFF), are named without them."""
    if is_fits(data):
        return "FITS"
    try:
        return _open_other(data, name).format
    except ImageRejected as e:
        if e.code != "not_image" or opencv_deep(data) is None:
            raise
    return _what_is(data[:64]).removeprefix("a ").removesuffix(" file")


def _open_other(data: bytes, name: str) -> Image.Image:
    """An image of a format other than JPEG, opened lazily (header only), refused when Pillow cannot read it or
    when it is over the pixel limit."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageRejected(f"{name} is too large to decode safely ({e})", "too_large") from None
    except (OSError, SyntaxError, ValueError):
        raise ImageRejected(f"{name} is {_what_is(data[:64])}, not an image Pillow reads", "not_image") from None
    if im.width * im.height > MAX_PIXELS:
        raise ImageRejected(f"{name} is {im.width} x {im.height} px, over the {MAX_PIXELS // 10**6} Mpx limit",
                            "too_large")
    return im


def _decodes_strictly(data: bytes) -> bool:
    """Whether libjpeg-turbo decodes ``data`` at 1/8 scale without a single warning (simplejpeg's strict mode: every
    Huffman code is decoded, and corrupt or truncated entropy data raises instead of being concealed). Twice as
    fast as the same check through Pillow (0.17 against 0.34 ms a 424 px image), whose decoder drops libjpeg's
    warnings and needs the read-position test of ``_check_entropy``. False means "not proven sound here": the
    Pillow path then decides, and words the reason."""
    if _simplejpeg is None:
        return False
    try:
        _simplejpeg.decode_jpeg(data, "RGB", min_height=1, min_width=1, min_factor=8, strict=True)
    except (ValueError, RuntimeError, MemoryError):
        return False
    return True


try:  # a compiled wheel on every platform gzpipe supports; without it the Pillow path does the same check
    import simplejpeg as _simplejpeg
except ImportError:  # pragma: no cover
    _simplejpeg = None


def _passes_fast(data: bytes, name: str, verify: str) -> bool:
    """The checks that need no Pillow: the frame walk and the size limit (an oversized image is rejected here),
    then, for a 3-channel JPEG, the header alone (``verify="header"``) or the strict decode. False: Pillow decides
    (a header the walk does not follow, greyscale / CMYK, anything the strict decode did not pass)."""
    try:
        w, h, components = jpeg_frame(data, name)
    except ImageRejected:
        if verify == "header":
            raise
        return False
    if w * h > MAX_PIXELS:
        raise ImageRejected(f"{name} is {w} x {h} px, over the {MAX_PIXELS // 10**6} Mpx limit (a "
                            "decompression bomb, or not a galaxy cut-out)", "too_large")
    return components == 3 and (verify == "header" or _decodes_strictly(data))


def _decode_small(data: bytes, eoi: int, name: str) -> None:
    try:
        if _passes_fast(data, name, "decode"):
            return
    except ImageRejected:
        pass  # oversized: Pillow's checks below word it as `predict` always has
    with _corrupt_as_rejection(name):
        im, stream = _open(data, name)
        im.draft(im.mode if im.mode in ("L", "RGB") else "RGB", (max(1, im.width // 8), max(1, im.height // 8)))
        im.load()
    _check_entropy(stream, eoi, name)


def read_file(path: str | Path) -> bytes:
    """A whole file in two system calls after the open (``open().read()`` costs half as much again: at 240,000
    images that is seconds of a stage whose floor is the kernel's copy)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        data = os.read(fd, size + 1)
        if len(data) < size:  # a short read (a pipe, a network file system): read the rest the usual way
            chunks = [data]
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            data = b"".join(chunks)
        return data
    finally:
        os.close(fd)


ALTERNATIVE_SUFFIXES = (".jpeg", ".JPG", ".JPEG", ".png", ".PNG", ".tif", ".tiff", ".webp", ".bmp", *FITS_SUFFIXES)


def locate(path: str) -> str:
    """``path`` if it exists, else the first of its ``ALTERNATIVE_SUFFIXES`` that does, else its band files
    (``<stem>_{g,r,z}.fits``: ``gzpipe.pixels.fits``) where all three are there (else ``path`` itself: its read
    then says what was looked for)."""
    if os.path.exists(path):
        return path
    stem = os.path.splitext(path)[0]
    return next((stem + s for s in ALTERNATIVE_SUFFIXES if os.path.exists(stem + s)), None) or find_band_set(stem) \
        or path


def read_image(path: str) -> tuple[bytes, str]:
    """The file's bytes and the path they came from: ``path``, or where its ``<stem>.jpg`` is missing, the first of
    ``ALTERNATIVE_SUFFIXES`` that exists, or its three band files as one 3-plane FITS (``gzpipe.pixels.fits``)."""
    bands = band_files(path)
    if bands is not None:
        try:
            return stack_band_files(bands, read_file), path
        except FileNotFoundError as e:
            raise ImageRejected(f"band file not found: {e.filename}", "missing_image") from None
        except FitsError as e:
            raise ImageRejected(str(e), "corrupt_image") from None
    try:
        return read_file(path), path
    except FileNotFoundError:
        stem, suffix = os.path.splitext(path)
        tried = [stem + s for s in ALTERNATIVE_SUFFIXES if s != suffix]
        for other in tried:
            try:
                return read_file(other), other
            except FileNotFoundError:
                continue
        found = find_band_set(stem)
        if found is not None:
            return read_image(found)
        shown = ", ".join(os.path.basename(t) for t in tried[:4])
        raise ImageRejected(f"image file not found: {path} (nor {shown}, ... beside it, nor its band files "
                            f"{os.path.basename(stem)}_g/_r/_z.fits)", "missing_image") from None
