"""The study's metrics over the valid (mask = 1) entries of 30-wide predictions and targets.

accuracy: prediction and target each rounded to 0 or 1, share equal (the original study's figure);
MAE, MSE, RMSE over all valid outputs; the same per task; and the Kaggle Galaxy Challenge metric (``kaggle``):
the RMSE over the cumulative fractions, which puts a model next to the 2014 leaderboard. Used by train, boost and
ensemble alike.
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


KAGGLE_COLUMNS_NOTE = ("RMSE over cumulative fractions, Kaggle's Galaxy Challenge metric, over the 30 of its 37 "
                       "columns gzpipe predicts (Class8.1-8.7 left out) and the galaxies with all 30 known")


def cumulative_known(target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(n, 30) bool: is the cumulative (Kaggle) value of each answer known? A task's is where its answers are
    labelled and its parent's is known, and also where its parent's cumulative value is known to be 0 (nobody
    reached it: Kaggle writes 0). A question a catalogue lacks stays unknown."""
    cum = schema.conditional_to_cumulative(np.nan_to_num(target))
    known = np.zeros(mask.shape, dtype=bool)
    for t in schema.TASKS:
        s, p = schema.TASK_SLICES[t.name], schema.PARENT_INDEX[t.name]
        if p is None:
            known[:, s] = mask[:, s]
        else:
            parent = known[:, p:p + 1]
            known[:, s] = parent & (mask[:, s] | (cum[:, p:p + 1] <= 0))
    return known


def kaggle_rmse(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> dict:
    """The Kaggle Galaxy Challenge metric: RMSE between predicted and true cumulative fractions, over the galaxies
    whose 30 cumulative values are all known (``galaxies``); ``rmse_known`` is over every known value."""
    pc = schema.conditional_to_cumulative(np.clip(pred, 0.0, 1.0))
    # a question the model left empty (NaN: never learned) cannot be scored, nor the values below it
    known = cumulative_known(target, np.asarray(mask, bool)) & np.isfinite(pc)
    tc = schema.conditional_to_cumulative(np.nan_to_num(target))
    full = known.all(axis=1)
    d = pc - tc
    return {"rmse": float(np.sqrt(np.mean(d[full] ** 2))) if full.any() else None, "galaxies": int(full.sum()),
            "rmse_known": float(np.sqrt(np.mean(d[known] ** 2))) if known.any() else None,
            "values_known": int(known.sum()), "columns": N_KAGGLE_COLUMNS, "of": KAGGLE_COLUMNS_NOTE}


N_KAGGLE_COLUMNS = schema.N_TARGETS


def compute_metrics(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> dict:
    p = np.asarray(pred, dtype=np.float64)
    t = np.nan_to_num(np.asarray(target, dtype=np.float64))
    m = np.asarray(mask).astype(bool)
    if p.shape != t.shape or p.shape != m.shape or p.shape[-1] != schema.N_TARGETS:
        raise ValueError(f"shapes differ or are not N x 30: {p.shape}, {t.shape}, {m.shape}")
    out = _figures(p, t, m)
    out["galaxies"] = int(p.shape[0])
    out["kaggle"] = kaggle_rmse(p, t, m)
    out["per_task"] = {name: _figures(p[:, s], t[:, s], m[:, s]) for name, s in schema.TASK_SLICES.items()}
    return out
