"""Assemble tables, figures and report.html."""

from __future__ import annotations

import base64
import html
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from gzpipe import runs, schema
from gzpipe.errors import GzpipeError
from gzpipe.fileio import atomic_open, local_path, remove_stale_tmp
from gzpipe.labels import aligned, split_labels
from gzpipe.report import figures
from gzpipe.report.collect import DEEP, ENSEMBLE, collect, dl_vs_gb, engines_in


def _shards_of(out: Path, table: pd.DataFrame) -> str | None:
    for name in table["name"]:
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
    order = {k: i for i, k in enumerate([DEEP, *engines_in(table), ENSEMBLE])}
    table = table.sort_values(["kind", "mae"], key=lambda s: s.map(order) if s.name == "kind" else s)
    gb = dl_vs_gb(table)
    figs = {}
    shards = _shards_of(out, table)
    test = _test_predictions(out, table, shards) if shards else None
    claims = _add_intervals(table, raw, *test) if test else {}
    with atomic_open(dest / "comparison_table.csv", "w") as f:  # once, with the intervals
        table.to_csv(f, index=False, float_format="%.6g")
    with atomic_open(dest / "dl_vs_gb_comparison.csv", "w") as f:
        gb.to_csv(f, index=False, float_format="%.6g")
    by_cat = _by_catalogue(dest, *test) if test else None
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
    _write_html(dest, table, gb, figs, best, baseline, stale, claims, by_cat)
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


def _by_catalogue(dest: Path, ids: list[str], y: np.ndarray, m: np.ndarray, preds: dict) -> pd.DataFrame | None:
    """``by_catalogue.csv``: each model's MAE and Kaggle RMSE over every known cumulative value, on all test
    galaxies and on each catalogue's, beside the best constant (``gzpipe.report.catalogues``)."""
    from gzpipe.report.catalogues import by_catalogue

    t = by_catalogue(preds, y, m, ids)
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


def _baseline(shards: str) -> dict:
    """The trivial model: every test galaxy gets the train split's mean of each target. A study that does not
    beat it has learnt nothing."""
    from gzpipe.metrics import compute_metrics

    masks = [f"mask:{n}" for n in schema.TARGET_NAMES]
    tr, te = split_labels(shards, "train"), split_labels(shards, "test")
    y, m = tr[list(schema.TARGET_NAMES)].to_numpy(), tr[masks].to_numpy()
    mean = np.array([y[m[:, j], j].mean() if m[:, j].any() else 0.5 for j in range(schema.N_TARGETS)])
    yt, mt = te[list(schema.TARGET_NAMES)].to_numpy(), te[masks].to_numpy()
    r = compute_metrics(np.tile(mean, (len(yt), 1)), yt, mt)
    return {"name": "train-mean baseline", "accuracy": r["accuracy"], "mae": r["mae"], "mse": r["mse"],
            "rmse": r["rmse"], "kaggle_rmse": r["kaggle"]["rmse"], "test_galaxies": r["galaxies"]}


_FORMATS = {"kaggle_galaxies": "{:,.0f}",
            "parameters": "{:,.0f}", "trees": "{:,.0f}", "training_time_s": "{:,.1f}", "throughput_per_s": "{:,.1f}",
            "test_galaxies": "{:,.0f}", "val_galaxies": "{:,.0f}"}


def _table_html(df: pd.DataFrame) -> str:
    fmt = {c: (lambda f: (lambda v: "" if pd.isna(v) else f.format(v)))(f) for c, f in _FORMATS.items() if c in df}
    return df.to_html(index=False, float_format=lambda v: f"{v:.4f}", formatters=fmt, na_rep="", border=0, classes="t")


def _with_intervals(table: pd.DataFrame) -> pd.DataFrame:
    """The page's view of the table: MAE, RMSE and Kaggle RMSE as "point [lo, hi]" and the verdict against the
    best."""
    t = table.copy()
    if "mae_lo" not in t:
        return t
    for col in ("mae", "rmse", "kaggle_rmse"):
        if col not in t or f"{col}_lo" not in t:
            continue
        t[col] = [f"{v:.4f} [{lo:.4f}, {hi:.4f}]" if pd.notna(lo) else "" if pd.isna(v) else f"{v:.4f}"
                  for v, lo, hi in zip(t[col], t[f"{col}_lo"], t[f"{col}_hi"])]
    t["vs_best"] = ["best" if pd.notna(lo) and lo == 0 and hi == 0 else
                    "" if pd.isna(lo) else ("not distinguishable" if tied else "worse") +
                    f" ({lo:+.4f} to {hi:+.4f})" for lo, hi, tied in zip(t["d_mae_vs_best_lo"], t["d_mae_vs_best_hi"],
                                                                        t["tied_with_best"])]
    return t


