"""Checking and (optionally) re-encoding the JPEG of each galaxy before it goes into a shard."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image

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


def load_jpeg(path: str | Path, verify: str = "decode", resize: int | None = None, quality: int = 90) -> bytes:
    """The bytes to store for one galaxy: the original JPEG, or a re-encoded baseline JPEG at ``resize`` px.

    ``verify="decode"`` decodes the image (at reduced DCT scale, so it is cheap) and so catches truncated and
    corrupt entropy data; ``"header"`` checks the markers and header only (faster, for trusted inputs).
    Raises ``ImageRejected`` with the reason.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageRejected(f"image file not found: {path}", "missing_image") from None
    except OSError as e:
        raise ImageRejected(f"cannot read image {path}: {e.strerror or e}", "unreadable_image") from None
    if not data.startswith(b"\xff\xd8\xff"):
        raise ImageRejected(f"{path.name} is {_what_is(data[:64])}, not a JPEG", "not_jpeg")
    if data.rstrip(b"\x00").rfind(b"\xff\xd9") < len(data.rstrip(b"\x00")) - 2:
        raise ImageRejected(f"{path.name} is a truncated JPEG (no end-of-image marker)", "truncated_jpeg")
    if resize is None and verify == "header":
        return data  # markers checked above; no decoder involved (the fast path for trusted inputs)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # PIL warns on some corrupt data: treat it as corrupt
            im = Image.open(io.BytesIO(data))
            if im.format != "JPEG":
                raise ImageRejected(f"{path.name} is a {im.format} file, not a JPEG", "not_jpeg")
            if resize is not None:
                im.draft("RGB", (resize, resize))  # DCT scaling: decode no larger than needed
                im = im.convert("RGB")
                if im.size != (resize, resize):
                    im = im.resize((resize, resize), Image.BILINEAR, reducing_gap=None)
                buf = io.BytesIO()
                im.save(buf, format="JPEG", quality=quality, progressive=False, optimize=False)
                return buf.getvalue()
            im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
            im.load()
    except ImageRejected:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Warning) as e:
        raise ImageRejected(f"{path.name} is a corrupt JPEG ({str(e).strip() or type(e).__name__})", "corrupt_jpeg") from None
    return data
