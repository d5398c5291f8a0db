"""The Kaggle metric where the models' users' galaxies come from: the test galaxies of the catalogues the shards name
as a random draw (``gzpipe shard --random-draw``), which the report and RESULTS.md lead with.

A study's whole test split mixes catalogues chosen in other ways (the GZ2 sample's 800 are hand-picked confident
galaxies, the compendium's are balanced spirals and others), and its figures flattered the real study by 0.07-0.14
of the best constant against 3,644 random Kaggle galaxies. Here each model's Kaggle RMSE is over the random-draw
test galaxies whose 30 cumulative values are all known, with a 95% paired-bootstrap interval drawn over those
galaxies, beside the best constant's on the same galaxies; and the paired difference of the Kaggle RMSE between two
models (the stacked ensemble against the best single model) with its interval.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gzpipe.report.intervals import RESAMPLES, Interval, KaggleTerms, draws, interval


@dataclass
class RandomDraw:
    galaxies: int  # the random-draw test galaxies with all 30 cumulative values known
    constant: float | None  # the best constant's Kaggle RMSE on them
    models: dict[str, Interval]  # each model's Kaggle RMSE on them
    terms: dict  # name -> (squared errors, counts) per galaxy, for paired differences
    counts: np.ndarray  # the bootstrap draws (resamples x galaxies of the split)

    def ratio(self, name: str) -> float | None:
        k = self.models.get(name)
        return k.point / self.constant if k and self.constant else None

    def best(self, names) -> str | None:
        got = [n for n in names if n in self.models]
        return min(got, key=lambda n: self.models[n].point) if got else None

    def difference(self, a: str, b: str) -> Interval:
        """Paired Kaggle RMSE difference a - b over the same draws (negative: a is better)."""
        (sa, ca), (sb, cb) = self.terms[a], self.terms[b]
        with np.errstate(invalid="ignore", divide="ignore"):
            boot = np.sqrt((self.counts @ sa) / (self.counts @ ca)) - np.sqrt((self.counts @ sb) / (self.counts @ cb))
        return interval(float(np.sqrt(sa.sum() / ca.sum()) - np.sqrt(sb.sum() / cb.sum())), boot)


def random_draw(preds: dict[str, np.ndarray], target: np.ndarray, mask: np.ndarray, rows: np.ndarray,
                resamples: int = RESAMPLES, seed: int = 0) -> RandomDraw | None:
    """The figures above for ``rows`` (bool, one per test galaxy: a random-draw galaxy); None when none of them has
    all 30 cumulative values known."""
    idx = np.flatnonzero(np.asarray(rows, bool))
    if not len(idx):
        return None
    y, m = np.asarray(target, np.float64)[idx], np.asarray(mask, bool)[idx]
    kt = KaggleTerms(y, m)
    if not kt.galaxies:
        return None
    counts = draws(len(idx), resamples, seed)
    models, terms = {}, {}
    for name, p in preds.items():
        s, c = kt(np.asarray(p, np.float64)[idx])
        if not c.sum():
            continue  # a model that left a question of every galaxy empty
        terms[name] = (s, c)
        with np.errstate(invalid="ignore", divide="ignore"):
            models[name] = interval(float(np.sqrt(s.sum() / c.sum())), np.sqrt((counts @ s) / (counts @ c)))
    return RandomDraw(kt.galaxies, kt.best_constant(), models, terms, counts)
