"""A full-size stand-in of the GZ2 release, for scale benchmarks: the real release's shape without its 3.4 GB.

``build(dest, rows)`` writes, for ``rows`` catalogue rows (239,695 at full size):

* ``gz2_hart16.csv``: the 231 Hart16 columns (dr7objid, ra, dec, rastring, decstring, sample, gz2_class,
  total_classifications, total_votes, and count / weight / fraction / weighted_fraction / debiased / flag for each
  of the 37 answers). Rows repeat the real sample's vote fractions (``../shared/data/gz2_sample``) when it is
  there, else those of a small ``gzpipe synth`` release; counts and weights follow from the fractions.
* ``gz2_filename_mapping.csv``: 355,990 / 239,695 rows per catalogue row, as the release has: one per catalogue
  row except 1,998 / 239,695 of them (rejected by `gzpipe shard` as "no mapping", as in the release), plus rows
  for objects that are not in the catalogue.
* ``images/<asset_id>.jpg``: 243,434 / 239,695 files per row, hard links to the source's real JPEGs (no extra disk).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from gzpipe import schema

FULL_ROWS = 239_695
MAPPING_PER_ROW = 355_990 / FULL_ROWS
IMAGES_PER_ROW = 243_434 / FULL_ROWS
NO_MAPPING_SHARE = 1_998 / FULL_ROWS
OBJID_BASE = 587_722_981_741_363_200
META = ("dr7objid", "ra", "dec", "rastring", "decstring", "sample", "gz2_class", "total_classifications",
        "total_votes")
KINDS = ("count", "weight", "fraction", "weighted_fraction", "debiased", "flag")


def source_rows(sample: Path | None, tmp: Path) -> tuple[pd.DataFrame, Path]:
    """(37-answer weighted_fraction / debiased table, image folder) of the rows the stand-in repeats."""
    if sample is not None and (sample / "labels_manifest_800.csv").exists():
        df = pd.read_csv(sample / "labels_manifest_800.csv", dtype={"asset_id": str})
        return df, sample / "images"
    from gzpipe.synth import SynthConfig, synth

    synth(SynthConfig(out=tmp / "synth", n=800, seed=0, workers=2))
    df = pd.read_csv(tmp / "synth/gz2_hart16.csv", dtype={"dr7objid": str})
    df["asset_id"] = pd.read_csv(tmp / "synth/gz2_filename_mapping.csv", dtype=str)["asset_id"]
    return df, tmp / "synth/images"


def catalogue(src: pd.DataFrame, rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    pick = np.arange(rows) % len(src)
    n_class = src["total_classifications"].to_numpy()[pick] if "total_classifications" in src else \
        rng.integers(20, 60, rows)
    cols: dict = {
        "dr7objid": (OBJID_BASE + np.arange(rows) * 7).astype(str),
        "ra": np.round(rng.uniform(0, 360, rows), 6),
        "dec": np.round(rng.uniform(-10, 70, rows), 6),
        "rastring": "", "decstring": "",
        "sample": np.where(rng.random(rows) < 0.8, "original", "extra"),
        "gz2_class": src["gz2_class"].to_numpy()[pick] if "gz2_class" in src else "",
        "total_classifications": n_class,
        "total_votes": (n_class * 4).astype(int),
    }
    for t in schema.ALL_TASKS:
        for a in t.columns:
            wf = src[f"{a}_weighted_fraction"].to_numpy(float)[pick]
            deb = src[f"{a}_debiased"].to_numpy(float)[pick] if f"{a}_debiased" in src else wf
            count = np.rint(np.nan_to_num(wf) * n_class).astype(int)
            cols[f"{a}_count"] = count
            cols[f"{a}_weight"] = count.astype(float)
            cols[f"{a}_fraction"] = np.round(wf, 3)
            cols[f"{a}_weighted_fraction"] = np.round(wf, 3)
            cols[f"{a}_debiased"] = np.round(deb, 3)
            cols[f"{a}_flag"] = (np.nan_to_num(wf) > 0.8).astype(int)
    df = pd.DataFrame(cols)
    assert len(df.columns) == len(META) + 37 * len(KINDS)  # invariant: the release's 231 columns
    return df


def build(dest: Path, rows: int, sample: Path | None, seed: int = 0) -> dict:
    """Write the stand-in release to ``dest`` (see the module docstring); returns its paths and counts."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    dest.mkdir(parents=True, exist_ok=True)
    src, src_images = source_rows(sample, dest)
    cat = catalogue(src, rows, seed)
    pacsv.write_csv(pa.Table.from_pandas(cat, preserve_index=False), dest / "gz2_hart16.csv")
    rng = np.random.default_rng(seed + 1)
    asset = np.arange(1, rows + 1)
    unmapped = rng.random(rows) < NO_MAPPING_SHARE
    extra = int(round(rows * MAPPING_PER_ROW)) - int((~unmapped).sum())
    mapping = pd.DataFrame({
        "objid": np.concatenate([cat["dr7objid"].to_numpy()[~unmapped],
                                 (OBJID_BASE + 1 + np.arange(extra) * 7).astype(str)]),
        "sample": "original",
        "asset_id": np.concatenate([asset[~unmapped], rows + 1 + np.arange(extra)]),
    })
    pacsv.write_csv(pa.Table.from_pandas(mapping, preserve_index=False), dest / "gz2_filename_mapping.csv")
    images = dest / "images"
    images.mkdir(exist_ok=True)
    src_files = [src_images / f"{a}.jpg" for a in src["asset_id"].astype(str)]
    n_files = int(round(rows * IMAGES_PER_ROW))
    for k in range(n_files):  # mapped rows first, then files no row refers to (as in the release)
        target = images / f"{k + 1}.jpg"
        if not target.exists():
            os.link(src_files[k % len(src_files)], target)
    return {"catalog": dest / "gz2_hart16.csv", "mapping": dest / "gz2_filename_mapping.csv", "images": images,
            "rows": rows, "mapping_rows": len(mapping), "image_files": n_files, "unmapped": int(unmapped.sum()),
            "source": "real sample" if sample is not None and (sample / "labels_manifest_800.csv").exists()
            else "synthetic"}
