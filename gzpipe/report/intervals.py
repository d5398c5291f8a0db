"""Error bars for the comparison: a paired bootstrap over the test galaxies.

A study's test split is small (54 galaxies in the demo, a few hundred in the real preset), so two models' point
MAEs differ by chance. Each resample draws the test galaxies with replacement, the *same* draw for every model
(paired: galaxies that are hard for one model are hard for all, which the difference then cancels), and recomputes
each model's MAE and RMSE over the valid entries of the drawn galaxies, and its Kaggle RMSE over the drawn galaxies
whose 30 cumulative fractions are all known. The 95% interval is the 2.5th to 97.5th percentile over the resamples
(percentile bootstrap; Efron & Tibshirani 1993, ch. 13). A model is "not distinguishable from the best" when the
interval of its paired MAE difference to the best contains 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gzpipe import schema
from gzpipe.metrics import cumulative_known

RESAMPLES = 2000
LEVEL = 0.95


@dataclass
class Interval:
    point: float
    lo: float
    hi: float

    def excludes_zero(self) -> bool:
        return self.lo > 0 or self.hi < 0

    def text(self, digits: int = 4) -> str:
        return f"{self.point:.{digits}f} [{self.lo:.{digits}f}, {self.hi:.{digits}f}]"


def error_terms(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per galaxy: the sum of absolute errors, of squared errors, and the count of valid entries."""
    m = np.asarray(mask, bool)
    d = np.where(m, np.asarray(pred, np.float64) - np.nan_to_num(np.asarray(target, np.float64)), 0.0)
    return np.abs(d).sum(axis=1), (d * d).sum(axis=1), m.sum(axis=1).astype(np.float64)


class KaggleTerms:
    """Per galaxy: the summed squared error of its cumulative (Kaggle) fractions and their count. By default over
    the galaxies whose 30 are all known (``gzpipe.metrics.kaggle_rmse``'s galaxies; 0 and 0 for the others); with
    ``every_known`` over each galaxy's known values, however few (``rmse_known``: a catalogue that carries only
    some questions, such as Kaggle's 17-column file, still counts for the questions it has). ``rows`` (bool, one
    per galaxy) keeps only those galaxies. The targets' cumulative form is computed once, for every model scored
    against them."""

    def __init__(self, target: np.ndarray, mask: np.ndarray, rows: np.ndarray | None = None,
                 every_known: bool = False):
        known = cumulative_known(np.asarray(target, np.float64), np.asarray(mask, bool))
        if not every_known:
            known = np.repeat(known.all(axis=1, keepdims=True), known.shape[1], axis=1)
        if rows is not None:
            known &= np.asarray(rows, bool)[:, None]
        self.known = known
        self.every_known = every_known
        self.full = known.any(axis=1)  # the galaxies that count
        self.tc = schema.conditional_to_cumulative(np.nan_to_num(np.asarray(target, np.float64)))
        self.count = known.sum(axis=1).astype(np.float64)

    @property
    def galaxies(self) -> int:
        return int(self.full.sum())

    @property
    def values(self) -> int:
        return int(self.count.sum())

    def best_constant(self) -> float | None:
        """The Kaggle RMSE of the best constant on these values: each column's mean over its known values."""
        k = self.known
        if not k.any():
            return None
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(k, self.tc, 0.0).sum(axis=0) / k.sum(axis=0)
        return float(np.sqrt(((self.tc - mean)[k] ** 2).mean()))

    def __call__(self, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pc = schema.conditional_to_cumulative(np.clip(np.asarray(pred, np.float64), 0.0, 1.0))
        ok = self.known & np.isfinite(pc)  # a value the model left empty (a question it never learned) is not scored
        if not self.every_known:
            ok &= ok.all(axis=1, keepdims=True)  # a galaxy counts whole or not at all
        return np.where(ok, (pc - self.tc) ** 2, 0.0).sum(axis=1), ok.sum(axis=1).astype(np.float64)


def draws(n: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """(resamples, n) counts: how often each galaxy is drawn in each resample (the same for every model)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)


def interval(point: float, samples: np.ndarray, level: float = LEVEL) -> Interval:
    a = (1 - level) / 2
    lo, hi = np.nanquantile(samples, [a, 1 - a])
    return Interval(float(point), float(lo), float(hi))


def paired_bootstrap(preds: dict[str, np.ndarray], target: np.ndarray, mask: np.ndarray,
                     resamples: int = RESAMPLES, seed: int = 0, reference: str | None = None) -> dict:
    """For each model (``preds``: name -> n x 30 on the same galaxies in the same order): its MAE, RMSE and Kaggle
    RMSE with intervals, and its paired MAE difference to ``reference`` (default: the lowest point MAE) with an
    interval.

    Returns ``{"best": name, "resamples": B, "galaxies": n, "kaggle_galaxies": k, "models": {name: {"mae", "rmse",
    "kaggle", "vs_best", "tied_with_best"}}}`` (the figures are ``Interval``\\ s; ``kaggle`` is None when no galaxy
    has all 30 cumulative values known, and a resample that draws none of the k leaves its value out; ``vs_best`` is
    this model minus the best, so a positive interval means the best is really better)."""
    names = list(preds)
    n = len(target)
    counts = draws(n, resamples, seed)
    sums = {k: error_terms(preds[k], target, mask) for k in names}
    kaggle_terms = KaggleTerms(target, mask)
    mae_s, rmse_s, kaggle, point = {}, {}, {}, {}
    for k, (a, s, c) in sums.items():
        used = counts @ c
        with np.errstate(invalid="ignore", divide="ignore"):
            mae_s[k] = (counts @ a) / used
            rmse_s[k] = np.sqrt((counts @ s) / used)
        total = c.sum()
        point[k] = (a.sum() / total if total else np.nan, np.sqrt(s.sum() / total) if total else np.nan)
        kaggle[k] = None
        ks, kc = kaggle_terms(preds[k])
        if kc.sum():  # none when no galaxy is complete, or the model left a question of each empty
            with np.errstate(invalid="ignore", divide="ignore"):
                kaggle[k] = interval(np.sqrt(ks.sum() / kc.sum()), np.sqrt((counts @ ks) / (counts @ kc)))
    best = reference or min(names, key=lambda k: point[k][0])
    out = {}
    for k in names:
        diff = interval(point[k][0] - point[best][0], mae_s[k] - mae_s[best])
        out[k] = {"mae": interval(point[k][0], mae_s[k]), "rmse": interval(point[k][1], rmse_s[k]),
                  "kaggle": kaggle[k], "vs_best": diff, "tied_with_best": k == best or not diff.excludes_zero()}
    return {"best": best, "resamples": resamples, "galaxies": n, "kaggle_galaxies": kaggle_terms.galaxies,
            "models": out}


def difference(preds_a: np.ndarray, preds_b: np.ndarray, target: np.ndarray, mask: np.ndarray,
               resamples: int = RESAMPLES, seed: int = 0) -> Interval:
    """The paired MAE difference a - b with its interval (negative: a is better)."""
    r = paired_bootstrap({"a": preds_a, "b": preds_b}, target, mask, resamples, seed, reference="b")
    return r["models"]["a"]["vs_best"]
