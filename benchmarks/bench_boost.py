"""Boosting settings measured: fit time against test MAE, both engines, on a backbone's cached features.

    .venv/bin/python benchmarks/bench_boost.py --features ART/resnet50/features [--settings NAME,...] [--rows N]

Each setting is a set of `gzpipe boost` options (SETTINGS below; "full-old" is the `full` preset before this
measurement, "full" the preset now). For each engine and setting the booster is trained from scratch (early stopping
on val, as the study does) and scored on test; one JSON row each: train time, rounds, trees, val and test MAE.
With --rows N the train split is cut to its first N rows (the split is shuffled at write time), to see how the time
grows with rows; with --tile K it is repeated K times (jittered) for the cost of a round at more rows; with --folds K
the splits are pooled and every setting is fitted K times, each fold the test split once (a comparison with all
galaxies as test rows instead of one small split's).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, machine  # noqa: E402

SETTINGS = {
    # the `full` preset before these measurements
    "full-old": {"max_bin": 256, "colsample": 0.5, "learning_rate": 0.1, "rounds": 2000, "early_stopping": 50},
    # the demo / real presets
    "demo": {"max_bin": 64, "colsample": 0.25, "learning_rate": 0.1, "rounds": 2000, "early_stopping": 50},
    "real": {"max_bin": 64, "colsample": 0.25, "learning_rate": 0.1, "rounds": 200, "early_stopping": 20},
    "real-l1": {"max_bin": 64, "colsample": 0.25, "learning_rate": 0.1, "rounds": 200, "early_stopping": 20,
                "objective": "l1"},
    "real-l1-r1000": {"max_bin": 64, "colsample": 0.25, "learning_rate": 0.1, "rounds": 1000, "early_stopping": 20,
                      "objective": "l1"},
    "all-bin64": {"max_bin": 64, "colsample": 0.5, "learning_rate": 0.1, "rounds": 2000, "early_stopping": 50},
    "all-bin64-col0.1": {"max_bin": 64, "colsample": 0.1, "learning_rate": 0.1, "rounds": 2000,
                         "early_stopping": 50},
    "all-bin32-col0.1": {"max_bin": 32, "colsample": 0.1, "learning_rate": 0.1, "rounds": 2000,
                         "early_stopping": 50},
    "all-bin32-col0.1-es20": {"max_bin": 32, "colsample": 0.1, "learning_rate": 0.1, "rounds": 2000,
                              "early_stopping": 20},
    "all-bin32-col0.05": {"max_bin": 32, "colsample": 0.05, "learning_rate": 0.1, "rounds": 2000,
                          "early_stopping": 50},
    "all-bin32-col0.05-es20": {"max_bin": 32, "colsample": 0.05, "learning_rate": 0.1, "rounds": 2000,
                               "early_stopping": 20},
    "pca64": {"pca": 64, "max_bin": 64, "colsample": 0.5, "learning_rate": 0.1, "rounds": 2000, "early_stopping": 50},
    "pca128": {"pca": 128, "max_bin": 64, "colsample": 0.5, "learning_rate": 0.1, "rounds": 2000,
               "early_stopping": 50},
    "pca256": {"pca": 256, "max_bin": 64, "colsample": 0.5, "learning_rate": 0.1, "rounds": 2000,
               "early_stopping": 50},
    "pca128-bin255": {"pca": 128, "max_bin": 255, "colsample": 0.5, "learning_rate": 0.1, "rounds": 2000,
                      "early_stopping": 50},
    "pca128-col1": {"pca": 128, "max_bin": 64, "colsample": 1.0, "learning_rate": 0.1, "rounds": 2000,
                    "early_stopping": 50},
    "pca128-lr0.2": {"pca": 128, "max_bin": 64, "colsample": 0.5, "learning_rate": 0.2, "rounds": 2000,
                     "early_stopping": 25},
    "pca128-sub0.5": {"pca": 128, "max_bin": 64, "colsample": 0.5, "subsample": 0.5, "learning_rate": 0.1,
                      "rounds": 2000, "early_stopping": 50},
}


def _cpu_seconds() -> float:
    """User + system CPU time of this process (all threads): a fit's cost that other work on the machine does not
    inflate, unlike wall time (on an idle 2-core machine, wall is about this / 2)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _subset(src: Path, dest: Path, rows: int | None, tile: int = 1) -> None:
    """A features folder for the booster: links to the splits, the train split cut to ``rows``, or repeated
    ``tile`` times with 1% jitter on the features (for the cost of a round at more rows, not for accuracy)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    dest.mkdir(parents=True)
    for f in src.iterdir():
        if f.name == "train.parquet" and tile > 1:
            df = pq.read_table(f).to_pandas()
            feats = [c for c in df.columns if c.startswith("f") and c[1:].isdigit()]
            rng = np.random.default_rng(0)
            x = df[feats].to_numpy(np.float32)
            scale = 0.01 * x.std(axis=0, keepdims=True)
            parts = []
            for k in range(tile):
                part = df.copy()
                part["id"] = part["id"].astype(str) + f"-{k}"
                part[feats] = (x + rng.standard_normal(x.shape, np.float32) * scale).astype(df[feats[0]].dtype)
                parts.append(part)
            import pandas as pd

            pq.write_table(pa.Table.from_pandas(pd.concat(parts, ignore_index=True), preserve_index=False),
                           dest / f.name)
        elif f.name == "train.parquet" and rows:
            t = pq.read_table(f).slice(0, rows)
            pq.write_table(t, dest / f.name)
        else:
            (dest / f.name).symlink_to(f.resolve())


def _folds(src: Path, k: int) -> list[dict]:
    """All rows of the three splits pooled and shuffled (seed 0) into ``k`` folds; fold i: test = fold i, val = fold
    i + 1, train = the rest. Every galaxy is scored once, by a booster that did not see it: a comparison of settings
    with k times the test rows of one split."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    pooled = pa.concat_tables([pq.read_table(src / f"{s}.parquet") for s in ("train", "val", "test")])
    order = np.random.default_rng(0).permutation(pooled.num_rows)
    parts = np.array_split(order, k)
    out = []
    for i in range(k):
        val = (i + 1) % k
        train = np.concatenate([p for j, p in enumerate(parts) if j not in (i, val)])
        out.append({"train": pooled.take(train), "val": pooled.take(parts[val]), "test": pooled.take(parts[i])})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--features", type=Path, required=True, help="a <backbone>/features folder")
    ap.add_argument("--settings", default=",".join(SETTINGS), help="comma list of setting names")
    ap.add_argument("--engines", default="xgboost,lightgbm")
    ap.add_argument("--rows", type=int, default=None, help="cut the train split to this many rows")
    ap.add_argument("--tile", type=int, default=1,
                    help="repeat the train split this many times, jittered (timing at more rows, not accuracy)")
    ap.add_argument("--folds", type=int, default=1,
                    help="pool the three splits into K folds and fit each setting K times (each fold the test once)")
    ap.add_argument("--data", default="", help="a label for the data in the rows")
    ap.add_argument("--rounds", type=int, default=None, help="fixed rounds, early stopping off (seconds per round)")
    args = ap.parse_args()
    from gzpipe.boost import BoostConfig, run_boost
    from gzpipe.models import resolve_name

    if args.folds == 2:
        ap.error("--folds needs at least 3 (a test, a val and a train fold)")
    backbone = resolve_name(args.features.parent.name)
    tmp = Path(tempfile.mkdtemp(prefix="gzpipe-bench-boost-"))
    try:
        out = tmp / "art"
        (out / backbone).mkdir(parents=True)
        ckpt = args.features.parent / "checkpoints"
        if ckpt.exists():
            (out / backbone / "checkpoints").symlink_to(ckpt.resolve())
        _subset(args.features, out / backbone / "features", args.rows, args.tile)
        import pyarrow.parquet as pq

        feats = out / backbone / "features"
        folds = _folds(args.features, args.folds) if args.folds > 1 else [None]
        for fold, parts in enumerate(folds):
            if parts is not None:  # this fold's test, the next fold's val, the rest train
                for split, table in parts.items():
                    (feats / f"{split}.parquet").unlink(missing_ok=True)
                    pq.write_table(table, feats / f"{split}.parquet")
            n_train = pq.ParquetFile(feats / "train.parquet").metadata.num_rows
            for name in args.settings.split(","):
                for engine in args.engines.split(","):
                    s = dict(SETTINGS[name])
                    if args.rounds:
                        s.update(rounds=args.rounds, early_stopping=args.rounds)
                    t = time.perf_counter()
                    cpu0 = _cpu_seconds()
                    m = run_boost(BoostConfig(engine=engine, backbone=backbone, out=str(out), device="cpu",
                                              force=True, **s))
                    emit({"engine": engine, "setting": name, **s, "data": args.data, "train_rows": n_train,
                          "fold": fold if parts is not None else None,
                          "seconds": round(time.perf_counter() - t, 1), "train_time_s": round(m["train_time_s"], 1),
                          "cpu_seconds": round(_cpu_seconds() - cpu0, 1),
                          "seconds_per_round": round(m["train_time_s"] / args.rounds, 2) if args.rounds else None,
                          "trees": m.get("trees"), "rounds": m.get("best_iteration", None),
                          "val_mae": round(m["val"]["mae"], 5), "test_mae": round(m["test"]["mae"], 5),
                          "test_accuracy": round(m["test"]["accuracy"], 5), "pca_explained": m.get("pca_explained"),
                          "machine": machine()})
                    shutil.rmtree(out / f"{engine}_{backbone}", ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
