"""The table every catalogue format becomes (``gzpipe.catalog``): its columns, the source it is read from, and the
checks every format shares (ids, required columns, absent questions, numeric values in range, the final assembly)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gzpipe import schema
from gzpipe.errors import CatalogError
from gzpipe.tables import read_table


FORMATS = ("auto", "hart16", "kaggle", "zoobot")
MASK_PREFIX = "mask:"
MASK_COLUMNS = [MASK_PREFIX + n for n in schema.TARGET_NAMES]
RANGE_TOL = 1e-6
# How far from 1 a reached question's fractions may sum (weighted and raw fractions, Kaggle's once made conditional):
# rounding in the real files moves them by at most 0.002 (Hart16's weighted fractions of the 800-galaxy sample; Kaggle's
# 7,336 rows sum exactly), so 0.02 passes every real row and refuses what cannot be vote fractions (0.5 + 0.5 + 0.5).
SUM_TOLERANCE = 0.02
SUMS_TO_ONE = ("weighted_fraction", "fraction")  # Hart16's debiased fractions are corrected one by one: they do not
METADATA = ("dr7objid", "ra", "dec", "sample", "gz2_class", "total_classifications", "total_votes")
_ID_COLUMNS = ("dr7objid", "objid", "asset_id", "GalaxyID")


@dataclass(frozen=True)
class CatalogSource:
    catalog: Path
    images: Path | None  # None: the catalogue says where each image is (absolute file_loc, or its image bytes)
    mapping: Path | None = None
    format: str = "auto"
    target: str | None = None  # Hart16's column family (None: debiased); other formats hold one kind, named above
    all_questions: bool = False  # an absent question is an error, not a note
    sum_tolerance: float = SUM_TOLERANCE  # a reached question's fractions must sum to 1 within this (kinds that do)


REACHED_KINDS = ("count", "weighted_fraction", "fraction")  # the order _reached_tasks tries them in
# Columns that hold the images themselves (Hugging Face's ``Image`` feature: {bytes, path}; or plain bytes), as
# galaxy-datasets' parquet files carry them
IMAGE_COLUMNS = ("image", "img", "image_bytes")


def read_csv(path: Path, usecols: list[str] | None = None) -> pd.DataFrame:
    return read_table(path, dtype={c: str for c in _ID_COLUMNS}, usecols=usecols)


def norm_id(s: pd.Series) -> pd.Series:
    """Ids as clean strings: '123.0' -> '123', NaN -> ''."""
    out = s.astype("string").fillna("").str.strip()
    return out.str.replace(r"\.0+$", "", regex=True).astype(object)


def show(cols: list[str], n: int = 6) -> str:
    """A short excerpt of column names (a header read with the wrong delimiter is one very long name)."""
    head = ", ".join(c if len(c) <= 40 else c[:37] + "..." for c in cols[:n])
    return head + (f" and {len(cols) - n} more" if len(cols) > n else "")


def require(df: pd.DataFrame, cols: list[str], name: Path, hint: str = "") -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise CatalogError(f"{name}: missing {len(missing)} column(s): {show(missing)}{hint}")


def absent_questions(columns: set[str], wanted: dict[str, list[str]], src: CatalogSource, what: str) -> list[str]:
    """The tasks of ``wanted`` (task -> the columns that carry it) whose columns are all absent from ``columns``:
    absent questions, masked for every galaxy. A task with only some of its columns is an error, and so is every
    absent one under ``all_questions``, or when no task is present at all."""
    absent = []
    for task, cols in wanted.items():
        have = [c for c in cols if c in columns]
        if len(have) == len(cols):
            continue
        if have:
            missing = [c for c in cols if c not in columns]
            raise CatalogError(f"{src.catalog}: question {task} has {show(have, 3)} but not {show(missing, 3)}: "
                               "an answer missing within a question cannot be masked (its fractions would not add "
                               "up)" + what)
        absent.append(task)
    if len(absent) == len(wanted):
        missing = [c for cols in wanted.values() for c in cols]
        raise CatalogError(f"{src.catalog}: missing {len(missing)} column(s): {show(missing)}{what}")
    if absent and src.all_questions:
        raise CatalogError(f"{src.catalog}: {len(absent)} of {len(wanted)} questions absent ({', '.join(absent)}; "
                           f"e.g. no column {wanted[absent[0]][0]}); without --all-questions they are masked")
    return absent


def with_absent(df: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """``df`` with every column of ``cols`` it lacks added as empty (NaN: masked)."""
    lacking = [c for c in cols if c not in df.columns]
    return df.assign(**{c: np.nan for c in lacking}) if lacking else df


def numeric(df: pd.DataFrame, cols: list[str]) -> tuple[np.ndarray, pd.Series]:
    """The columns as float64 (empty / NA cells are NaN: masked targets) and, per row, the first cell that holds
    something other than a number (a reason to reject the row rather than silently mask it)."""
    raw = df[cols]
    values = raw.apply(pd.to_numeric, errors="coerce")
    junk = (values.isna() & raw.notna()).to_numpy()
    reasons = np.full(len(df), "", dtype=object)
    for r in np.flatnonzero(junk.any(axis=1)):
        j = int(np.flatnonzero(junk[r])[0])
        reasons[r] = f"{cols[j]} = {str(raw.iat[r, j])[:40]!r} is not a number"
    return values.to_numpy(dtype=np.float64), pd.Series(reasons, index=df.index)


def range_reasons(values: np.ndarray, cols: list[str]) -> pd.Series:
    bad = (values < -RANGE_TOL) | (values > 1 + RANGE_TOL)
    out = np.full(len(values), "", dtype=object)
    for r in np.flatnonzero(bad.any(axis=1)):
        j = int(np.flatnonzero(bad[r])[0])
        out[r] = f"{cols[j]} = {values[r, j]:.6g} is outside [0, 1]"
    return pd.Series(out)


def assemble(
    ids: pd.Series,
    values: np.ndarray,
    reached: np.ndarray,
    reject: pd.Series,
    source_cols: list[str],
    check_range: bool = True,
) -> pd.DataFrame:
    reject = reject.reset_index(drop=True)
    if check_range:
        bad = range_reasons(values, source_cols)
        reject = reject.where(reject != "", bad)
    nan = np.isnan(values)
    mask = reached & ~nan
    # Unreached tasks are 0/0: target 0 (never NaN, so it cannot poison a sum) with mask 0.
    targets = np.where(reached | nan, values, 0.0)
    targets = np.where(nan, np.nan, np.clip(targets, 0.0, 1.0))
    table = pd.DataFrame({"id": ids.reset_index(drop=True).to_numpy()})
    table = pd.concat(
        [
            table,
            pd.DataFrame(targets, columns=list(schema.TARGET_NAMES)),
            pd.DataFrame(mask, columns=MASK_COLUMNS),
        ],
        axis=1,
    )
    table["reject"] = reject.to_numpy()
    return table


def check_fractions(table: pd.DataFrame, kind: str, tolerance: float, absent: list[str]) -> dict[str, int]:
    """Checks of the 30 targets as vote fractions, in place on ``table`` (see ``gzpipe.catalog``):

    * an answer left empty (NaN) within a question whose other answers have values masks the whole question for
      that galaxy (its other answers' fractions are not the question's without it); returns how many galaxies per
      question (absent questions, empty for every galaxy, are not counted);
    * for kinds whose answers sum to one (``SUMS_TO_ONE``), a reached question's fractions that sum further than
      ``tolerance`` from 1 reject the row, with the sums in the reason."""
    y = table[list(schema.TARGET_NAMES)].to_numpy(np.float64)
    m = table[MASK_COLUMNS].to_numpy(bool, copy=True)
    empty: dict[str, int] = {}
    reject = table["reject"].to_numpy(dtype=object).copy()
    for task, sl in schema.TASK_SLICES.items():
        nan = np.isnan(y[:, sl])
        partial = nan.any(axis=1) & ~nan.all(axis=1)
        if partial.any() and task not in absent:
            empty[task] = int(partial.sum())
            m[partial, sl] = False
        if kind not in SUMS_TO_ONE:
            continue
        whole = m[:, sl].all(axis=1)
        total = np.where(whole, y[:, sl].sum(axis=1), 1.0)
        for r in np.flatnonzero(np.abs(total - 1.0) > tolerance):
            if reject[r] == "":
                parts = " + ".join(f"{v:.3g}" for v in y[r, sl])
                reject[r] = (f"{task}'s {kind.replace('_', ' ')}s sum to {total[r]:.3g} ({parts}), not 1 (within "
                             f"--sum-tolerance {tolerance:g}): not the vote fractions of one question")
    table[MASK_COLUMNS] = m
    table["reject"] = reject
    return empty
