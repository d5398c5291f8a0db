"""The study's metrics over the valid (mask = 1) entries of 30-wide predictions and targets.

accuracy: prediction and target each rounded to 0 or 1, share equal (the original study's figure);
MAE, MSE, RMSE over all valid outputs; the same per task. Used by train, boost and ensemble alike.
"""

from __future__ import annotations

import numpy as np

from gzpipe import schema


def _figures(p: np.ndarray, t: np.ndarray, m: np.ndarray) -> dict:
    n = int(m.sum())
    if n == 0:
        return {"accuracy": None, "mae": None, "mse": None, "rmse": None, "n": 0}
    d = (p - t)[m]
    mse = float(np.mean(d * d))
    acc = float(np.mean((np.round(p) == np.round(t))[m]))
    return {"accuracy": acc, "mae": float(np.mean(np.abs(d))), "mse": mse, "rmse": float(np.sqrt(mse)), "n": n}


def compute_metrics(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> dict:
    p = np.asarray(pred, dtype=np.float64)
    t = np.nan_to_num(np.asarray(target, dtype=np.float64))
    m = np.asarray(mask).astype(bool)
    if p.shape != t.shape or p.shape != m.shape or p.shape[-1] != schema.N_TARGETS:
        raise ValueError(f"shapes differ or are not N x 30: {p.shape}, {t.shape}, {m.shape}")
    out = _figures(p, t, m)
    out["galaxies"] = int(p.shape[0])
    out["per_task"] = {name: _figures(p[:, s], t[:, s], m[:, s]) for name, s in schema.TASK_SLICES.items()}
    return out
