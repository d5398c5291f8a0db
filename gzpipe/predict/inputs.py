"""What `gzpipe predict` reads: image files, folders, tar files, shard folders and catalogues, gathered into items
(each with an id and where its bytes are), de-duplicated, with the files it passed over listed.

* a file: one item (``id`` = the file's stem);
* a folder: its image files (``IMAGE_SUFFIXES``, FITS included; a galaxy's three band files ``<id>_g/_r/_z.fits``
  are one colour image, ``gzpipe.pixels.fits``); other files are skipped and listed; its subfolders are not
  searched (each is named when nothing else is found);
* a shard folder (has ``manifest.json``): read by the shard loaders, every split;
* a ``.tar``: its image members (``id`` = the sample's JSON id where there is one, else the member's key);
* a catalogue (``.csv`` / ``.parquet``): an id column and an image-path column (``CATALOG_ID_COLUMNS``,
  ``CATALOG_PATH_COLUMNS``, e.g. galaxy-datasets' ``id_str`` and ``file_loc``); relative paths are resolved against
  ``images`` when given, else against the catalogue's folder. Without a path column, an ``asset_id`` (Hart16) or
  ``GalaxyID`` (Kaggle) names ``<id>.jpg`` in ``images``, as `gzpipe shard` joins them (``<id>.png`` and the other
  suffixes are looked for when the ``.jpg`` is not there).
"""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from gzpipe.errors import GzpipeError
from gzpipe.manifest import MANIFEST
from gzpipe.pixels.fits import FITS_SUFFIXES, fits_suffix, group_band_files

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", *FITS_SUFFIXES)
CATALOG_SUFFIXES = (".csv", ".parquet")
CATALOG_ID_COLUMNS = ("id_str", "id", "asset_id", "GalaxyID", "dr7objid", "objid", "iauname")
CATALOG_PATH_COLUMNS = ("file_loc", "path", "file", "filename", "image", "location", "local_path")
JOINED_ID_COLUMNS = ("asset_id", "GalaxyID")  # ids that name their image file, <id>.jpg, as `gzpipe shard` reads them


@dataclass(frozen=True)
class Item:
    id: str
    path: str  # a file, or "<tar>::<member>", or "<catalogue>[row N]" for an image the catalogue carries
    data: bytes | None = field(default=None, compare=False, repr=False)  # that image's bytes


@dataclass
class Inputs:
    items: list[Item] = field(default_factory=list)
    shard_folders: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # files passed over in folders, with why
    duplicates: int = 0

    @property
    def count(self) -> int:
        from gzpipe.manifest import read_manifest

        return len(self.items) + sum(read_manifest(f)["counts"]["written"] for f in self.shard_folders)


def _tar_items(p: Path) -> list[Item]:
    try:
        with tarfile.open(p) as t:
            members = [m for m in t.getmembers() if m.isfile()]
            ids = {}
            for m in members:
                key, _, ext = m.name.partition(".")
                if ext == "json" and m.size < 1 << 20:
                    try:
                        ids[key] = str(json.loads(t.extractfile(m).read())["id"])
                    except (ValueError, KeyError, TypeError):
                        pass
    except (tarfile.TarError, OSError) as e:
        raise GzpipeError(f"cannot read tar {p}: {e}") from None
    out = []
    for m in members:
        key, _, ext = m.name.partition(".")
        if "." + ext.lower() in IMAGE_SUFFIXES:
            out.append(Item(ids.get(key, key), f"{p}::{m.name}"))
    return out


def _pick(columns: list[str], candidates: tuple[str, ...], given: str | None, what: str, path) -> str:
    if given:
        if given not in columns:
            raise GzpipeError(f"{path}: no column {given!r}; it has {', '.join(columns[:12])}")
        return given
    for c in candidates:
        if c in columns:
            return c
    raise GzpipeError(f"{path}: no {what} column; expected one of {', '.join(candidates)} (found "
                      f"{', '.join(columns[:12])}{' ...' if len(columns) > 12 else ''})")


def catalog_items(path: Path, images: Path | None = None, id_column: str | None = None,
                  path_column: str | None = None) -> list[Item]:
    """Items of a catalogue file (see the module docstring)."""
    from gzpipe.tables import read_table

    df = read_table(path, dtype=str)
    carried = _carried_images(path, [str(c) for c in df.columns], path_column)
    return frame_items(df, Path(images) if images else Path(path).parent, id_column, path_column, path, carried)


