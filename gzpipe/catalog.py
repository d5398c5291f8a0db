"""Catalogue readers: every GZ2 label format becomes one table with gzpipe's 30 conditional targets.

The table (a pandas DataFrame) has, per row:

* ``id``: the galaxy's image stem (Hart16 ``asset_id`` or Kaggle ``GalaxyID``), a string;
* ``path``: the image file ``<images>/<id>.jpg`` (empty when the row could not be joined to an image name);
* the 30 targets, named ``TARGET_NAMES`` (float64; NaN where the catalogue has NaN);
* the 30 mask columns ``mask:<target>`` (bool; False for NaN and for tasks nobody reached);
* the metadata kept (``dr7objid``, ``ra``, ``dec``, ``sample``, ``gz2_class``, ... where present);
* ``reject``: an empty string, or the reason this row cannot be used (the shard stage lists these).

Three formats are read:

1. the real release: ``gz2_hart16.csv[.gz]`` + ``gz2_filename_mapping.csv`` (join ``dr7objid`` = ``objid``);
2. any CSV with Hart16 answer columns and an ``asset_id`` column (e.g. the 800-galaxy sample);
3. Kaggle's ``GalaxyID, Class1.1 ... Class11.6`` (cumulative), converted to conditional fractions;
4. galaxy-datasets' (Zoobot's) GZ2 catalogues: ``id_str``, ``file_loc`` or the images themselves, vote counts.

Each format names the kind of fraction it really holds (``table.attrs["target_kind"]``): Hart16 the family
``--target`` picks (debiased by default), Kaggle GZ2's weighted fractions, galaxy-datasets the raw vote fractions.

A catalogue may carry only some of the 10 questions (a partial release, another survey's question set): a question
whose answer columns are all absent is masked for every galaxy (``table.attrs["tasks_absent"]``), never filled with
numbers that look like answers; a question with some of its answer columns is an error, and so is any absent question
when ``all_questions`` is set.

The files themselves (Parquet or delimited text) are read by ``gzpipe.tables``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gzpipe import schema
from gzpipe.errors import CatalogError
from gzpipe.tables import read_header, read_table

FORMATS = ("auto", "hart16", "kaggle", "zoobot")
MASK_PREFIX = "mask:"
MASK_COLUMNS = [MASK_PREFIX + n for n in schema.TARGET_NAMES]
RANGE_TOL = 1e-6
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


KINDS_OF_FORMAT = {"kaggle": "weighted_fraction", "zoobot": "fraction"}  # the one kind each of these formats holds
_FORMAT_NAMES = {"kaggle": "Kaggle's columns are GZ2's weighted vote fractions",
                 "zoobot": "galaxy-datasets' columns are the volunteers' raw vote fractions"}


def read_catalog(src: CatalogSource) -> pd.DataFrame:
    """Read any supported catalogue into gzpipe's table (see the module docstring)."""
    if src.format not in FORMATS:
        raise CatalogError(f"unknown --format {src.format!r}; choose one of {', '.join(FORMATS)}")
    if src.target is not None and src.target not in schema.TARGET_KINDS:
        raise CatalogError(f"unknown --target {src.target!r}; choose one of {', '.join(schema.TARGET_KINDS)}")
    header = read_header(src.catalog)
    fmt = src.format if src.format != "auto" else detect_format(pd.DataFrame(columns=header), src.catalog)
    if src.format != "auto":
        _check_forced_format(fmt, header, src.catalog)
    kind = KINDS_OF_FORMAT.get(fmt, src.target or "debiased")
    if src.target is not None and src.target != kind:
        raise CatalogError(f"{src.catalog}: --target {src.target} cannot be honoured: {_FORMAT_NAMES[fmt]} "
                           f"(--target {kind}, or leave --target out)")
    df = _read_csv(src.catalog, usecols=_wanted(fmt, header, kind))
    if fmt == "zoobot":
        table = _from_zoobot(df, src)
    elif fmt == "kaggle":
        table = _from_kaggle(df, src)
    else:
        table = _from_hart16(df, src, kind)
    table.attrs.update(target_kind=kind, format=fmt)
    if fmt == "zoobot":
        return table
    if src.images is None:
        raise CatalogError(f"{src.catalog}: --images is needed: this catalogue's ids name image files "
                           f"(<{'GalaxyID' if fmt == 'kaggle' else 'asset_id'}>.jpg) in a folder")
    prefix = str(Path(src.images)) + os.sep  # string joins: a pathlib join per row costs seconds at 240k rows
    table.insert(1, "path", [prefix + i + ".jpg" if i else "" for i in table["id"]])
    return table