def _claims_html(claims: dict) -> str:
    if not claims:
        return ""
    tied = claims["tied"]
    txt = (f" MAE, RMSE and kaggle_rmse carry a 95% interval from a paired bootstrap over the {claims['galaxies']} test galaxies "
           f"({claims['resamples']} resamples, the same draws for every model); vs_best is the paired MAE difference "
           f"to the best model. {'Not distinguishable from ' + html.escape(claims['best']) + ': <b>' if tied else ''}"
           + (f"{', '.join(map(html.escape, tied))}</b>." if tied else
              "Every other model is worse than the best beyond chance."))
    st = claims.get("stacked")
    if st:
        d = st["difference"]
        verdict = ("better than" if d.hi < 0 else "worse than" if d.lo > 0 else "not distinguishable from")
        txt += (f" The stacked ensemble {html.escape(st['name'])} is <b>{verdict}</b> the best single model "
                f"{html.escape(st['single'])}: paired MAE difference {d.point:+.4f} (95% interval {d.lo:+.4f} to "
                f"{d.hi:+.4f}).")
    return txt


def _by_catalogue_html(by_cat: pd.DataFrame | None, table: pd.DataFrame) -> str:
    """The by-catalogue view as one row per model (best MAE first) and, for each group, its MAE and its Kaggle RMSE
    over every known cumulative value with their intervals and the Kaggle RMSE over the best constant's."""
    if by_cat is None or by_cat.empty:
        return ""
    order = [n for n in table.sort_values("mae")["name"] if n in set(by_cat["name"])]
    groups = list(dict.fromkeys(by_cat["catalogue"]))
    page = pd.DataFrame({"name": order})
    notes = []
    for g in groups:
        t = by_cat[by_cat["catalogue"] == g].set_index("name").loc[order]
        page[f"{g}: MAE"] = [f"{v:.4f} [{lo:.4f}, {hi:.4f}]" if pd.notna(v) else "no labels"
                             for v, lo, hi in zip(t["mae"], t["mae_lo"], t["mae_hi"])]
        page[f"{g}: Kaggle RMSE"] = [f"{v:.4f} [{lo:.4f}, {hi:.4f}]" if pd.notna(v) else "no labels" for v, lo, hi in
                                     zip(t["kaggle_rmse_known"], t["kaggle_rmse_known_lo"], t["kaggle_rmse_known_hi"])]
        page[f"{g}: / constant"] = [f"{v:.3f}" if pd.notna(v) else "" for v in t["kaggle_vs_constant"]]
        const = t["best_constant"].iloc[0]
        notes.append(f"{html.escape(g)}: {int(t['galaxies'].iloc[0]):,} galaxies, {int(t['kaggle_values'].iloc[0]):,}"
                     " cumulative values" + (f", best constant {const:.4f}" if pd.notna(const) else ""))
    return (f"<h2>By catalogue</h2><p>Each model on all test galaxies and, where the shards join several catalogue "
            f"formats, on each one's galaxies ({'; '.join(notes)}). Here the Kaggle RMSE is over <i>every</i> "
            "cumulative value a galaxy's labels carry, so a catalogue with only some questions counts for those it "
            "has; '/ constant' divides it by the RMSE of the best constant on the same values (each column's mean). "
            "95% paired-bootstrap intervals, drawn within each group. Also in by_catalogue.csv.</p>"
            + _table_html(page))


