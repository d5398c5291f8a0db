"""Gather every finished model's test metrics into rows."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from gzpipe import schema
from gzpipe.boost import ENGINES
from gzpipe.ensemble import METHODS
from gzpipe.models import BACKBONES


def _param_count(backbone: str) -> int:
    from gzpipe.models import create_model

    return sum(p.numel() for p in create_model(backbone).parameters())


def _row(name: str, kind: str, backbone: str, m: dict) -> dict:
    t = m["test"]
    row = {"name": name, "kind": kind, "backbone": backbone, "accuracy": t["accuracy"], "mae": t["mae"],
           "mse": t["mse"], "rmse": t["rmse"], "test_galaxies": t["galaxies"]}
    for task, f in t["per_task"].items():
        row[f"accuracy:{task}"] = f["accuracy"]
    for task, f in t["per_task"].items():
        row[f"mae:{task}"] = f["mae"]
    return row


def collect(out: Path) -> tuple[pd.DataFrame, dict]:
    """(comparison table, raw metrics by model name)."""
    rows, raw = [], {}
    deep_time = {}
    for b in BACKBONES:
        p = out / b / "metrics.json"
        if (out / b / "training_complete.txt").exists() and p.exists():
            m = json.loads(p.read_text())
            r = _row(b, "deep", b, m)
            r.update(parameters=_param_count(b), trees=None, training_time_s=m.get("wall_time_s"),
                     throughput_per_s=m.get("images_per_s"), throughput_of="training images")
            deep_time[b] = (m.get("wall_time_s") or 0.0, r["parameters"])
            rows.append(r)
            raw[b] = m
    for engine in ENGINES:
        for b in BACKBONES:
            d = out / f"{engine}_{b}"
            if (d / "boost_complete.txt").exists():
                m = json.loads((d / "metrics.json").read_text())
                trees = (m["best_iteration"] + 1) * schema.N_TARGETS if "best_iteration" in m else sum(m.get("best_iterations", []))
                r = _row(f"{engine}_{b}", engine, b, m)
                r.update(parameters=None, trees=trees, training_time_s=m["train_time_s"],
                         throughput_per_s=m.get("test_predict_rows_per_s"), throughput_of="prediction rows (features given)")
                rows.append(r)
                raw[r["name"]] = m
    for method in METHODS:
        d = out / f"ensemble_{method}"
        if (d / "metrics.json").exists():
            m = json.loads((d / "metrics.json").read_text())
            r = _row(f"ensemble_{method}", "ensemble", "+".join(m["models"]), m)
            r.update(parameters=sum(deep_time.get(b, (0, 0))[1] for b in m["models"]), trees=None,
                     training_time_s=sum(deep_time.get(b, (0, 0))[0] for b in m["models"]), throughput_per_s=None,
                     throughput_of="")
            rows.append(r)
            raw[r["name"]] = m
    return pd.DataFrame(rows), raw


def dl_vs_gb(table: pd.DataFrame) -> pd.DataFrame:
    out = []
    for b in BACKBONES:
        sub = table[table["backbone"] == b].set_index("kind")
        if sub.empty:
            continue
        row = {"backbone": b}
        for kind in ("deep", *ENGINES):
            for k in ("mae", "accuracy", "rmse"):
                row[f"{kind}_{k}"] = sub.loc[kind, k] if kind in sub.index else None
        out.append(row)
    return pd.DataFrame(out)
