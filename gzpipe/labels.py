"""Split labels (ids, 30 targets, 30-wide mask) for stages downstream of training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from gzpipe import schema
from gzpipe.errors import GzpipeError
from gzpipe.fileio import local_path
from gzpipe.manifest import LABELS

MASK_COLUMNS = [f"mask:{n}" for n in schema.TARGET_NAMES]


def split_labels(shards: str | Path, split: str) -> pd.DataFrame:
    """A frame indexed by id with the 30 target columns and the 30 ``mask:`` columns of one split."""
    p = Path(shards) / LABELS
    if not p.exists():
        raise GzpipeError(f"{p} not found; re-run `gzpipe shard` (it writes labels.parquet beside the manifest)")
    df = pd.read_parquet(local_path(p))
    return df[df["split"] == split].drop(columns="split").set_index("id")


def random_draw_ids(shards: str | Path, split: str) -> list[str] | None:
    """The ids of ``split``'s galaxies from the catalogues the shards name as a random draw of the galaxies the models
    are for (``gzpipe shard --random-draw``); None when they name none (or predate it)."""
    from gzpipe.manifest import read_manifest

    chosen = read_manifest(shards).get("random_draw")
    if not chosen:
        return None
    lab = split_labels(shards, split)
    if "catalog" not in lab:
        return None
    return lab.index[lab["catalog"].isin(chosen)].tolist()


def tasks_with_labels(shards: str | Path, split: str = "train") -> list[str]:
    """The tasks that have at least one label in ``split``: what a model trained on it can have learned (a
    catalogue without some questions leaves them out)."""
    lab = split_labels(shards, split)
    return [t for t, s in schema.TASK_SLICES.items() if lab[MASK_COLUMNS[s]].to_numpy().any()]


def blank_untrained(pred: np.ndarray, trained: list[str] | None) -> np.ndarray:
    """``pred`` with the columns of every task not in ``trained`` set to NaN (a copy; ``trained`` None: all were):
    a question a model never had a label for is predicted empty, never as a made-up 0.5."""
    pred = np.array(pred, dtype=np.float64 if np.asarray(pred).dtype == np.float64 else np.float32)
    if trained is not None:
        for t, s in schema.TASK_SLICES.items():
            if t not in trained:
                pred[:, s] = np.nan
    return pred


def aligned(labels: pd.DataFrame, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Targets and masks in the order of ``ids``; every id must be in the split."""
    missing = [i for i in ids if i not in labels.index]
    if missing:
        raise GzpipeError(f"{len(missing)} predicted ids are not in the split's labels (e.g. {missing[0]}); were the "
                          "predictions made from other shards?")
    sub = labels.loc[ids]
    return sub[list(schema.TARGET_NAMES)].to_numpy(np.float32), sub[MASK_COLUMNS].to_numpy(bool)
