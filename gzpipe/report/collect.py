"""Gather every finished, current model's test metrics into rows (runs whose inputs changed are left out and
listed, with what changed)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd

from gzpipe import runs, schema

DEEP, ENSEMBLE = "deep", "ensemble"


def _row(name: str, kind: str, backbone: str, m: dict) -> dict:
    t = m["test"]
    row = {"name": name, "kind": kind, "backbone": backbone, "accuracy": t["accuracy"], "mae": t["mae"],
           "mse": t["mse"], "rmse": t["rmse"], "kaggle_rmse": (t.get("kaggle") or {}).get("rmse"),
           "kaggle_galaxies": (t.get("kaggle") or {}).get("galaxies"), "test_galaxies": t["galaxies"],
           "questions": len(m.get("tasks_trained") or schema.TASK_SLICES)}  # the figures cover these only
    for task, f in t["per_task"].items():
        row[f"accuracy:{task}"] = f["accuracy"]
    for task, f in t["per_task"].items():
        row[f"mae:{task}"] = f["mae"]
    return row


def collect(out: Path) -> tuple[pd.DataFrame, dict, dict[str, list[str]]]:
    """(comparison table, raw metrics by model name, {stale model: what changed})."""
    from gzpipe.models import BACKBONES, parameter_count

    rows, raw, stale = [], {}, {}
    found = runs.finished_runs(out)
    current = []
    for r in found:
        changed = runs.changed_inputs(r.dir, missing_ok=True)  # a gone input says nothing about the model
        if changed:
            stale[r.name] = changed
        else:
            current.append(r)
    deep = {}
    for r in (r for r in current if r.kind == runs.BACKBONE):
        m = runs.read_json(r.dir, runs.METRICS)
        row = _row(r.name, DEEP, r.name, m)
        params = parameter_count(r.name) if r.name in BACKBONES or r.name.startswith("timm:") else None
        row.update(parameters=params, trees=None, training_time_s=m.get("wall_time_s"),
                   throughput_per_s=m.get("images_per_s"), throughput_of="training images",
                   tta_views=(m.get("tta") or {}).get("views", 1),
                   mae_without_tta=(m.get("test_without_tta") or {}).get("mae"))
        deep[r.name] = (m.get("wall_time_s") or 0.0, params or 0)
        rows.append(row)
        raw[r.name] = m
    for r in (r for r in current if r.kind == runs.BOOSTER):
        m = runs.read_json(r.dir, runs.METRICS)
        cfg = runs.read_json(r.dir, runs.CONFIG)
        trees = m.get("trees")
        if trees is None:  # runs written before engines reported their tree count
            trees = (m["best_iteration"] + 1) * 30 if "best_iteration" in m else sum(m.get("best_iterations", []))
        row = _row(r.name, cfg["engine"], cfg["backbone"], m)
        row.update(parameters=None, trees=trees, training_time_s=m["train_time_s"],
                   throughput_per_s=m.get("test_predict_rows_per_s"), throughput_of="prediction rows (features given)")
        rows.append(row)
        raw[r.name] = m
    kinds = {row["name"]: row["kind"] for row in rows}
    trees_of = {row["name"]: row["trees"] for row in rows if row.get("trees") is not None}
    for r in (r for r in current if r.kind == runs.ENSEMBLE):
        m = runs.read_json(r.dir, runs.METRICS)
        members = m["models"]
        row = _row(r.name, ENSEMBLE, "+".join(members), m)
        trees = sum(trees_of.get(b, 0) for b in members)
        row.update(parameters=sum(deep.get(b, (0, 0))[1] for b in members) or None, trees=trees or None,
                   training_time_s=sum(deep.get(b, (0, 0))[0] for b in members), throughput_per_s=None,
                   throughput_of="", members=members_text(members, kinds),
                   val_galaxies=(m.get("val") or {}).get("galaxies"))
        rows.append(row)
        raw[r.name] = m
    return pd.DataFrame(rows), raw, stale


def members_text(members: list[str], kinds: dict[str, str]) -> str:
    """What an ensemble is made of: "1 (resnet50)" for a single member (the ensemble is that model), else the count
    of each kind ("5: 2 deep + 2 xgboost + 1 lightgbm")."""
    if len(members) == 1:
        return f"1 ({members[0]})"
    counts = Counter(kinds.get(b, "other") for b in members)
    order = sorted(counts, key=lambda k: (k != DEEP, k))  # deep models first, then each engine
    return f"{len(members)}: " + " + ".join(f"{counts[k]} {k}" for k in order)


def engines_in(table: pd.DataFrame) -> list[str]:
    """The boosting engines present, in the order they appear."""
    return [k for k in dict.fromkeys(table["kind"]) if k not in (DEEP, ENSEMBLE)]


def dl_vs_gb(table: pd.DataFrame) -> pd.DataFrame:
    out = []
    engines = engines_in(table)
    for b in table.loc[table["kind"] == DEEP, "name"]:
        sub = table[table["backbone"] == b].set_index("kind")
        row = {"backbone": b}
        for kind in (DEEP, *engines):
            for k in ("mae", "accuracy", "rmse"):
                row[f"{kind}_{k}"] = sub.loc[kind, k] if kind in sub.index else None
        out.append(row)
    return pd.DataFrame(out)
