"""The seed's three ensembles (equal, accuracy, inverse_mae): weighted means of the finished backbones' predictions.

Weights come from the **validation** split only (equal; proportional to validation accuracy; proportional to
1 / validation MAE) and the ensemble is evaluated on **test**, so no test information leaks into it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gzpipe.ensemble.members import member_predictions
from gzpipe.errors import GzpipeError
from gzpipe.metrics import compute_metrics
from gzpipe import runs

from gzpipe.ensemble.methods import METHODS


def weights_for(method: str, val_metrics: dict[str, dict]) -> dict[str, float]:
    names = list(val_metrics)
    if method == "equal":
        raw = np.ones(len(names))
    elif method == "accuracy":
        raw = np.array([val_metrics[n]["accuracy"] for n in names])
    elif method == "inverse_mae":
        raw = np.array([1.0 / max(val_metrics[n]["mae"], 1e-12) for n in names])
    else:
        raise GzpipeError(f"unknown --method {method!r}; choose one of {', '.join(METHODS)}")
    if raw.sum() <= 0:
        raw = np.ones(len(names))
    return dict(zip(names, (raw / raw.sum()).tolist()))


def fit_weighted(out: Path, method: str, used: list[str]) -> tuple[dict, dict, dict]:
    """(result, {split: N x 30 predictions}, {split: ids}) of one weighted mean over ``used``."""
    ids, preds, labels, _ = member_predictions(out, used)
    val_metrics = {b: compute_metrics(preds["val"][b], *labels["val"]) for b in used}
    w = weights_for(method, val_metrics)
    result: dict = {"method": method, "models": used, "weights_from": "val", "evaluated_on": "test", "weights": w,
                    "member_val_metrics": {b: {"accuracy": m["accuracy"], "mae": m["mae"]}
                                           for b, m in val_metrics.items()}}
    out_preds = {}
    for split in runs.EVAL_SPLITS:
        out_preds[split] = sum(w[b] * preds[split][b] for b in used)
        result[split] = compute_metrics(out_preds[split], *labels[split])
    return result, out_preds, ids


def summary(result: dict) -> str:
    return "weights " + ", ".join(f"{b} {v:.3f}" for b, v in result["weights"].items())
