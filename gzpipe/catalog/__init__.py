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

Labels are checked as vote fractions (``gzpipe.catalog.table.check_fractions``): in [0, 1]; for the kinds that sum to
one (weighted and raw fractions, Kaggle's once made conditional), a reached question whose fractions sum further than
``sum_tolerance`` from 1 rejects its row with the reason; an answer left empty masks its whole question for that
galaxy, counted per question (``table.attrs["empty_answers"]``).

The files themselves (Parquet or delimited text) are read by ``gzpipe.tables``; the table's columns, the source and
the checks every format shares are ``gzpipe.catalog.table``, each format's reader ``gzpipe.catalog.formats``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from gzpipe import schema
from gzpipe.catalog.campaigns import CAMPAIGNS, campaigns_of, describe, others
from gzpipe.catalog.formats import _from_hart16, _from_kaggle, _from_zoobot
from gzpipe.catalog.table import (FORMATS, IMAGE_COLUMNS, MASK_COLUMNS, MASK_PREFIX, METADATA, RANGE_TOL,
                                  REACHED_KINDS, SUM_TOLERANCE, CatalogSource, check_fractions, read_csv, show)
from gzpipe.errors import CatalogError
from gzpipe.tables import read_header

__all__ = ["FORMATS", "IMAGE_COLUMNS", "KINDS_OF_FORMAT", "MASK_COLUMNS", "MASK_PREFIX", "METADATA", "RANGE_TOL",
           "SUM_TOLERANCE", "CatalogSource", "detect_format", "format_of", "mask_array", "read_catalog", "target_array"]


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
    mixed = _check_campaigns(header, src)
    fmt = src.format if src.format != "auto" else detect_format(pd.DataFrame(columns=header), src.catalog)
    if src.format != "auto":
        _check_forced_format(fmt, header, src.catalog)
    kind = KINDS_OF_FORMAT.get(fmt, src.target or "debiased")
    if src.target is not None and src.target != kind:
        raise CatalogError(f"{src.catalog}: --target {src.target} cannot be honoured: {_FORMAT_NAMES[fmt]} "
                           f"(--target {kind}, or leave --target out)")
    df = read_csv(src.catalog, usecols=_wanted(fmt, header, kind))
    if fmt == "zoobot":
        table = _from_zoobot(df, src)
    elif fmt == "kaggle":
        table = _from_kaggle(df, src)
    else:
        table = _from_hart16(df, src, kind)
    table.attrs.update(target_kind=kind, format=fmt)
    table.attrs["empty_answers"] = check_fractions(table, kind, src.sum_tolerance, table.attrs.get("tasks_absent", []))
    _reject_unlabelled(table, mixed)
    if mixed:
        table.attrs["other_campaigns"] = mixed
    if fmt == "zoobot":
        return table
    if src.images is None:
        raise CatalogError(f"{src.catalog}: --images is needed: this catalogue's ids name image files "
                           f"(<{'GalaxyID' if fmt == 'kaggle' else 'asset_id'}>.jpg) in a folder")
    prefix = str(Path(src.images)) + os.sep  # string joins: a pathlib join per row costs seconds at 240k rows
    table.insert(1, "path", [prefix + i + ".jpg" if i else "" for i in table["id"]])
    return table


def _check_campaigns(header: list[str], src: CatalogSource) -> dict[str, int]:
    """A galaxy-datasets catalogue of another Galaxy Zoo campaign is refused naming it; one that mixes GZ2 with
    others is read for its GZ2 columns (returns the others, for the rows that hold no GZ2 vote)."""
    found = campaigns_of(header)
    other = others(found)
    if not other:
        return {}
    if CAMPAIGNS["gz2"] not in found:
        raise CatalogError(f"{src.catalog} is a {describe(other)} catalogue in galaxy-datasets' column names, not a "
                           "GZ2 one: gzpipe learns GZ2's decision tree (galaxy-datasets' -gz2 columns, Hart16's or "
                           "Kaggle's), and the other campaigns ask other questions with other answers (DECaLS's bar "
                           "is strong / weak / no, its bulge size has five answers); their votes are not read as "
                           "GZ2's")
    return other


def _reject_unlabelled(table: pd.DataFrame, mixed: dict[str, int]) -> None:
    """A row with no usable label for any of the 10 questions is rejected with the reason (never written as a train
    galaxy whose every target is masked); in a catalogue that mixes campaigns, the reason names them."""
    none = ~table[MASK_COLUMNS].to_numpy(bool).any(axis=1) & (table["reject"] == "").to_numpy()
    if not none.any():
        return
    why = ("no GZ2 vote for any of the 10 questions" + (f": its votes are in this catalogue's other campaigns' "
           f"columns ({', '.join(mixed)}), which gzpipe does not read as GZ2's" if mixed else ""))
    table.loc[none, "reject"] = why


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
        reached = [k for k in REACHED_KINDS if complete(k)][:1]
        kinds = {target, *reached} if complete(target) else {*REACHED_KINDS, *schema.TARGET_KINDS}
        for kind in kinds:
            want.update(f"{n}_{kind}" for n in schema.TARGET_NAMES)
    return [c for c in header if c in want]


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
                       f"catalogue has none (found {show(header)}){looks}")


def detect_format(df: pd.DataFrame, name: Path | str = "catalogue") -> str:
    if "GalaxyID" in df.columns:
        return "kaggle"
    if "id_str" in df.columns and any(str(c).startswith("smooth-or-featured-gz2") for c in df.columns):
        return "zoobot"
    if "asset_id" in df.columns or "dr7objid" in df.columns:
        return "hart16"
    raise CatalogError(
        f"{name}: cannot tell the format: expected a 'GalaxyID' column (Kaggle), 'dr7objid' / 'asset_id' "
        f"(Hart16) or 'id_str' with '...-gz2_...' vote columns (Zoobot); found {show(list(df.columns))}. Pass "
        "--format to say which."
    )


def target_array(table: pd.DataFrame) -> np.ndarray:
    return table[list(schema.TARGET_NAMES)].to_numpy(dtype=np.float32)


def mask_array(table: pd.DataFrame) -> np.ndarray:
    return table[MASK_COLUMNS].to_numpy(dtype=np.uint8)