def format_of(src: CatalogSource) -> str:
    """The catalogue's format: ``src.format``, or the one its header shows."""
    return src.format if src.format != "auto" else detect_format(pd.DataFrame(columns=read_header(src.catalog)),
                                                                 src.catalog)


def _wanted(fmt: str, header: list[str], target: str) -> list[str]:
    """The columns a format needs (the release has 231; reading the ~70 used takes a third of the time and memory)."""
    if fmt == "kaggle":
        want = {"GalaxyID", *schema.KAGGLE_COLUMNS}
    elif fmt == "zoobot":
        want = {"id_str", "file_loc", *IMAGE_COLUMNS, "ra", "dec", *schema.zoobot_columns("count"),
                *schema.zoobot_columns("fraction"), *schema.zoobot_columns("total")}
    else:
        want = {"asset_id", "dr7objid", "gz2class", *METADATA}
        have = set(header)

        def complete(kind: str) -> bool:
            return all(f"{n}_{kind}" in have for n in schema.TARGET_NAMES)

        # the target's family and the first family _reached_tasks reads (half the columns: 0.8 s less at 240k
        # rows); every family when the target's is incomplete, so that the error can name the complete ones
        reached = [k for k in _REACHED_KINDS if complete(k)][:1]
        kinds = {target, *reached} if complete(target) else {*_REACHED_KINDS, *schema.TARGET_KINDS}
        for kind in kinds:
            want.update(f"{n}_{kind}" for n in schema.TARGET_NAMES)
    return [c for c in header if c in want]


_REACHED_KINDS = ("count", "weighted_fraction", "fraction")  # the order _reached_tasks tries them in
# Columns that hold the images themselves (Hugging Face's ``Image`` feature: {bytes, path}; or plain bytes), as
# galaxy-datasets' parquet files carry them
IMAGE_COLUMNS = ("image", "img", "image_bytes")


_FORMAT_IDS = {"kaggle": ("GalaxyID",), "zoobot": ("id_str",), "hart16": ("asset_id", "dr7objid")}


def _check_forced_format(fmt: str, header: list[str], name: Path) -> None:
    """``--format X`` on a catalogue without X's id column: one line naming the column and the format it looks like."""
    ids = _FORMAT_IDS[fmt]
    if any(c in header for c in ids):
        return
    try:
        looks = f"; it looks like the {detect_format(pd.DataFrame(columns=header), name)} format (--format auto " \
                "tells them apart)"
    except CatalogError:
        looks = ""
    raise CatalogError(f"{name}: --format {fmt} needs a {' or '.join(repr(c) for c in ids)} column, and the "
                       f"catalogue has none (found {_show(header)}){looks}")


def detect_format(df: pd.DataFrame, name: Path | str = "catalogue") -> str:
    if "GalaxyID" in df.columns:
        return "kaggle"
    if "id_str" in df.columns and any(str(c).startswith("smooth-or-featured-gz2") for c in df.columns):
        return "zoobot"
    if "asset_id" in df.columns or "dr7objid" in df.columns:
        return "hart16"
    raise CatalogError(
        f"{name}: cannot tell the format: expected a 'GalaxyID' column (Kaggle), 'dr7objid' / 'asset_id' "
        f"(Hart16) or 'id_str' with '...-gz2_...' vote columns (Zoobot); found {_show(list(df.columns))}. Pass "
        "--format to say which."
    )