def frame_items(df, base: Path, id_column: str | None = None, path_column: str | None = None,
                where: str | Path = "the catalogue", carried: list[bytes] | None = None) -> list[Item]:
    """Items of a catalogue already in memory (a pandas DataFrame: an id column and an image path column, relative
    paths from ``base``, or a column holding the images themselves). ``carried``: that column's images, read."""
    import pandas as pd

    cols = [str(c) for c in df.columns]
    idc = _pick(cols, CATALOG_ID_COLUMNS, id_column, "id", where)
    if carried is None and path_column is None:
        values = next((df[c] for c in _image_columns() if c in cols), None)
        if values is not None and any(isinstance(v, (dict, bytes, bytearray, memoryview)) for v in values.head(8)):
            from gzpipe.catalog.formats import _image_bytes

            carried = [_image_bytes(v) for v in values]
    if carried is not None:  # a Hugging Face / galaxy-datasets table with the images themselves, as shard reads it
        return [Item(str(gid), f"{where}[row {i}]", data or b"") for i, (gid, data) in enumerate(zip(df[idc], carried))]
    if path_column is None and idc in JOINED_ID_COLUMNS and not any(c in cols for c in CATALOG_PATH_COLUMNS):
        from gzpipe.shard.images import locate

        ids = df[idc].astype(str).str.strip().str.replace(r"\.0+$", "", regex=True)
        return [Item(gid, locate(str(base / f"{gid}.jpg")) if gid and gid != "nan" else "") for gid in ids]
    pc = _pick(cols, CATALOG_PATH_COLUMNS, path_column, "image path", where)
    out = []
    for gid, loc in zip(df[idc].astype(str), df[pc]):
        if pd.isna(loc) or not str(loc).strip():
            out.append(Item(gid, ""))
            continue
        p = Path(str(loc).strip())
        out.append(Item(gid, str(p if p.is_absolute() else base / p)))
    return out


def _image_columns() -> tuple[str, ...]:
    from gzpipe.catalog import IMAGE_COLUMNS

    return IMAGE_COLUMNS


def _carried_images(path: Path, cols: list[str], path_column: str | None) -> list[bytes] | None:
    """The images a parquet catalogue carries in an image column (Hugging Face's ``Image`` feature, ``{bytes,
    path}``, or plain bytes: ``gzpipe.catalog.IMAGE_COLUMNS``), or None when it names files instead."""
    from gzpipe.catalog import IMAGE_COLUMNS

    col = path_column if path_column in IMAGE_COLUMNS else next((c for c in IMAGE_COLUMNS if c in cols), None)
    if col is None or Path(path).suffix.lower() != ".parquet":
        return None  # a text catalogue's image column holds file names
    import pandas as pd

    from gzpipe.catalog.formats import _image_bytes
    from gzpipe.fileio import local_path

    values = pd.read_parquet(local_path(path), columns=[col])[col]
    if not any(isinstance(v, (dict, bytes, bytearray, memoryview)) for v in values.head(8)):
        return None  # a column of file names after all
    return [_image_bytes(v) for v in values]


def collect_inputs(inputs: list[str | Path], images: Path | None = None, id_column: str | None = None,
                   path_column: str | None = None) -> Inputs:
    found = Inputs()
    seen: set[str] = set()
    subfolders: list[Path] = []

    def add(it: Item) -> None:
        key = it.path if "::" in it.path or not it.path or it.data is not None else str(Path(it.path).resolve())
        if it.path and key in seen:
            found.duplicates += 1
            return
        seen.add(key)
        found.items.append(it)

    for raw in inputs:
        p = Path(raw)
        if p.is_dir() and (p / MANIFEST).exists():
            if p.resolve() not in {f.resolve() for f in found.shard_folders}:
                found.shard_folders.append(p)
            else:
                found.duplicates += 1
        elif p.is_dir():
            fits_files = []
            for f in sorted(p.iterdir()):
                if f.name.startswith("."):
                    continue
                if f.is_dir():
                    subfolders.append(f)
                elif not f.is_file():
                    continue
                elif fits_suffix(f.name):
                    fits_files.append(str(f))
                elif f.suffix.lower() in IMAGE_SUFFIXES:
                    add(Item(f.stem, str(f)))
                else:
                    found.skipped.append(f"{f} (not an image file: {f.suffix or 'no suffix'})")
            band_sets, single = group_band_files(fits_files)
            for stem, path in band_sets:  # three band files of one galaxy: one colour image
                add(Item(stem, path))
            for f in single:
                add(Item(Path(f).name[: -len(fits_suffix(f))], f))
        elif p.suffix.lower() == ".tar" and p.is_file():
            for it in _tar_items(p):
                add(it)
        elif p.suffix.lower() in CATALOG_SUFFIXES and p.is_file():
            for it in catalog_items(p, images, id_column, path_column):
                add(it)
        elif p.exists():
            add(Item(p.stem, str(p)))
        else:
            raise GzpipeError(f"input not found: {p}")
    if not found.items and not found.shard_folders:
        sub = ""
        if subfolders:
            shown = ", ".join(str(f) for f in subfolders[:3]) + (" ..." if len(subfolders) > 3 else "")
            sub = (f"; {len(subfolders)} subfolder(s) ({shown}) were not searched: predict reads the files of the "
                   "folders it is given, not their subfolders; give the subfolders themselves (e.g. DIR/*/) or a "
                   "catalogue of the images")
        skipped = ""
        if found.skipped:
            skipped = f"; skipped {len(found.skipped)} other file(s): " + "; ".join(found.skipped[:3])
        raise GzpipeError("no images found in the inputs (folders are searched for "
                          + ", ".join(IMAGE_SUFFIXES) + ")" + skipped + sub)
    return found
