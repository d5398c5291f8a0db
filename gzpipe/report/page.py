"""report.html: a page that answers at a glance. Its first lines say which model is best by each metric and by how
much (with the 95% interval of the paired difference to the next), leading with the Kaggle metric on the random-draw
test galaxies where the shards name some; then one table, sorted as the figures are (best test MAE first), with the
train-mean baseline and the best constant as rows, inside a box that scrolls sideways rather than running off the
page; then the cost of each model, the per-catalogue view, the per-task accuracy (baseline included) and the figures.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

from gzpipe.fileio import atomic_open
from gzpipe.report.collect import ENSEMBLE

_FORMATS = {"kaggle_galaxies": "{:,.0f}", "random_galaxies": "{:,.0f}", "parameters": "{:,.0f}", "trees": "{:,.0f}",
            "training_time_s": "{:,.1f}", "throughput_per_s": "{:,.1f}", "test_galaxies": "{:,.0f}",
            "val_galaxies": "{:,.0f}", "questions": "{:.0f}"}
STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
.scroll{overflow-x:auto;max-width:100%}table.t{border-collapse:collapse;font-size:13px;margin:0.5em 0 1.5em}
table.t td,table.t th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right;white-space:nowrap}
table.t td:first-child,table.t th:first-child{text-align:left}tr.ref td{color:#666;font-style:italic}
ul.lead li{margin:0.3em 0}img{max-width:100%;border:1px solid #eee}"""


def table_html(df: pd.DataFrame, reference_rows: int = 0) -> str:
    """A table in a box that scrolls sideways; its last ``reference_rows`` rows (baseline, constant) in grey."""
    fmt = {c: (lambda f: (lambda v: "" if pd.isna(v) or v == "" else f.format(v)))(f)
           for c, f in _FORMATS.items() if c in df}
    out = df.to_html(index=False, float_format=lambda v: f"{v:.4f}", formatters=fmt, na_rep="", border=0,
                     classes="t", escape=True)
    if reference_rows:  # the last rows are references, not models
        rows = out.split("<tr>")
        out = "<tr>".join(rows[:len(rows) - reference_rows]) + "".join(
            "<tr class=\"ref\">" + r for r in rows[len(rows) - reference_rows:])
    return f"<div class='scroll'>{out}</div>"


def _ci(v, lo, hi, digits=4) -> str:
    if pd.isna(v):
        return ""
    return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]" if pd.notna(lo) else f"{v:.{digits}f}"


def main_table(table: pd.DataFrame, baseline: dict | None, claims: dict) -> tuple[pd.DataFrame, int]:
    """The page's comparison: best test MAE first (as the figures), the metrics with their intervals, the
    verdict against the best, the Kaggle RMSE over the best constant's; the baseline and the constant as rows."""
    t = table.sort_values("mae").reset_index(drop=True)
    page = pd.DataFrame({"#": range(1, len(t) + 1), "model": t["name"], "kind": t["kind"]})
    if "kaggle_random" in t and t["kaggle_random"].notna().any():
        page["Kaggle RMSE, random draw"] = [_ci(v, lo, hi) for v, lo, hi in
                                           zip(t["kaggle_random"], t["kaggle_random_lo"], t["kaggle_random_hi"])]
        page["/ constant (random)"] = [f"{v:.3f}" if pd.notna(v) else "" for v in t["kaggle_random_vs_constant"]]
    page["test MAE"] = [_ci(v, lo, hi) for v, lo, hi in zip(t["mae"], t.get("mae_lo", t["mae"] * float("nan")),
                                                              t.get("mae_hi", t["mae"] * float("nan")))]
    if "d_mae_vs_best_lo" in t:
        page["MAE vs best"] = ["best" if lo == 0 and hi == 0 else "" if pd.isna(lo) else
                               ("not distinguishable" if tied else "worse") + f" ({lo:+.4f} to {hi:+.4f})"
                               for lo, hi, tied in zip(t["d_mae_vs_best_lo"], t["d_mae_vs_best_hi"],
                                                       t["tied_with_best"])]
    if "kaggle_rmse" in t and t["kaggle_rmse"].notna().any():
        page["Kaggle RMSE, all complete"] = [_ci(v, lo, hi) for v, lo, hi in zip(
            t["kaggle_rmse"], t.get("kaggle_rmse_lo", t["kaggle_rmse"] * float("nan")),
            t.get("kaggle_rmse_hi", t["kaggle_rmse"] * float("nan")))]
        page["/ constant"] = [f"{v:.3f}" if pd.notna(v) else "" for v in t.get("kaggle_vs_constant",
                                                                                 t["kaggle_rmse"] * float("nan"))]
    page["accuracy"] = [f"{v:.4f}" for v in t["accuracy"]]
    page["questions"] = t.get("questions", pd.Series([10] * len(t)))
    page["members"] = t.get("members", pd.Series([""] * len(t))).fillna("")
    refs = []
    if baseline:
        refs.append({"#": "", "model": "train-mean baseline", "kind": "reference",
                     "test MAE": f"{baseline['mae']:.4f}", "accuracy": f"{baseline['accuracy']:.4f}",
                     **({"Kaggle RMSE, all complete": f"{baseline['kaggle_rmse']:.4f}"}
                        if baseline.get("kaggle_rmse") is not None and "Kaggle RMSE, all complete" in page else {})})
    const = claims.get("kaggle_constant")
    rd = claims.get("random")
    if const or rd:
        row = {"#": "", "model": "best constant (each column's mean)", "kind": "reference"}
        if const and "Kaggle RMSE, all complete" in page:
            row.update({"Kaggle RMSE, all complete": f"{const:.4f}", "/ constant": "1.000"})
        if rd and rd.constant and "Kaggle RMSE, random draw" in page:
            row.update({"Kaggle RMSE, random draw": f"{rd.constant:.4f}", "/ constant (random)": "1.000"})
        refs.append(row)
    if refs:
        page = pd.concat([page, pd.DataFrame(refs)], ignore_index=True).fillna("")
    return page, len(refs)


