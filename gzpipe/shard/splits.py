"""Deterministic, stable splits: a galaxy's split depends only on its id and the seed.

So ``--fraction`` (a subsample) and data added later never move a galaxy from one split to another, and
the write order (a shuffle) is a pure function of the ids too, independent of the catalogue's row order.
"""

from __future__ import annotations

import hashlib

import numpy as np

SPLITS = ("train", "val", "test")


def unit_hash(seed: int, salt: str, key: str) -> float:
    """A uniform number in [0, 1) from (seed, salt, key), stable across Python versions and machines."""
    h = hashlib.blake2b(f"{seed}\x1f{salt}\x1f{key}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2.0**64


def assign_splits(ids: list[str], seed: int, val: float, test: float) -> np.ndarray:
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ValueError(f"val ({val}) and test ({test}) must be in [0, 1) and sum to less than 1")
    u = np.array([unit_hash(seed, "split", i) for i in ids])
    out = np.full(len(ids), "train", dtype=object)
    out[u < test + val] = "val"
    out[u < test] = "test"
    return out


def in_fraction(ids: list[str], seed: int, fraction: float) -> np.ndarray:
    """Which galaxies a ``--fraction`` subsample keeps; a larger fraction keeps a superset."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    return np.array([unit_hash(seed, "fraction", i) < fraction for i in ids], dtype=bool)


def write_order(ids: list[str], seed: int) -> np.ndarray:
    """A shuffled order of ``ids`` that depends only on the ids and the seed (DALI shuffles only in a buffer)."""
    keys = [unit_hash(seed, "order", i) for i in ids]
    return np.lexsort((np.array(ids, dtype=object).astype(str), np.array(keys)))