def _write_html(dest: Path, table: pd.DataFrame, gb: pd.DataFrame, figs: dict[str, str], best: str,
                baseline: dict | None, stale: dict[str, list[str]], claims: dict | None = None,
                by_cat: pd.DataFrame | None = None) -> None:
    main_cols = [c for c in ("name", "kind", "members", "accuracy", "mae", "rmse", "vs_best", "kaggle_rmse",
                              "kaggle_vs_constant", "kaggle_galaxies", "test_galaxies", "val_galaxies", "parameters", "trees",
                              "training_time_s", "throughput_per_s", "throughput_of")
                 if c in table or c == "vs_best" and "mae_lo" in table]
    task_cols = ["name"] + [c for c in table.columns if c.startswith("accuracy:")]
    tasks = table[task_cols].rename(columns=lambda c: c.replace("accuracy:", "").split("_", 1)[-1])
    tasks = tasks.astype(object).where(tasks.notna(), "no labels")  # a question the test split has no label for
    imgs = "".join(
        f"<h2>{html.escape(title)}</h2><img src='data:image/png;base64,"
        f"{base64.b64encode((dest / f).read_bytes()).decode()}' alt='{html.escape(title)}'>"
        for title, f in figs.items())
    base_txt = ""
    if baseline:
        beat = int((table["mae"] < baseline["mae"]).sum())
        base_txt = (f" The trivial baseline that predicts the train split's mean of each target scores MAE "
                    f"{baseline['mae']:.4f}, accuracy {baseline['accuracy']:.4f}; {beat} of {len(table)} models beat "
                    "its MAE (dashed line in the first figure).")
    n_test = int(table["test_galaxies"].max())
    ens = table[table["kind"] == ENSEMBLE]
    val_n = ens["val_galaxies"].dropna() if "val_galaxies" in ens else pd.Series(dtype=float)
    ens_txt = (f" Ensemble weights were fitted on the validation split only ({int(val_n.max())} galaxies;"
               " the column val_galaxies)." if len(val_n) else " Ensemble weights were fitted on the validation split "
               "only.")
    single = [n for n, mem in zip(ens["name"], ens.get("members", [])) if isinstance(mem, str) and mem.startswith("1 ")]
    if single:
        ens_txt += (f" <b>{', '.join(map(html.escape, single))}</b> {'has' if len(single) == 1 else 'have'} one member "
                    f"only, so {'it is' if len(single) == 1 else 'each is'} that model itself, not an ensemble.")
    kaggle_txt = ""
    if "kaggle_rmse" in table and table["kaggle_rmse"].notna().any():
        from gzpipe.metrics import KAGGLE_COLUMNS_NOTE

        n_k = int(table["kaggle_galaxies"].max())
        kaggle_txt = (f" kaggle_rmse is the {KAGGLE_COLUMNS_NOTE} ({n_k} of the test galaxies; the 2014 winner scored "
                      "0.0749 over all 37 columns on Kaggle's own test set)"
                      + (f"; the train-mean baseline scores {baseline['kaggle_rmse']:.4f}" if baseline and
                         baseline.get("kaggle_rmse") is not None else "")
                      + (f"; the best constant (each column's mean over these galaxies) "
                         f"{claims['kaggle_constant']:.4f}, and kaggle_vs_constant is a model's over it"
                         if claims and claims.get("kaggle_constant") else "") + ".")
    stale_txt = ""
    if stale:
        items = "".join(f"<li><b>{html.escape(n)}</b>: {html.escape('; '.join(c))}</li>" for n, c in stale.items())
        stale_txt = (f"<p><b>Left out, out of date</b> (an input changed since the model was built; re-run its "
                     f"stage, or <code>gzpipe study</code>):</p><ul>{items}</ul>")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>gzpipe study report</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}}
table.t{{border-collapse:collapse;font-size:13px;margin:1em 0}}table.t td,table.t th{{padding:3px 8px;
border-bottom:1px solid #ddd;text-align:right}}table.t td:first-child,table.t th:first-child{{text-align:left}}
img{{max-width:100%;border:1px solid #eee}}</style></head><body>
<h1>gzpipe: Galaxy Zoo 2 model comparison</h1>
<p>{len(table)} models evaluated on the test split ({n_test} galaxies): 30 vote fractions over 10 GZ2 tasks. Accuracy
rounds prediction and target to 0/1; MAE / MSE / RMSE are over valid (unmasked) outputs. Best on test MAE:
<b>{html.escape(best)}</b>.{ens_txt}{base_txt}{_claims_html(claims or {})}{kaggle_txt}</p>{stale_txt}
<h2>Comparison</h2>{_table_html(_with_intervals(table)[main_cols])}
{_by_catalogue_html(by_cat, table)}
<h2>Deep models beside their boosters</h2>{_table_html(gb)}
<h2>Per-task accuracy</h2>{_table_html(tasks)}
{imgs}
<p style="color:#888">Files: comparison_table.csv, dl_vs_gb_comparison.csv and the PNGs beside this page.</p>
</body></html>"""
    with atomic_open(dest / "report.html", "w") as f:
        f.write(page)