def target_array(table: pd.DataFrame) -> np.ndarray:
    return table[list(schema.TARGET_NAMES)].to_numpy(dtype=np.float32)


def mask_array(table: pd.DataFrame) -> np.ndarray:
    return table[MASK_COLUMNS].to_numpy(dtype=np.uint8)


def _read_csv(path: Path, usecols: list[str] | None = None) -> pd.DataFrame:
    return read_table(path, dtype={c: str for c in _ID_COLUMNS}, usecols=usecols)


def _norm_id(s: pd.Series) -> pd.Series:
    """Ids as clean strings: '123.0' -> '123', NaN -> ''."""
    out = s.astype("string").fillna("").str.strip()
    return out.str.replace(r"\.0+$", "", regex=True).astype(object)


def _show(cols: list[str], n: int = 6) -> str:
    """A short excerpt of column names (a header read with the wrong delimiter is one very long name)."""
    head = ", ".join(c if len(c) <= 40 else c[:37] + "..." for c in cols[:n])
    return head + (f" and {len(cols) - n} more" if len(cols) > n else "")


def _require(df: pd.DataFrame, cols: list[str], name: Path, hint: str = "") -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise CatalogError(f"{name}: missing {len(missing)} column(s): {_show(missing)}{hint}")


def _questions(columns: set[str], wanted: dict[str, list[str]], src: CatalogSource, what: str) -> list[str]:
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
            raise CatalogError(f"{src.catalog}: question {task} has {_show(have, 3)} but not {_show(missing, 3)}: "
                               "an answer missing within a question cannot be masked (its fractions would not add "
                               "up)" + what)
        absent.append(task)
    if len(absent) == len(wanted):
        missing = [c for cols in wanted.values() for c in cols]
        raise CatalogError(f"{src.catalog}: missing {len(missing)} column(s): {_show(missing)}{what}")
    if absent and src.all_questions:
        raise CatalogError(f"{src.catalog}: {len(absent)} of {len(wanted)} questions absent ({', '.join(absent)}; "
                           f"e.g. no column {wanted[absent[0]][0]}); without --all-questions they are masked")
    return absent


