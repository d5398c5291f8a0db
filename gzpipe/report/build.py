"""Assemble tables, figures and report.html."""

from __future__ import annotations

import html
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from gzpipe import runs, schema
from gzpipe.errors import GzpipeError
from gzpipe.fileio import atomic_open, local_path, remove_stale_tmp
from gzpipe.labels import aligned, split_labels
from gzpipe.report import figures, page
from gzpipe.report.collect import DEEP, ENSEMBLE, collect, dl_vs_gb


def _shards_of(out: Path, table: pd.DataFrame) -> str | None:
    """The shards the models were scored on: the first backbone's or booster's (an ensemble names only members)."""
    for name in table["name"]:
        if (out / name / runs.CONFIG).exists():
            return runs.shards_of(out / name)
    return None


def run_report(out: str | Path = "artifacts") -> dict:
    out = Path(out)
    table, raw, stale = collect(out)
    for name, changed in stale.items():
        warnings.warn(f"report leaves out {name}: " + runs.stale_message(out / name, changed, "re-run its stage "
                                                                          "(gzpipe study does it for you)"))
    if table.empty:
        raise GzpipeError(f"no finished model under {out}"
                          + (f" that is up to date ({len(stale)} out of date)" if stale else "")
                          + "; run `gzpipe study` or the stages first")
    dest = out / "model_comparison"
    dest.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(dest)
    table = table.sort_values("mae").reset_index(drop=True)  # as the figures: best test MAE first
    gb = dl_vs_gb(table)
    figs = {}
    shards = _shards_of(out, table)
    test = _test_predictions(out, table, shards) if shards else None
    claims = _add_intervals(table, raw, *test) if test else {}
    catalogues, claims_rows = "", None
    if test:
        claims_rows, catalogues = _random_rows(shards, test[0])
        if claims_rows is not None:
            claims["random"] = _add_random_draw(table, test[1], test[2], test[3], claims_rows)
    with atomic_open(dest / "comparison_table.csv", "w") as f:  # once, with the intervals
        table.to_csv(f, index=False, float_format="%.6g")
    with atomic_open(dest / "dl_vs_gb_comparison.csv", "w") as f:
        gb.to_csv(f, index=False, float_format="%.6g")
    by_cat = _by_catalogue(dest, *test, extra={"random draw": claims_rows} if claims_rows is not None else None) \
        if test else None
    if by_cat is not None:
        figures.kaggle_by_catalogue(by_cat, table, dest / "kaggle_by_catalogue.png")
    baseline = _baseline(shards) if shards else None
    if baseline:
        from gzpipe.fileio import write_json

        write_json(dest / "baseline.json", baseline)
    figures.metric_bars(table, dest / "metrics_by_model.png", baseline)
    figs["All models"] = "metrics_by_model.png"
    figures.per_task_heatmap(table, dest / "per_task_heatmap.png")
    figs["Per task"] = "per_task_heatmap.png"
    best = table.sort_values("mae").iloc[0]["name"]
    if shards:
        pred = pd.read_parquet(local_path(runs.predictions_path(out / best, "test")))
        y, m = aligned(split_labels(shards, "test"), pred["id"].tolist())
        figures.predicted_vs_true(pred[list(schema.TARGET_NAMES)].to_numpy(), y, m, best, dest / "predicted_vs_true.png")
        figs["Predicted vs true"] = "predicted_vs_true.png"
    stacked = next((n for n in table["name"] if raw[n].get("method") == "stacked"), None)
    if stacked:
        figures.stacked_weights(raw[stacked]["weights"], dest / "stacked_weights.png", raw[stacked].get("grouping"),
                                raw[stacked].get("shrink"))
        figs["Stacked ensemble weights"] = "stacked_weights.png"
    if "mae_without_tta" in table and table["mae_without_tta"].notna().any():
        figures.tta_effect(table, dest / "tta_effect.png")
        figs["Test-time augmentation"] = "tta_effect.png"
    histories = {n: raw[n]["history"] for n in table.loc[table["kind"] == DEEP, "name"] if raw[n].get("history")}
    if histories:
        figures.all_training_curves(histories, dest / "training_curves.png")
        figs["Training curves"] = "training_curves.png"
    if by_cat is not None:
        figs["Kaggle RMSE by catalogue, against the best constant"] = "kaggle_by_catalogue.png"
    page.write(dest, table, gb, figs, best, baseline, stale, claims, _by_catalogue_html(by_cat, table),
               _tasks(table, shards if baseline else None), catalogues)
    print(f"report: {len(table)} models -> {dest / 'report.html'} (best on test MAE: {best})", flush=True)
    return {"models": len(table), "best": best, "dir": str(dest)}


_INTERVAL_COLUMNS = ("mae_lo", "mae_hi", "rmse_lo", "rmse_hi", "kaggle_rmse_lo", "kaggle_rmse_hi")


