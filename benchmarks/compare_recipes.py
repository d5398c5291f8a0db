"""Finished runs trained on one shard set, side by side on its test (or val) split, with paired-bootstrap intervals.

    .venv/bin/python benchmarks/compare_recipes.py --shards SHARDS RUN [RUN ...] [--predictions NAME=FILE.csv ...]
        [--split val|test]

For each run folder (``<split>_predictions.parquet``) or `gzpipe predict` CSV (e.g. the same model with --tta 8):
MAE and the Kaggle RMSE (cumulative fractions, over the test galaxies with all 30 known), each with a 95% interval
from one set of bootstrap draws over the split's galaxies, and the paired difference of both to the first run; the
train-mean baseline's MAE and the best constant's Kaggle RMSE beside them; where the shards name a random draw
(``gzpipe shard --random-draw``), ``kaggle_random``: the Kaggle RMSE on its galaxies of the split, over the best
constant's, and its paired difference to the first run; and ``kaggle_by_catalogue``: the Kaggle
RMSE over every known cumulative value on all the split's galaxies and on each catalogue format's, over the best
constant's on the same values (``gzpipe.report.catalogues``, the report's "By catalogue"). One JSON object per line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, machine  # noqa: E402

from gzpipe import runs, schema  # noqa: E402
from gzpipe.labels import random_draw_ids, split_labels  # noqa: E402
from gzpipe.report.random_draw import random_draw  # noqa: E402
from gzpipe.report.catalogues import by_catalogue  # noqa: E402
from gzpipe.report.intervals import KaggleTerms, draws, error_terms  # noqa: E402

NAMES = list(schema.TARGET_NAMES)


def _ci(point: float, boot: np.ndarray) -> list[float]:
    lo, hi = np.nanquantile(boot, [0.025, 0.975])
    return [round(float(point), 5), round(float(lo), 5), round(float(hi), 5)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=Path, required=True)
    ap.add_argument("runs", nargs="*", type=Path)
    ap.add_argument("--predictions", nargs="*", default=[], help="NAME=FILE.csv from `gzpipe predict`")
    ap.add_argument("--split", default="test", choices=("val", "test"), help="the split to score [test]")
    args = ap.parse_args()
    lab = split_labels(args.shards, args.split)
    y = lab[NAMES].to_numpy(float)
    m = lab[[f"mask:{n}" for n in NAMES]].to_numpy(bool)
    preds: dict[str, np.ndarray] = {}
    for r in args.runs:
        p = runs.read_predictions(r, args.split)
        where = r.absolute()
        preds[f"{where.parent.name}/{where.name}"] = p.loc[lab.index, NAMES].to_numpy(float)
    for item in args.predictions:
        name, _, f = item.partition("=")
        preds[name] = pd.read_csv(f).set_index("id").loc[lab.index, NAMES].to_numpy(float)
    train = split_labels(args.shards, "train")
    mean = np.nanmean(np.where(train[[f"mask:{n}" for n in NAMES]].to_numpy(bool), train[NAMES].to_numpy(float),
                               np.nan), axis=0)
    baseline = np.tile(mean, (len(y), 1))
    counts = draws(len(y))
    kaggle_terms = KaggleTerms(y, m)
    const = kaggle_terms.best_constant()
    base_err, _, base_n = error_terms(baseline, y, m)
    base_mae = base_err.sum() / base_n.sum()
    emit({"machine": machine(), "shards": str(args.shards), "split": args.split, "galaxies": len(y),
          "baseline_mae": round(float(base_mae), 5), "best_constant_kaggle_rmse": round(const, 5),
          "kaggle_galaxies": kaggle_terms.galaxies})
    chosen = random_draw_ids(args.shards, args.split)
    rows = np.array([i in set(chosen) for i in lab.index]) if chosen else None
    extra = {"random draw": rows} if rows is not None else None
    by_cat = by_catalogue(preds, y, m, lab.index.tolist(), extra=extra).set_index("name") if preds else None
    rd = random_draw(preds, y, m, rows) if rows is not None and preds else None
    if rd is not None:
        emit({"random_draw_galaxies": rd.galaxies, "random_draw_best_constant": round(float(rd.constant), 5)})
    first = None
    for name, p in preds.items():
        err, _, n = error_terms(p, y, m)
        ke, kn = kaggle_terms(p)
        mae, kaggle = err.sum() / n.sum(), np.sqrt(ke.sum() / kn.sum())
        boot_mae = (counts @ err) / (counts @ n)
        with np.errstate(invalid="ignore"):
            boot_k = np.sqrt((counts @ ke) / (counts @ kn))
        row = {"run": name, "mae": _ci(mae, boot_mae), "mae_vs_baseline": round(float(mae / base_mae), 3),
               "kaggle_rmse": _ci(kaggle, boot_k), "kaggle_vs_best_constant": round(float(kaggle / const), 3),
               "kaggle_galaxies": kaggle_terms.galaxies,
               "kaggle_by_catalogue": {g["catalogue"]: {"galaxies": int(g["galaxies"]), "values": int(g["kaggle_values"]),
                                                        "kaggle_rmse_known": [round(float(g[c]), 5) for c in (
                                                            "kaggle_rmse_known", "kaggle_rmse_known_lo",
                                                            "kaggle_rmse_known_hi")],
                                                        "best_constant": round(float(g["best_constant"]), 5),
                                                        "vs_constant": round(float(g["kaggle_vs_constant"]), 3)}
                                       for _, g in by_cat.loc[[name]].iterrows()}}
        if rd is not None and name in rd.models:
            k = rd.models[name]
            row["kaggle_random"] = [round(k.point, 5), round(k.lo, 5), round(k.hi, 5)]
            row["kaggle_random_vs_constant"] = round(float(rd.ratio(name)), 3)
        if first is None:
            first = (boot_mae, boot_k, mae, kaggle, name)
        else:
            row["mae_diff_to_first"] = _ci(mae - first[2], boot_mae - first[0])
            row["kaggle_diff_to_first"] = _ci(kaggle - first[3], boot_k - first[1])
            if rd is not None and name in rd.models and first[4] in rd.models:
                d = rd.difference(name, first[4])
                row["kaggle_random_diff_to_first"] = [round(d.point, 5), round(d.lo, 5), round(d.hi, 5)]
        emit(row)


if __name__ == "__main__":
    main()
