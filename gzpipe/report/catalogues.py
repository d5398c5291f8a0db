"""The test split by catalogue: each model's MAE and Kaggle RMSE on all test galaxies and on each catalogue's
own, the Kaggle RMSE over every cumulative value a galaxy's labels carry (a catalogue with only some questions,
such as Kaggle's 17-column file, counts for those it has), beside the best constant on the same values.

The main table's ``kaggle_rmse`` is over the galaxies whose 30 cumulative values are all known, which in a study of
several catalogues can be a few galaxies of one catalogue; this view answers "how does the model do on the Kaggle
galaxies" and "how far below a constant is it" with every label there is. A union of catalogue formats prefixes each
id with its format (``kaggle:100008``, ``hart16:130549``; ``gzpipe.union``), which names the groups; a shard set
of one format has one group. Intervals: the paired bootstrap of ``gzpipe.report.intervals``, drawn within each
group (the same draws for every model).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gzpipe.boost.catalogues import catalogue_of
from gzpipe.report.intervals import RESAMPLES, KaggleTerms, draws, error_terms, interval

ALL = "all"


def by_catalogue(preds: dict[str, np.ndarray], target: np.ndarray, mask: np.ndarray, ids: list[str],
                 resamples: int = RESAMPLES, seed: int = 0, extra: dict | None = None) -> pd.DataFrame:
    """One row per (group, model): ``all`` galaxies first, then each catalogue format when there are several, then
    each of ``extra`` (group name -> one bool a galaxy: the random draw's galaxies).
    Columns: catalogue, name, galaxies, mae [mae_lo, mae_hi], kaggle_values (the known cumulative values it was scored on),
    kaggle_rmse_known [lo, hi], best_constant (the Kaggle RMSE of each column's mean over the same values) and
    kaggle_vs_constant (the model's over the constant's)."""
    target, mask = np.asarray(target, np.float64), np.asarray(mask, bool)
    fmt = catalogue_of(ids)
    groups = [(ALL, np.ones(len(ids), bool))]
    if len(set(fmt)) > 1:
        groups += [(g or "(no prefix)", fmt == g) for g in sorted(set(fmt))]
    groups += [(name, np.asarray(sel, bool)) for name, sel in (extra or {}).items() if np.asarray(sel, bool).any()]
    rows = []
    for group, sel in groups:
        idx = np.flatnonzero(sel)
        counts = draws(len(idx), resamples, seed)
        y, m = target[idx], mask[idx]
        terms = KaggleTerms(y, m, every_known=True)
        const = terms.best_constant()
        for name, pred in preds.items():
            p = np.asarray(pred, np.float64)[idx]
            a, _, c = error_terms(p, y, m)
            row = {"catalogue": group, "name": name, "galaxies": len(idx)}
            with np.errstate(invalid="ignore", divide="ignore"):
                mae = interval(a.sum() / c.sum(), (counts @ a) / (counts @ c)) if c.sum() else None
                ks, kc = terms(p)
                kag = interval(np.sqrt(ks.sum() / kc.sum()), np.sqrt((counts @ ks) / (counts @ kc))) \
                    if kc.sum() else None
            row.update(mae=mae.point if mae else np.nan, mae_lo=mae.lo if mae else np.nan,
                       mae_hi=mae.hi if mae else np.nan, kaggle_values=int(kc.sum()),
                       kaggle_rmse_known=kag.point if kag else np.nan, kaggle_rmse_known_lo=kag.lo if kag else np.nan,
                       kaggle_rmse_known_hi=kag.hi if kag else np.nan,
                       best_constant=const if const is not None else np.nan,
                       kaggle_vs_constant=kag.point / const if kag and const else np.nan)
            rows.append(row)
    return pd.DataFrame(rows)