def _test_predictions(out: Path, table: pd.DataFrame, shards: str):
    """(ids, targets, mask, {model: n x 30 predictions}) over the test split, for the models whose predictions
    cover every test galaxy; None when none does."""
    labels = split_labels(shards, "test")
    ids = labels.index.tolist()
    preds = {}
    for name in table["name"]:
        try:
            p = runs.read_predictions(out / name, "test")
        except (GzpipeError, OSError, KeyError):
            continue
        if set(ids) <= set(p.index):
            preds[name] = p.loc[ids, list(schema.TARGET_NAMES)].to_numpy(np.float64)
    if not preds:
        return None
    y, m = aligned(labels, ids)
    return ids, y, m, preds


def _by_catalogue(dest: Path, ids: list[str], y: np.ndarray, m: np.ndarray, preds: dict,
                  extra: dict | None = None) -> pd.DataFrame | None:
    """``by_catalogue.csv``: each model's MAE and Kaggle RMSE over every known cumulative value, on all test
    galaxies and on each catalogue's, beside the best constant (``gzpipe.report.catalogues``)."""
    from gzpipe.report.catalogues import by_catalogue

    t = by_catalogue(preds, y, m, ids, extra=extra)
    if t.empty:
        return None
    with atomic_open(dest / "by_catalogue.csv", "w") as f:
        t.to_csv(f, index=False, float_format="%.6g")
    return t


def _add_intervals(table: pd.DataFrame, raw: dict, ids: list[str], y: np.ndarray, m: np.ndarray,
                   preds: dict) -> dict:
    """Each model's test MAE, RMSE and Kaggle RMSE with a 95% paired-bootstrap interval, its paired MAE difference
    to the best and whether that interval contains 0 (``tied_with_best``), and its Kaggle RMSE over the best
    constant's on the same galaxies (``kaggle_vs_constant``), as columns of ``table``; returns the stacked
    ensemble's claim (its paired difference to the best single model) for the page."""
    from gzpipe.report.intervals import RESAMPLES, KaggleTerms, difference, paired_bootstrap

    r = paired_bootstrap(preds, y, m)
    const = KaggleTerms(y, m).best_constant()
    for col in (*_INTERVAL_COLUMNS, "d_mae_vs_best_lo", "d_mae_vs_best_hi"):
        table[col] = np.nan
    table["tied_with_best"] = pd.Series([None] * len(table), index=table.index, dtype=object)
    for i, name in zip(table.index, table["name"]):
        if name not in r["models"]:
            continue
        f = r["models"][name]
        k = f["kaggle"]
        table.loc[i, [*_INTERVAL_COLUMNS, "d_mae_vs_best_lo", "d_mae_vs_best_hi"]] = [
            f["mae"].lo, f["mae"].hi, f["rmse"].lo, f["rmse"].hi, k.lo if k else np.nan, k.hi if k else np.nan,
            f["vs_best"].lo, f["vs_best"].hi]
        table.at[i, "tied_with_best"] = bool(f["tied_with_best"])
    table["kaggle_vs_constant"] = table["kaggle_rmse"] / const if const else np.nan  # no complete galaxy: none
    claims = {"best": r["best"], "resamples": RESAMPLES, "galaxies": len(ids), "kaggle_constant": const,
              "tied": [n for n in preds if r["models"][n]["tied_with_best"] and n != r["best"]]}
    stacked = next((n for n in preds if raw[n].get("method") == "stacked"), None)
    ranked = table.sort_values("mae")
    singles = [n for n, k in zip(ranked["name"], ranked["kind"]) if n in preds and k != ENSEMBLE]
    if stacked and singles:
        claims["stacked"] = {"name": stacked, "single": singles[0],
                             "difference": difference(preds[stacked], preds[singles[0]], y, m)}
    return claims


def _random_rows(shards: str, ids: list[str]) -> tuple[np.ndarray | None, str]:
    """Which test galaxies are of the catalogues the shards name as a random draw, and those catalogues' names."""
    from gzpipe.labels import random_draw_ids
    from gzpipe.manifest import read_manifest

    chosen = random_draw_ids(shards, "test")
    if not chosen:
        return None, ""
    m = read_manifest(shards)
    names = ", ".join(Path(m["catalogs"][k]["path"]).name for k in m.get("random_draw", []) if k < len(m["catalogs"]))
    keep = set(chosen)
    return np.array([i in keep for i in ids]), names


