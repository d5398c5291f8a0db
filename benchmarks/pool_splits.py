"""One recipe change judged on the random-draw galaxies of several splits: pairs of runs, pooled.

    .venv/bin/python benchmarks/pool_splits.py [--split test|val]
        --pair SHARDS BASE_RUN NEW_RUN [--pair SHARDS BASE_RUN NEW_RUN ...]

A split seed other than the preset's (`gzpipe shard --seed S`) puts other random-draw galaxies into test, where a
second training seed adds none: a change of ~0.001 is below what one split's ~200 random-draw test galaxies resolve.
Each pair is the old and the new recipe trained on one shard set (a run folder with ``<split>_predictions.parquet``,
or that parquet itself); pairs naming the same SHARDS (split) are training seeds of one split. The Kaggle RMSE of
each run on the split's random-draw galaxies (``gzpipe shard --random-draw``) and the paired difference new - old,
with a 95% bootstrap interval; then pooled: each split's galaxies resampled on their own draws, a split's seeds'
differences averaged, the splits weighted equally. The new recipe's runs of two splits may share shard sets built
at another ``--resize`` (the same seed gives the same split): SHARDS only names the labels. One JSON object per line.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, machine  # noqa: E402

from gzpipe import schema  # noqa: E402
from gzpipe.labels import MASK_COLUMNS, random_draw_ids, split_labels  # noqa: E402
from gzpipe.report.intervals import interval  # noqa: E402
from gzpipe.report.random_draw import random_draw  # noqa: E402


def _predictions(run: Path, split: str, ids) -> np.ndarray:
    f = run if run.suffix == ".parquet" else run / f"{split}_predictions.parquet"
    return pd.read_parquet(f).set_index("id").loc[ids, list(schema.TARGET_NAMES)].to_numpy(np.float64)


def _rmse(terms, counts=None):
    s, c = terms
    return np.sqrt(s.sum() / c.sum()) if counts is None else np.sqrt((counts @ s) / (counts @ c))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pair", nargs=3, action="append", required=True, metavar=("SHARDS", "BASE_RUN", "NEW_RUN"))
    ap.add_argument("--split", default="test", choices=["test", "val"])
    args = ap.parse_args()
    by_split = defaultdict(list)
    for shards, base, new in args.pair:
        by_split[str(Path(shards).resolve())].append((Path(base), Path(new)))
    points, boots = [], []
    for k, (shards, pairs) in enumerate(by_split.items()):
        lab = split_labels(shards, args.split)
        lab = lab[lab.index.isin(set(random_draw_ids(shards, args.split)))]
        if lab.empty:
            sys.exit(f"{shards} names no random-draw galaxies in its {args.split} split (gzpipe shard --random-draw)")
        preds = {}
        for i, (base, new) in enumerate(pairs):
            preds[f"base{i}"], preds[f"new{i}"] = _predictions(base, args.split, lab.index), _predictions(new, args.split, lab.index)
        r = random_draw(preds, lab[list(schema.TARGET_NAMES)].to_numpy(np.float64), lab[MASK_COLUMNS].to_numpy(bool),
                        np.ones(len(lab), bool), seed=k)
        pt, bt = [], []
        for i, (base, new) in enumerate(pairs):
            d = r.difference(f"new{i}", f"base{i}")
            emit({"shards": shards, "split": args.split, "galaxies": r.galaxies, "constant": round(r.constant, 5),
                  "base": str(base), "new": str(new), "base_rmse": round(r.models[f"base{i}"].point, 5),
                  "new_rmse": round(r.models[f"new{i}"].point, 5), "base_ratio": round(r.ratio(f"base{i}"), 4),
                  "new_ratio": round(r.ratio(f"new{i}"), 4), "difference": [round(v, 5) for v in (d.point, d.lo, d.hi)]})
            pt.append(_rmse(r.terms[f"new{i}"]) - _rmse(r.terms[f"base{i}"]))
            bt.append(_rmse(r.terms[f"new{i}"], r.counts) - _rmse(r.terms[f"base{i}"], r.counts))
        points.append(np.mean(pt))
        boots.append(np.mean(bt, axis=0))
    pooled = interval(float(np.mean(points)), np.mean(boots, axis=0))
    emit({"pooled": True, "split": args.split, "splits": len(by_split), "pairs": len(args.pair),
          "difference": [round(v, 5) for v in (pooled.point, pooled.lo, pooled.hi)],
          "beyond_chance": bool(pooled.hi < 0 or pooled.lo > 0),
          "share_of_resamples_not_below_0": round(float(np.mean(np.mean(boots, axis=0) >= 0)), 4), "machine": machine()})


if __name__ == "__main__":
    main()
