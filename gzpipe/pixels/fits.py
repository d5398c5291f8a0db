"""FITS cutouts, read with astropy (the field's library): one plane as greyscale, three planes, or three files of one
galaxy in three bands, as colour.

* The first HDU with a 2-D image (one band) or a 3-D cube of 3 planes (``NAXIS3 = 3``) is read; its values are the
  fluxes, stretched to 8 bits by ``gzpipe.pixels.stretch``.
* Bands run in order of increasing wavelength (g, r, z in the Legacy Surveys' cutouts, as their ``bands=grz`` cube
  holds them): the reddest is shown as red and the bluest as blue, as the surveys' own colour images do.
* Three files of one galaxy: ``<stem>_g.fits``, ``<stem>_r.fits``, ``<stem>_z.fits`` (or ``_i`` for the reddest,
  as SDSS's g, r, i; ``.fit`` and ``.fits.gz`` too) are one colour image, named in gzpipe by the pattern
  ``<stem>_{g,r,z}.fits`` (``band_set_path``): `predict` groups a folder's band files so, and `shard` looks for them
  when a catalogue's ``<id>.jpg`` is not there.
* FITS rows run bottom-up (row 1 is the bottom of the picture, as ds9 and survey viewers show it); gzpipe shows them
  the same way, so a cutout and the survey's JPEG of it agree.
"""

from __future__ import annotations

import gzip
import io
import os
import re

import numpy as np

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz")
BAND_SETS = (("g", "r", "z"), ("g", "r", "i"))  # bluest to reddest
_BAND_SET = re.compile(r"^(?P<stem>.*)_\{(?P<bands>[a-zA-Z],[a-zA-Z],[a-zA-Z])\}(?P<suffix>\.[A-Za-z.]+)$")


class FitsError(ValueError):
    """The bytes are FITS but hold no image gzpipe can use; the message says why."""


def fits_suffix(name: str) -> str | None:
    """The FITS suffix ``name`` ends with (``.fits.gz`` ...), or None."""
    low = name.lower()
    return next((s for s in sorted(FITS_SUFFIXES, key=len, reverse=True) if low.endswith(s)), None)


def is_fits(data: bytes) -> bool:
    """Whether ``data`` is a FITS file (plain, or gzip-compressed as ``.fits.gz`` are)."""
    if data[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
                data = f.read(9)
        except (OSError, EOFError):
            return False
    return data[:9] == b"SIMPLE  ="


def read_planes(data: bytes, name: str) -> np.ndarray:
    """The image of a FITS file as H x W x C float, top row first: C = 1, or 3 in RGB order (the cube's planes run
    bluest first, so the last is shown as red)."""
    from astropy.io import fits

    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    try:
        with fits.open(io.BytesIO(data), memmap=False, lazy_load_hdus=False) as hdus:
            for hdu in hdus:
                if hdu.data is None or not hasattr(hdu.data, "ndim"):
                    continue
                a = np.asarray(hdu.data, dtype=np.float64)
                a = np.squeeze(a) if a.ndim > 3 else a
                if a.ndim == 2:
                    return np.flipud(a)[..., None]
                if a.ndim == 3 and a.shape[0] == 3:
                    return np.flipud(np.moveaxis(a[::-1], 0, -1))
                if a.ndim == 3 and a.shape[0] == 1:
                    return np.flipud(a[0])[..., None]
                raise FitsError(f"{name}: its image is {' x '.join(map(str, a.shape))}; gzpipe reads one plane "
                                "(greyscale) or a cube of three bands (colour)")
    except FitsError:
        raise
    except Exception as e:  # noqa: BLE001 - astropy's many ways to fail on a damaged file: one reason
        raise FitsError(f"{name} is a damaged FITS file ({type(e).__name__}: {str(e).strip()[:120]})") from None
    raise FitsError(f"{name} is a FITS file without an image (no HDU holds data)")


def band_set_path(stem: str, bands: tuple[str, ...], suffix: str) -> str:
    """gzpipe's name for one galaxy's three band files: ``<stem>_{g,r,z}.fits``."""
    return f"{stem}_{{{','.join(bands)}}}{suffix}"


def band_files(path: str) -> list[str] | None:
    """The three files a band-set name stands for (bluest first), or None when ``path`` is not one."""
    m = _BAND_SET.match(path)
    if not m:
        return None
    return [f"{m['stem']}_{b}{m['suffix']}" for b in m["bands"].split(",")]


def find_band_set(stem: str) -> str | None:
    """``<stem>_{g,r,z}.fits`` (or another ``BAND_SETS`` / ``FITS_SUFFIXES`` combination) where its three files are
    all there, else None."""
    for bands in BAND_SETS:
        for suffix in FITS_SUFFIXES:
            if all(os.path.exists(f"{stem}_{b}{suffix}") for b in bands):
                return band_set_path(stem, bands, suffix)
    return None


def group_band_files(paths: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """A folder's FITS files -> ([(galaxy stem, band-set path)], the files left single). Three files
    ``<stem>_g/_r/_z`` (a ``BAND_SETS`` triple, one suffix) make one galaxy; any other FITS file is one of its own."""
    by_stem: dict[tuple[str, str], dict[str, str]] = {}
    for p in paths:
        suffix = fits_suffix(p)
        base = p[: -len(suffix)] if suffix else p
        stem, _, band = base.rpartition("_")
        if stem and len(band) == 1:
            by_stem.setdefault((stem, suffix or ""), {})[band] = p
    sets, used = [], set()
    for (stem, suffix), found in by_stem.items():
        for bands in BAND_SETS:
            if all(b in found for b in bands):
                sets.append((os.path.basename(stem), band_set_path(stem, bands, suffix)))
                used.update(found[b] for b in bands)
                break
    return sets, [p for p in paths if p not in used]


def stack_band_files(files: list[str], read) -> bytes:
    """Three band files (bluest first) as the bytes of one 3-plane FITS file, so that every stage downstream reads a
    band set as it reads a cube. ``read(path) -> bytes``. Bands of different sizes are refused."""
    from astropy.io import fits

    planes = []
    for f in files:
        a = read_planes(read(f), os.path.basename(f))
        if a.shape[2] != 1:
            raise FitsError(f"{os.path.basename(f)} holds {a.shape[2]} planes; a band file holds one")
        planes.append(np.flipud(a[..., 0]))  # back to FITS order: the cube is written as FITS stores it
    shapes = {p.shape for p in planes}
    if len(shapes) > 1:
        raise FitsError(f"the bands of {os.path.basename(files[0])} differ in size ({', '.join('x'.join(map(str, s)) for s in sorted(shapes))})")
    buf = io.BytesIO()
    fits.PrimaryHDU(np.stack(planes).astype(np.float32)).writeto(buf)
    return buf.getvalue()
