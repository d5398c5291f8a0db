"""What an engine trains on: a backbone's cached features, streamed or read whole, through the booster's optional
feature reduction (``--pca K``).

The reduction is fitted on the **train** split only (up to ``fit_rows`` rows, one pass: mean and covariance, then
the top-K eigenvectors), saved beside the model as ``reduction.npz`` (plain arrays, no pickle) and applied again
wherever the booster predicts (val / test here, `predict`, ensembles), so every caller sees one function of the
backbone's features.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from gzpipe.errors import GzpipeError
from gzpipe.fileio import atomic_open
from gzpipe.stopping import STOP

REDUCTION = "reduction.npz"


@dataclass
class Reduction:
    """x -> (x - mean) @ components.T: the top principal components of the train features."""

    mean: np.ndarray  # (width,)
    components: np.ndarray  # (k, width)
    explained: float  # share of the train features' variance the components keep
    rows: int = 0  # train rows it was fitted on (not saved: only for the fit's own message)

    @property
    def width(self) -> int:
        return self.components.shape[0]

    def apply(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, dtype=np.float32) - self.mean) @ self.components.T).astype(np.float32)

    def save(self, run_dir: Path) -> None:
        with atomic_open(Path(run_dir) / REDUCTION, "wb") as f:
            np.savez(f, mean=self.mean, components=self.components, explained=np.float64(self.explained))

    @staticmethod
    def load(run_dir: Path) -> "Reduction | None":
        p = Path(run_dir) / REDUCTION
        if not p.exists():
            return None
        with np.load(p, allow_pickle=False) as z:
            return Reduction(z["mean"], z["components"], float(z["explained"]))

    @staticmethod
    def fit(batches: Iterator[np.ndarray], k: int, fit_rows: int) -> "Reduction":
        """PCA from the first ``fit_rows`` rows of ``batches`` (the train split is shuffled at write time, so its
        first rows are a fair sample), accumulated in float64 in one pass."""
        n, s, ss = 0, None, None
        for x in batches:
            STOP.check()
            x = x[: fit_rows - n].astype(np.float64)
            s = x.sum(0) if s is None else s + x.sum(0)
            ss = x.T @ x if ss is None else ss + x.T @ x
            n += len(x)
            if n >= fit_rows:
                break
        if n < 2:
            raise GzpipeError("pca needs at least 2 train rows")
        width = len(s)
        if not 1 <= k <= width:
            raise GzpipeError(f"pca must be between 1 and the feature width ({width}), got {k}")
        mean = s / n
        cov = (ss - n * np.outer(mean, mean)) / (n - 1)
        vals, vecs = np.linalg.eigh(cov)  # ascending
        order = np.argsort(vals)[::-1][:k]
        total = float(vals.clip(min=0).sum()) or 1.0
        return Reduction(mean.astype(np.float32), vecs[:, order].T.astype(np.float32),
                         float(vals[order].clip(min=0).sum() / total), rows=n)


class FeatureData:
    """A backbone's features as an engine reads them: ``batches(split)`` streams (ids, x, y, mask), ``read(split)``
    reads a split whole; both through the reduction when there is one."""

    def __init__(self, out: str | Path, backbone: str, reduction: Reduction | None = None,
                 catalogues: list[str] | None = None):
        self.out, self.backbone, self.reduction = out, backbone, reduction
        self.catalogues = list(catalogues or [])  # by_catalogue: one 0/1 column per format, after the features

    def batches(self, split: str, batch_rows: int = 8192):
        from gzpipe.boost.catalogues import indicators
        from gzpipe.features import iter_feature_batches

        for ids, x, y, m in iter_feature_batches(self.out, self.backbone, split, batch_rows):
            x = self.reduction.apply(x) if self.reduction else x
            if self.catalogues:
                x = np.hstack([x, indicators(ids, self.catalogues)])
            yield ids, x, y, m

    def read(self, split: str) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        from gzpipe.features import features_path, gather_batches

        return gather_batches(self.batches(split), features_path(self.out, self.backbone, split))
