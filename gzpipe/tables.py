"""Catalogue files as tables: Parquet, or delimited text (comma, tab, semicolon or bar, found from the header;
``.gz`` too), every reader's failure turned into one ``CatalogError`` line that names the file. The format readers
(``gzpipe.catalog``) and ``gzpipe predict --catalog`` read through these.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from gzpipe.errors import CatalogError
from gzpipe.fileio import local_path

DELIMITERS = (",", "\t", ";", "|")
LARGE_CSV_BYTES = 64 * 2**20


def read_header(path: str | Path) -> list[str]:
    """A catalogue's column names, without reading its rows."""
    path = _catalog_file(path)
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        with _read_errors(path, None):
            return [str(c).strip() for c in pq.read_schema(path).names]
    sep = sniff_delimiter(path)
    with _read_errors(path, sep):
        cols = pd.read_csv(path, sep=sep, nrows=0).columns
    return [str(c).strip() for c in cols]


def _catalog_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise CatalogError(f"catalogue not found: {path}")
    if path.is_dir():
        raise CatalogError(f"{path} is a folder; give the catalogue file")
    return path


@contextmanager
def _read_errors(path: Path, sep: str | None):
    """The reader's exceptions as one-line ``CatalogError``s: Parquet (``sep`` None) or ``sep``-separated text."""
    try:
        yield
    except CatalogError:
        raise
    except pd.errors.EmptyDataError:
        raise CatalogError(f"{path}: the catalogue is empty (no header, no rows)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError, ValueError) as e:
        if sep is None:
            raise CatalogError(f"{path}: cannot read it as Parquet ({type(e).__name__})") from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        what = {",": "comma", "\t": "tab", ";": "semicolon", "|": "bar"}[sep]
        raise CatalogError(f"{path}: cannot read it as {what}-separated text: {first[:200]}") from None
    except Exception as e:  # noqa: BLE001 - pyarrow raises many kinds for a damaged file
        if sep is None:
            raise CatalogError(f"{path}: cannot read it as Parquet ({type(e).__name__})") from None
        raise


def sniff_delimiter(path: Path) -> str:
    """The delimiter of a text table, from its header line: the most frequent of ``DELIMITERS`` (comma when none)."""
    import gzip

    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rt", errors="replace") as f:
            header = f.readline(1 << 20)
    except (OSError, EOFError):
        return ","
    counts = {d: header.count(d) for d in DELIMITERS}
    best = max(counts, key=counts.get)
    return best if counts[best] > 0 else ","


def read_table(path: str | Path, dtype=None, usecols: list[str] | None = None) -> pd.DataFrame:
    """A catalogue file as a DataFrame: Parquet, or delimited text (comma, tab, semicolon or bar, found from the
    header; ``.gz`` too). ``dtype`` as pandas takes it (for text; Parquet keeps its own types); ``usecols``: only
    these columns (names as the header has them)."""
    path = _catalog_file(path)
    if path.suffix.lower() == ".parquet":
        with _read_errors(path, None):
            df = pd.read_parquet(local_path(path), columns=usecols)
        if dtype is str:
            df = df.astype(str).where(df.notna(), None)
    else:
        sep = sniff_delimiter(path)
        # pyarrow's parser is ~1.5x faster on the full release (231 columns x 240k rows); pandas' own is kept for
        # small files, where its row-by-row leniency is what the bad-catalogue tests pin down
        fast = path.stat().st_size > LARGE_CSV_BYTES and not str(path).endswith(".gz")
        with _read_errors(path, sep):
            if fast:
                if isinstance(dtype, dict):
                    with open(path, errors="replace") as f:
                        header = [c.strip().strip('"') for c in f.readline().rstrip("\r\n").split(sep)]
                    dtype = {k: v for k, v in dtype.items() if k in header}
                df = pd.read_csv(path, sep=sep, dtype=dtype, engine="pyarrow", usecols=usecols)
            else:
                keep = None if usecols is None else set(usecols)
                df = pd.read_csv(path, sep=sep, dtype=dtype, low_memory=False,
                                 usecols=None if keep is None else (lambda c: str(c).strip() in keep))
    if len(df) == 0:
        raise CatalogError(f"{path}: the catalogue has a header but no rows")
    df.columns = [str(c).strip() for c in df.columns]
    return df