def cost_table(table: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in ("name", "kind", "parameters", "trees", "training_time_s", "throughput_per_s", "throughput_of",
                        "test_galaxies", "val_galaxies") if c in table]
    return table.sort_values("mae")[cols]


def lead_lines(table: pd.DataFrame, claims: dict, catalogues: str) -> list[str]:
    """The page's first lines: the best model by each metric and by how much, with the interval."""
    out = []
    esc = html.escape
    rd = claims.get("random")
    if rd:
        names = list(table["name"])
        best = rd.best(names)
        if best:
            ratio = rd.ratio(best)
            singles = [n for n, k in zip(table["name"], table["kind"]) if k != ENSEMBLE and n in rd.models]
            best_single = rd.best(singles)
            txt = (f"<b>Where the users' galaxies come from</b>: on the {rd.galaxies} test galaxies of {esc(catalogues)} "
                   f"(a random draw), the best model by the Kaggle RMSE is <b>{esc(best)}</b>: "
                   f"{rd.models[best].text()} = <b>{ratio:.3f}</b> of the best constant's {rd.constant:.4f}")
            others = sorted((n for n in rd.models if n != best), key=lambda n: rd.models[n].point)
            if others:
                d = rd.difference(others[0], best)
                txt += (f"; the next, {esc(others[0])}, by {d.point:+.4f} [{d.lo:+.4f}, {d.hi:+.4f}] "
                        f"({'beyond chance' if d.excludes_zero() else 'not distinguishable'})")
            stacked = claims.get("stacked", {}).get("name")
            if stacked and stacked in rd.models and best_single and stacked != best_single:
                d = rd.difference(stacked, best_single)
                verdict = "below it beyond chance" if d.hi < 0 else "above it beyond chance" if d.lo > 0 else \
                    "not distinguishable from it"
                txt += (f". The stacked ensemble against the best single model ({esc(best_single)}, "
                        f"{rd.ratio(best_single):.3f} of the constant): {d.point:+.4f} [{d.lo:+.4f}, {d.hi:+.4f}], "
                        f"{verdict}")
            out.append(txt + ".")
    mae_best = claims.get("best")
    if mae_best and "mae_lo" in table:
        t = table.set_index("name")
        second = table.sort_values("mae")["name"].tolist()[1:2]
        txt = f"<b>By test MAE</b> (all {claims['galaxies']} test galaxies): <b>{esc(mae_best)}</b> " \
              f"{_ci(t.at[mae_best, 'mae'], t.at[mae_best, 'mae_lo'], t.at[mae_best, 'mae_hi'])}"
        if second:
            lo, hi = t.at[second[0], "d_mae_vs_best_lo"], t.at[second[0], "d_mae_vs_best_hi"]
            d = t.at[second[0], "mae"] - t.at[mae_best, "mae"]
            txt += (f"; the next, {esc(second[0])}, is {d:+.4f} [{lo:+.4f}, {hi:+.4f}] behind "
                    f"({'not distinguishable' if lo <= 0 <= hi else 'beyond chance'})")
        out.append(txt + ".")
    if "kaggle_rmse" in table and table["kaggle_rmse"].notna().any():
        t = table.dropna(subset=["kaggle_rmse"]).sort_values("kaggle_rmse")
        k_best = t["name"].iloc[0]
        r = t.iloc[0]
        txt = (f"<b>By the Kaggle RMSE</b> over the {int(r['kaggle_galaxies'])} test galaxies with all 30 cumulative "
               f"values known: <b>{esc(k_best)}</b> {_ci(r['kaggle_rmse'], r.get('kaggle_rmse_lo'), r.get('kaggle_rmse_hi'))}"
               + (f" = {r['kaggle_vs_constant']:.3f} of the best constant's" if pd.notna(r.get("kaggle_vs_constant"))
                  else ""))
        if mae_best and k_best != mae_best:
            txt += " (<i>a different model from the best by MAE</i>)"
        out.append(txt + ".")
    return out


