"""Each catalogue format's reader into gzpipe's table (``gzpipe.catalog.table``): Hart16 (the release and the sample),
galaxy-datasets' (Zoobot's) catalogues, and Kaggle's cumulative columns."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from gzpipe import schema
from gzpipe.catalog.table import (IMAGE_COLUMNS, METADATA, REACHED_KINDS, CatalogSource, absent_questions, assemble,
                                  norm_id, numeric, range_reasons, read_csv, require, with_absent)
from gzpipe.errors import CatalogError
from gzpipe.tables import read_header


def _from_hart16(df: pd.DataFrame, src: CatalogSource, kind: str) -> pd.DataFrame:
    cols = schema.target_columns(kind)
    present = [k for k in schema.TARGET_KINDS if all(c in df.columns for c in schema.target_columns(k))]
    hint = f" (this file has complete --target families: {', '.join(present)})" if present else ""
    absent = absent_questions(set(df.columns), {t.name: [f"{c}_{kind}" for c in t.columns] for t in schema.TASKS}, src,
                        hint)
    df = with_absent(df, cols)
    if "gz2class" in df.columns and "gz2_class" not in df.columns:
        df = df.rename(columns={"gz2class": "gz2_class"})

    reject = pd.Series("", index=df.index, dtype=object)
    if "asset_id" in df.columns:
        ids = norm_id(df["asset_id"])
    else:
        require(df, ["dr7objid"], src.catalog)
        if src.mapping is None:
            raise CatalogError(
                f"{src.catalog}: has dr7objid but no asset_id column; pass --mapping gz2_filename_mapping.csv "
                "to find each galaxy's image"
            )
        mapping_header = read_header(src.mapping)
        mapping = read_csv(src.mapping, usecols=[c for c in mapping_header if c in ("objid", "asset_id")])
        require(mapping, ["objid", "asset_id"], src.mapping)
        mapping = mapping.assign(objid=norm_id(mapping["objid"]), asset_id=norm_id(mapping["asset_id"]))
        mapping = mapping[mapping["asset_id"] != ""].drop_duplicates("objid", keep="first")
        lookup = dict(zip(mapping["objid"], mapping["asset_id"]))
        objid = norm_id(df["dr7objid"])
        ids = objid.map(lambda o: lookup.get(o, ""))
        reject[ids == ""] = "no row in the filename mapping for this dr7objid"
    missing_id = (ids == "") & (reject == "")
    reject[missing_id] = "empty asset_id"

    values, not_numbers = numeric(df, cols)
    reject = reject.where(reject != "", not_numbers)
    reached = _reached_tasks(df)
    table = assemble(ids, values, reached, reject, cols)
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
        for kind in REACHED_KINDS:
            cols = [f"{c}_{kind}" for c in t.columns]
            if all(c in df.columns for c in cols):
                v = df[cols].apply(pd.to_numeric, errors="coerce").fillna(0).to_numpy()
                reached[:, schema.TASK_SLICES[t.name]] = (v.sum(axis=1) > 0)[:, None]
                break
    return reached


def _from_zoobot(df: pd.DataFrame, src: CatalogSource) -> pd.DataFrame:
    """galaxy-datasets' GZ2 catalogue: ``id_str``, ``file_loc``, vote counts ``{question}_{answer}``,
    ``{question}_total-votes`` and (optionally) ``{question}_{answer}_fraction``; the column mapping is
    ``schema.ZOOBOT_GZ2``. Targets are the vote fractions (the ``_fraction`` columns, else count / total); a question
    nobody answered (total 0) is masked. Images are the ``file_loc`` paths, relative ones taken from ``images``."""
    image_col = next((c for c in IMAGE_COLUMNS if c in df.columns), None)
    require(df, ["id_str"] if image_col else ["id_str", "file_loc"], src.catalog,
             "" if image_col else f" (or a column with the images themselves: {', '.join(IMAGE_COLUMNS)})")
    counts, fractions, totals = (schema.zoobot_columns(k) for k in ("count", "fraction", "total"))
    columns = set(df.columns)
    has_fraction = any(c in columns for c in fractions)  # the _fraction columns where there are any, else counts
    source = fractions if has_fraction else counts
    wanted = {}
    for t in schema.TASKS:
        s = schema.TASK_SLICES[t.name]
        wanted[t.name] = [*source[s], totals[s.start]]
    absent = absent_questions(columns, wanted, src, " (vote counts, or _fraction columns, and each question's _total-votes)")
    df = with_absent(df, source + sorted(set(totals)))
    ids = norm_id(df["id_str"])
    reject = pd.Series("", index=df.index, dtype=object)
    reject[ids == ""] = "empty id_str"
    total_values, not_numbers = numeric(df, totals)
    reject = reject.where(reject != "", not_numbers)
    if has_fraction:
        values, bad = numeric(df, fractions)
    else:
        raw, bad = numeric(df, counts)
        with np.errstate(divide="ignore", invalid="ignore"):
            values = np.where(total_values > 0, raw / np.where(total_values > 0, total_values, 1),
                              np.where(np.isnan(total_values), np.nan, 0.0))
    reject = reject.where(reject != "", bad)
    reached = np.nan_to_num(total_values) > 0
    table = assemble(ids, values, reached, reject, source)
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


def _from_kaggle(df: pd.DataFrame, src: CatalogSource) -> pd.DataFrame:
    name = src.catalog
    require(df, ["GalaxyID"], name)
    questions = {t.name: [f"Class{t.kaggle_question}.{k}" for k in range(1, len(t.answers) + 1)] for t in schema.TASKS}
    absent = absent_questions(set(df.columns), questions, src, "")
    df = with_absent(df, list(schema.KAGGLE_COLUMNS))  # an absent question (and task 8, unused) is empty: masked
    ids = norm_id(df["GalaxyID"])
    raw, not_numbers = numeric(df, list(schema.KAGGLE_COLUMNS))
    reject = pd.Series("", index=df.index, dtype=object)
    reject[ids == ""] = "empty GalaxyID"
    reject = reject.where(reject != "", not_numbers)
    bad = range_reasons(raw, list(schema.KAGGLE_COLUMNS))
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
    table = assemble(ids, cond, mask, reject, list(schema.KAGGLE_TARGET_COLUMNS), check_range=False)
    table.attrs["tasks_absent"] = absent
    return table
