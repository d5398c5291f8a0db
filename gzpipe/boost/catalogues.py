"""Which catalogue's labels a galaxy follows, as a booster's input: one indicator column per catalogue format.

Two catalogues can label the same galaxy differently (``gzpipe.union.label_agreement``: on the real union, the
Hart16 sample's weighted fractions call the galaxies it shares with Kaggle's files smooth 0.19 more often). A model
that cannot tell them apart learns a mix of both conventions and misses each. With ``by_catalogue`` a booster reads,
beside the backbone's features, one 0/1 column per catalogue format of its train split (the id prefix a union of
formats gives: ``kaggle:100008``, ``hart16:130549``), so it learns each catalogue's labels; val and test galaxies are
scored in their own catalogue's convention, and ``gzpipe predict`` asks for one (``--catalogue``; by default the
catalogue with the most train galaxies), or for each galaxy's own (``--catalogue own``: by its id's prefix, as in a
union's shards; a galaxy of no learnt catalogue gets the default's). The multi-survey models of the field do the
same with a head per survey (Zoobot's GZ Evo, Walmsley et al. 2022).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from gzpipe.errors import GzpipeError

OWN = "own"  # predict each galaxy in its own catalogue's convention, read from its id's prefix


def catalogue_of(ids) -> np.ndarray:
    """Each id's catalogue format (the prefix a union of formats gives it), or "" where it has none."""
    return np.array([i.split(":", 1)[0] if ":" in i else "" for i in ids], dtype=object)


def catalogue_rows(ids) -> dict[str, int]:
    """{catalogue format: rows} over ``ids``, in name order ("" for ids without a prefix)."""
    return dict(sorted(Counter(catalogue_of(ids)).items()))


def indicators(ids, catalogues: list[str]) -> np.ndarray:
    """(n, len(catalogues)) float32: 1 in the column of each row's catalogue (a row of a catalogue not in the list
    gets zeros)."""
    return one_hot(catalogue_of(ids), catalogues)


def one_hot(names, catalogues: list[str]) -> np.ndarray:
    """(n, len(catalogues)) float32: 1 in the column of each row's catalogue name (zeros for a name not listed)."""
    out = np.zeros((len(names), len(catalogues)), np.float32)
    col = {c: k for k, c in enumerate(catalogues)}
    for i, c in enumerate(names):
        if c in col:
            out[i, col[c]] = 1.0
    return out


def conventions(ids, catalogues: list[str], choice: str, fallback: str) -> np.ndarray:
    """Whose labels each row is predicted as: ``choice`` for every row, or with ``OWN`` each id's own catalogue
    where it is one of ``catalogues`` and ``fallback``'s elsewhere."""
    if choice != OWN:
        return np.full(len(ids), choice, dtype=object)
    own = catalogue_of(ids)
    return np.where(np.isin(own, catalogues), own, fallback).astype(object)


def default_catalogue(rows: dict[str, int]) -> str:
    """The catalogue a prediction follows unless told: the one with the most train galaxies."""
    return max(rows, key=lambda c: (rows[c], c))


def check_catalogue(choice: str, catalogues: list[str], model: str) -> str:
    if choice != OWN and choice not in catalogues:
        raise GzpipeError(f"--catalogue {choice!r}: {model} learnt the labels of {', '.join(catalogues)}; "
                          f"pick one of them, or {OWN} (each galaxy's own, by its id's prefix)")
    return choice