def _add_random_draw(table: pd.DataFrame, y: np.ndarray, m: np.ndarray, preds: dict, rows: np.ndarray):
    """Each model's Kaggle RMSE on the random-draw test galaxies, with its interval and over the best constant's
    (columns ``kaggle_random``, ``_lo``, ``_hi``, ``kaggle_random_vs_constant``, ``random_galaxies``)."""
    from gzpipe.report.random_draw import random_draw

    rd = random_draw(preds, y, m, rows)
    if rd is None:
        return None
    for col in ("kaggle_random", "kaggle_random_lo", "kaggle_random_hi", "kaggle_random_vs_constant"):
        table[col] = np.nan
    table["random_galaxies"] = rd.galaxies
    for i, name in zip(table.index, table["name"]):
        k = rd.models.get(name)
        if k is not None:
            table.loc[i, ["kaggle_random", "kaggle_random_lo", "kaggle_random_hi"]] = [k.point, k.lo, k.hi]
            table.loc[i, "kaggle_random_vs_constant"] = rd.ratio(name)
    return rd


def _tasks(table: pd.DataFrame, shards: str | None) -> pd.DataFrame:
    """Per-task test accuracy, best MAE first, with the train-mean baseline's as the last row."""
    task_cols = ["name"] + [c for c in table.columns if c.startswith("accuracy:")]
    tasks = table.sort_values("mae")[task_cols]
    if shards:
        base = _baseline(shards, per_task=True)
        tasks = pd.concat([tasks, pd.DataFrame([{"name": "train-mean baseline",
                                                 **{f"accuracy:{t}": v for t, v in base.items()}}])],
                          ignore_index=True)
    tasks = tasks.rename(columns=lambda c: c.replace("accuracy:", "").split("_", 1)[-1])
    return tasks.astype(object).where(tasks.notna(), "no labels")  # a question the test split has no label for


def _baseline(shards: str, per_task: bool = False) -> dict:
    """The trivial model: every test galaxy gets the train split's mean of each target. A study that does not
    beat it has learnt nothing."""
    from gzpipe.metrics import compute_metrics

    masks = [f"mask:{n}" for n in schema.TARGET_NAMES]
    tr, te = split_labels(shards, "train"), split_labels(shards, "test")
    y, m = tr[list(schema.TARGET_NAMES)].to_numpy(), tr[masks].to_numpy()
    mean = np.array([y[m[:, j], j].mean() if m[:, j].any() else 0.5 for j in range(schema.N_TARGETS)])
    yt, mt = te[list(schema.TARGET_NAMES)].to_numpy(), te[masks].to_numpy()
    r = compute_metrics(np.tile(mean, (len(yt), 1)), yt, mt)
    if per_task:
        return {t: f["accuracy"] for t, f in r["per_task"].items()}
    return {"name": "train-mean baseline", "accuracy": r["accuracy"], "mae": r["mae"], "mse": r["mse"],
            "rmse": r["rmse"], "kaggle_rmse": r["kaggle"]["rmse"], "test_galaxies": r["galaxies"]}


def _by_catalogue_html(by_cat: pd.DataFrame | None, table: pd.DataFrame) -> str:
    """The by-catalogue view as one row per model (best MAE first) and, for each group, its MAE and its Kaggle RMSE
    over every known cumulative value with their intervals and the Kaggle RMSE over the best constant's."""
    if by_cat is None or by_cat.empty:
        return ""
    order = [n for n in table.sort_values("mae")["name"] if n in set(by_cat["name"])]
    groups = list(dict.fromkeys(by_cat["catalogue"]))
    view = pd.DataFrame({"name": order})
    notes = []
    for g in groups:
        t = by_cat[by_cat["catalogue"] == g].set_index("name").loc[order]
        view[f"{g}: MAE"] = [f"{v:.4f} [{lo:.4f}, {hi:.4f}]" if pd.notna(v) else "no labels"
                             for v, lo, hi in zip(t["mae"], t["mae_lo"], t["mae_hi"])]
        view[f"{g}: Kaggle RMSE"] = [f"{v:.4f} [{lo:.4f}, {hi:.4f}]" if pd.notna(v) else "no labels" for v, lo, hi in
                                     zip(t["kaggle_rmse_known"], t["kaggle_rmse_known_lo"], t["kaggle_rmse_known_hi"])]
        view[f"{g}: / constant"] = [f"{v:.3f}" if pd.notna(v) else "" for v in t["kaggle_vs_constant"]]
        const = t["best_constant"].iloc[0]
        notes.append(f"{html.escape(g)}: {int(t['galaxies'].iloc[0]):,} galaxies, {int(t['kaggle_values'].iloc[0]):,}"
                     " cumulative values" + (f", best constant {const:.4f}" if pd.notna(const) else ""))
    return (f"<h2>By catalogue</h2><p>Each model on all test galaxies and, where the shards join several catalogue "
            f"formats, on each one's galaxies ({'; '.join(notes)}). Here the Kaggle RMSE is over <i>every</i> "
            "cumulative value a galaxy's labels carry, so a catalogue with only some questions counts for those it "
            "has; '/ constant' divides it by the RMSE of the best constant on the same values (each column's mean). "
            "95% paired-bootstrap intervals, drawn within each group. Also in by_catalogue.csv.</p>"
            + page.table_html(view))
