"""`gzpipe ensemble --method equal|accuracy|inverse_mae`: weighted means of the finished backbones' predictions.

Weights come from the **validation** split only (equal; proportional to validation accuracy; proportional to
1 / validation MAE) and the ensemble is evaluated on **test**, so no test information leaks into it. Any subset of
finished backbones works; the ones used are listed in ``weights.json``. Output ``<out>/ensemble_<method>/``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from gzpipe import schema
from gzpipe.errors import GzpipeError
from gzpipe.fileio import atomic_open, remove_stale_tmp, write_json
from gzpipe.labels import aligned, split_labels
from gzpipe.metrics import compute_metrics
from gzpipe.models import BACKBONES

METHODS = ("equal", "accuracy", "inverse_mae")


def finished_backbones(out: str | Path) -> list[str]:
    return [b for b in BACKBONES if (Path(out) / b / "training_complete.txt").exists()]


def _predictions(out: Path, backbone: str, split: str) -> pd.DataFrame:
    return pd.read_parquet(out / backbone / f"{split}_predictions.parquet").set_index("id")


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


def run_ensemble(method: str, out: str | Path = "artifacts", backbones: list[str] | None = None) -> dict:
    out = Path(out)
    if method not in METHODS:
        raise GzpipeError(f"unknown --method {method!r}; choose one of {', '.join(METHODS)}")
    used = backbones or finished_backbones(out)
    if not used:
        raise GzpipeError(f"no finished backbone in {out} (no <backbone>/training_complete.txt); train one first")
    shards = {json.loads((out / b / "config.json").read_text())["shards"] for b in used}
    if len(shards) > 1:
        raise GzpipeError(f"the backbones were trained on different shards ({', '.join(sorted(shards))}); "
                          "an ensemble needs one test set")
    shard_dir = shards.pop()
    result: dict = {"method": method, "models": used, "weights_from": "val", "evaluated_on": "test"}
    preds: dict[str, dict[str, np.ndarray]] = {}
    ids: dict[str, list[str]] = {}
    labels = {}
    for split in ("val", "test"):
        frames = {b: _predictions(out, b, split) for b in used}
        common = sorted(set.intersection(*(set(f.index) for f in frames.values())))
        ids[split] = common
        preds[split] = {b: f.loc[common, list(schema.TARGET_NAMES)].to_numpy(np.float64) for b, f in frames.items()}
        labels[split] = aligned(split_labels(shard_dir, split), common)
    val_metrics = {b: compute_metrics(preds["val"][b], *labels["val"]) for b in used}
    w = weights_for(method, val_metrics)
    result["weights"] = w
    result["member_val_metrics"] = {b: {"accuracy": m["accuracy"], "mae": m["mae"]} for b, m in val_metrics.items()}
    run_dir = out / f"ensemble_{method}"
    remove_stale_tmp(run_dir)
    for split in ("val", "test"):
        p = sum(w[b] * preds[split][b] for b in used)
        result[split] = compute_metrics(p, *labels[split])
        df = pd.DataFrame(p.astype(np.float32), columns=list(schema.TARGET_NAMES))
        df.insert(0, "id", ids[split])
        with atomic_open(run_dir / f"{split}_predictions.parquet", "wb") as f:
            df.to_parquet(f, index=False)
    write_json(run_dir / "weights.json", {k: result[k] for k in ("method", "models", "weights", "weights_from",
                                                                  "member_val_metrics")})
    write_json(run_dir / "metrics.json", {"model": f"ensemble_{method}", **result})
    print(f"ensemble_{method} of {', '.join(used)}: test MAE {result['test']['mae']:.4f}  accuracy "
          f"{result['test']['accuracy']:.4f}  weights " + ", ".join(f"{b} {v:.3f}" for b, v in w.items()), flush=True)
    return result