def _with_absent(df: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """``df`` with every column of ``cols`` it lacks added as empty (NaN: masked)."""
    lacking = [c for c in cols if c not in df.columns]
    return df.assign(**{c: np.nan for c in lacking}) if lacking else df


# --- Hart16 ----------------------------------------------------------------------------------------------------


def _from_hart16(df: pd.DataFrame, src: CatalogSource, kind: str) -> pd.DataFrame:
    cols = schema.target_columns(kind)
    present = [k for k in schema.TARGET_KINDS if all(c in df.columns for c in schema.target_columns(k))]
    hint = f" (this file has complete --target families: {', '.join(present)})" if present else ""
    absent = _questions(set(df.columns), {t.name: [f"{c}_{kind}" for c in t.columns] for t in schema.TASKS}, src,
                        hint)
    df = _with_absent(df, cols)
    if "gz2class" in df.columns and "gz2_class" not in df.columns:
        df = df.rename(columns={"gz2class": "gz2_class"})

    reject = pd.Series("", index=df.index, dtype=object)
    if "asset_id" in df.columns:
        ids = _norm_id(df["asset_id"])
    else:
        _require(df, ["dr7objid"], src.catalog)
        if src.mapping is None:
            raise CatalogError(
                f"{src.catalog}: has dr7objid but no asset_id column; pass --mapping gz2_filename_mapping.csv "
                "to find each galaxy's image"
            )
        mapping_header = read_header(src.mapping)
        mapping = _read_csv(src.mapping, usecols=[c for c in mapping_header if c in ("objid", "asset_id")])
        _require(mapping, ["objid", "asset_id"], src.mapping)
        mapping = mapping.assign(objid=_norm_id(mapping["objid"]), asset_id=_norm_id(mapping["asset_id"]))
        mapping = mapping[mapping["asset_id"] != ""].drop_duplicates("objid", keep="first")
        lookup = dict(zip(mapping["objid"], mapping["asset_id"]))
        objid = _norm_id(df["dr7objid"])
        ids = objid.map(lambda o: lookup.get(o, ""))
        reject[ids == ""] = "no row in the filename mapping for this dr7objid"
    missing_id = (ids == "") & (reject == "")
    reject[missing_id] = "empty asset_id"

    values, not_numbers = _numeric(df, cols)
    reject = reject.where(reject != "", not_numbers)
    reached = _reached_tasks(df)
    table = _assemble(ids, values, reached, reject, cols)
    for m in METADATA:
        if m in df.columns:
            table[m] = df[m].to_numpy()
    table.attrs["tasks_absent"] = absent
    return table


def _reached_tasks(df: pd.DataFrame) -> np.ndarray:
    """(n, 30) bool: did any volunteer answer the task? Per task, from its counts, else its plain or weighted
    fractions, where the catalogue has them.

    A task nobody reached has count 0 and fraction 0 in Hart16 (not NaN); its conditional fraction is 0/0, so
    those targets get mask 0. A task without count or fraction columns counts as reached.
    """
    reached = np.ones((len(df), schema.N_TARGETS), dtype=bool)
    for t in schema.TASKS:
        for kind in _REACHED_KINDS:
            cols = [f"{c}_{kind}" for c in t.columns]
            if all(c in df.columns for c in cols):
                v = df[cols].apply(pd.to_numeric, errors="coerce").fillna(0).to_numpy()
                reached[:, schema.TASK_SLICES[t.name]] = (v.sum(axis=1) > 0)[:, None]
                break
    return reached


# --- Zoobot / galaxy-datasets -------------------------------------------------------------------------------------


def _from_zoobot(df: pd.DataFrame, src: CatalogSource) -> pd.DataFrame:
    """galaxy-datasets' GZ2 catalogue: ``id_str``, ``file_loc``, vote counts ``{question}_{answer}``,
    ``{question}_total-votes`` and (optionally) ``{question}_{answer}_fraction``; the column mapping is
    ``schema.ZOOBOT_GZ2``. Targets are the vote fractions (the ``_fraction`` columns, else count / total); a question
    nobody answered (total 0) is masked. Images are the ``file_loc`` paths, relative ones taken from ``images``."""
    image_col = next((c for c in IMAGE_COLUMNS if c in df.columns), None)
    _require(df, ["id_str"] if image_col else ["id_str", "file_loc"], src.catalog,
             "" if image_col else f" (or a column with the images themselves: {', '.join(IMAGE_COLUMNS)})")
    counts, fractions, totals = (schema.zoobot_columns(k) for k in ("count", "fraction", "total"))
    columns = set(df.columns)
    has_fraction = any(c in columns for c in fractions)  # the _fraction columns where there are any, else counts
    source = fractions if has_fraction else counts
    wanted = {}
    for t in schema.TASKS:
        s = schema.TASK_SLICES[t.name]
        wanted[t.name] = [*source[s], totals[s.start]]
    absent = _questions(columns, wanted, src, " (vote counts, or _fraction columns, and each question's _total-votes)")
    df = _with_absent(df, source + sorted(set(totals)))
    ids = _norm_id(df["id_str"])
    reject = pd.Series("", index=df.index, dtype=object)
    reject[ids == ""] = "empty id_str"
    total_values, not_numbers = _numeric(df, totals)
    reject = reject.where(reject != "", not_numbers)
    if has_fraction:
        values, bad = _numeric(df, fractions)
    else:
        raw, bad = _numeric(df, counts)
        with np.errstate(divide="ignore", invalid="ignore"):
            values = np.where(total_values > 0, raw / np.where(total_values > 0, total_values, 1),
                              np.where(np.isnan(total_values), np.nan, 0.0))
    reject = reject.where(reject != "", bad)
    reached = np.nan_to_num(total_values) > 0
    table = _assemble(ids, values, reached, reject, source)
    table.attrs["tasks_absent"] = absent
    if image_col:  # the images travel in the catalogue: their bytes stand where a path would
        table.insert(1, "path", [_image_bytes(v) for v in df[image_col]])
        missing = table["path"].map(len) == 0
        table.loc[missing & (table["reject"] == ""), "reject"] = f"no image bytes in column {image_col}"
    else:
        base = Path(src.images) if src.images else Path(src.catalog).parent
        prefix = str(base) + os.sep
        locs = df["file_loc"].astype("string").fillna("").str.strip()
        table.insert(1, "path", [loc if loc.startswith(os.sep) or not loc else prefix + loc for loc in locs])
        missing = table["path"] == ""
        table.loc[missing & (table["reject"] == ""), "reject"] = "empty file_loc"
    for m in ("ra", "dec"):
        if m in df.columns:
            table[m] = df[m].to_numpy()
    return table


def _image_bytes(v) -> bytes:
    """A cell of an image column: Hugging Face's ``{"bytes": ..., "path": ...}``, or the bytes themselves."""
    if isinstance(v, dict):
        v = v.get("bytes")
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    return b""


# --- Kaggle ----------------------------------------------------------------------------------------------------


def _from_kaggle(df: pd.DataFrame, src: CatalogSource) -> pd.DataFrame:
    name = src.catalog
    _require(df, ["GalaxyID"], name)
    questions = {t.name: [f"Class{t.kaggle_question}.{k}" for k in range(1, len(t.answers) + 1)] for t in schema.TASKS}
    absent = _questions(set(df.columns), questions, src, "")
    df = _with_absent(df, list(schema.KAGGLE_COLUMNS))  # an absent question (and task 8, unused) is empty: masked
    ids = _norm_id(df["GalaxyID"])
    raw, not_numbers = _numeric(df, list(schema.KAGGLE_COLUMNS))
    reject = pd.Series("", index=df.index, dtype=object)
    reject[ids == ""] = "empty GalaxyID"
    reject = reject.where(reject != "", not_numbers)
    bad = _range_reasons(raw, list(schema.KAGGLE_COLUMNS))
    reject = reject.where(reject != "", bad)
    cond, mask = schema.kaggle_to_targets(np.clip(raw, 0.0, 1.0))
    # Rounding in the cumulative values can push a child a hair above its parent; more than 1e-3 is bad data.
    over = (cond > 1 + 1e-3) & mask
    rows = np.flatnonzero(over.any(axis=1))
    for r in rows:
        if reject.iat[r] == "":
            j = int(np.flatnonzero(over[r])[0])
            reject.iat[r] = f"{schema.KAGGLE_TARGET_COLUMNS[j]} exceeds the value of the answer that leads to it"
    cond = np.clip(cond, 0.0, 1.0)
    table = _assemble(ids, cond, mask, reject, list(schema.KAGGLE_TARGET_COLUMNS), check_range=False)
    table.attrs["tasks_absent"] = absent
    return table


# --- shared ----------------------------------------------------------------------------------------------------


def _numeric(df: pd.DataFrame, cols: list[str]) -> tuple[np.ndarray, pd.Series]:
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


def _range_reasons(values: np.ndarray, cols: list[str]) -> pd.Series:
    bad = (values < -RANGE_TOL) | (values > 1 + RANGE_TOL)
    out = np.full(len(values), "", dtype=object)
    for r in np.flatnonzero(bad.any(axis=1)):
        j = int(np.flatnonzero(bad[r])[0])
        out[r] = f"{cols[j]} = {values[r, j]:.6g} is outside [0, 1]"
    return pd.Series(out)


def _assemble(
    ids: pd.Series,
    values: np.ndarray,
    reached: np.ndarray,
    reject: pd.Series,
    source_cols: list[str],
    check_range: bool = True,
) -> pd.DataFrame:
    reject = reject.reset_index(drop=True)
    if check_range:
        bad = _range_reasons(values, source_cols)
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