def write(dest: Path, table: pd.DataFrame, gb: pd.DataFrame, figs: dict[str, str], best: str, baseline: dict | None,
          stale: dict[str, list[str]], claims: dict, by_cat_html: str, tasks: pd.DataFrame, catalogues: str) -> None:
    esc = html.escape
    imgs = "".join(
        f"<h2>{esc(title)}</h2><img src='data:image/png;base64,{base64.b64encode((dest / f).read_bytes()).decode()}' "
        f"alt='{esc(title)}'>" for title, f in figs.items())
    n_test = int(table["test_galaxies"].max())
    lead = "".join(f"<li>{line}</li>" for line in lead_lines(table, claims, catalogues))
    ens = table[table["kind"] == ENSEMBLE]
    val_n = ens["val_galaxies"].dropna() if "val_galaxies" in ens else pd.Series(dtype=float)
    notes = [f"{len(table)} models, each scored on the test split ({n_test} galaxies): 30 vote fractions over 10 GZ2 "
             "questions. Intervals are 95% paired-bootstrap intervals over the test galaxies (2,000 resamples, the "
             "same draws for every model). The Kaggle RMSE is over cumulative fractions (Kaggle's Galaxy Challenge "
             "metric, the 30 of its 37 columns gzpipe predicts); '/ constant' divides it by the best constant's on "
             "the same galaxies (1 = no better than a constant; the 2014 winner scored about 0.46 of one on "
             "Kaggle's own test set)."]
    if baseline:
        beat = int((table["mae"] < baseline["mae"]).sum())
        notes.append(f"{beat} of {len(table)} models beat the train-mean baseline's MAE.")
    if len(val_n):
        notes.append(f"Ensemble weights were fitted on the validation split only ({int(val_n.max())} galaxies).")
    single = [n for n, mem in zip(ens["name"], ens.get("members", [])) if isinstance(mem, str) and mem.startswith("1 ")]
    if single:
        notes.append(f"{', '.join(map(esc, single))}: one member only, so that model itself.")
    if "questions" in table and (table["questions"] < 10).any():
        notes.append("A model that learnt fewer than 10 questions (the column questions) is scored on those only.")
    stale_txt = ""
    if stale:
        items = "".join(f"<li><b>{esc(n)}</b>: {esc('; '.join(c))}</li>" for n, c in stale.items())
        stale_txt = (f"<p><b>Left out, out of date</b> (an input changed since the model was built; re-run its "
                     f"stage, or <code>gzpipe study</code>):</p><ul>{items}</ul>")
    main, refs = main_table(table, baseline, claims)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>gzpipe study report</title>
<style>{STYLE}</style></head><body>
<h1>gzpipe: Galaxy Zoo model comparison</h1>
<ul class="lead">{lead}</ul>
<p>{' '.join(notes)}</p>{stale_txt}
<h2>Comparison (best test MAE first, as in the figures)</h2>{table_html(main, refs)}
{by_cat_html}
<h2>Cost</h2>{table_html(cost_table(table))}
<h2>Deep models beside their boosters</h2>{table_html(gb)}
<h2>Per-task accuracy</h2>{table_html(tasks, 1 if baseline else 0)}
{imgs}
<p style="color:#888">Files: comparison_table.csv, by_catalogue.csv, dl_vs_gb_comparison.csv, baseline.json and the PNGs
beside this page.</p>
</body></html>"""
    with atomic_open(dest / "report.html", "w") as f:
        f.write(page)
