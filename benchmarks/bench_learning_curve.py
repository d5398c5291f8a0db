"""Learning curve on the real data at hand: how much labelled data is enough?

    .venv/bin/python benchmarks/bench_learning_curve.py [--out artifacts/learning_curve] [--sizes 1600,3200,all]
        [--backbone NAME] [--epochs N]

One backbone with one fixed recipe (the `real` preset's train section: its image size, crop, loss, epochs, batch,
lr, selection figure, heads and evaluation views) trained on parts of the train split of the union of the four real
catalogues in ../shared/data (the `real` preset's data: the GZ2 sample's weighted fractions, 420 full Kaggle rows,
2,000 random Kaggle galaxies with all 37 columns, 4,916 rows with 5 of the 11 questions). Every run is scored on
the same validation and test galaxies: the smaller train sets come from `gzpipe shard --train-fraction`, which keeps
a share of the train split by id hash and the val and test splits whole.

Per size: val and test MAE, the Kaggle RMSE (cumulative fractions, over the test galaxies with all 30 columns
known) and the Kaggle RMSE on the random-draw test galaxies (those of kaggle_full_labels, the figure the study is
judged by), each with a 95% paired-bootstrap interval over the test galaxies, the paired differences to the next
size, wall time; the train-mean baseline and the best constants' Kaggle RMSE beside them. Writes
``learning_curve.json`` and ``learning_curve.png`` in --out and prints one JSON object per line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, machine  # noqa: E402

from gzpipe import runs, schema  # noqa: E402
from gzpipe.labels import aligned, random_draw_ids, split_labels  # noqa: E402
from gzpipe.report.intervals import KaggleTerms, paired_bootstrap  # noqa: E402
from gzpipe.report.random_draw import random_draw  # noqa: E402
from gzpipe.shard import ShardConfig, run_shard  # noqa: E402
from gzpipe.study.config import PRESETS, expand  # noqa: E402


def _kaggle(boot: dict, name: str) -> dict:
    """A run's Kaggle RMSE over the complete test galaxies, with its interval from the paired bootstrap."""
    k = boot["models"][name]["kaggle"]
    return {"rmse": k.point, "lo": k.lo, "hi": k.hi, "galaxies": boot["kaggle_galaxies"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("artifacts/learning_curve"))
    ap.add_argument("--sizes", default="1600,3200,all", help="train galaxies per run; 'all' = the whole train split")
    ap.add_argument("--epochs", type=int, default=None, help="[the real preset's]")
    ap.add_argument("--backbone", default=None, help="[the real preset's first]")
    args = ap.parse_args()
    preset = PRESETS["real"]
    data = {k: expand(v) for k, v in preset["data"].items()}
    if not all(Path(c).exists() for c in data["catalog"]):
        sys.exit(f"the real catalogues are not at {data['catalog']} (../shared/data; set GZPIPE_SHARED)")
    train_cfg = {**preset["train"], **({"epochs": args.epochs} if args.epochs else {})}
    args.backbone = args.backbone or preset["backbones"][0]
    shard_cfg = preset["shard"]
    args.out.mkdir(parents=True, exist_ok=True)

    def shards(name: str, train_fraction: float) -> dict:
        return run_shard(ShardConfig(catalog=[Path(c) for c in data["catalog"]],
                                     images=[Path(i) for i in data["images"]], target=data["target"],
                                     out=args.out / name, train_fraction=train_fraction, **shard_cfg))

    full = shards("shards_all", 1.0)
    n_train = full["counts"]["per_split"]["train"]
    sizes = [n_train if s == "all" else int(s) for s in args.sizes.split(",")]
    from gzpipe.train.config import resolve
    from gzpipe.train.run import run_train

    results, preds = [], {}
    test_ids = None
    for n in sizes:
        name = f"train_{n}"
        m = full if n >= n_train else shards(f"shards_{n}", n / n_train)
        got = m["counts"]["per_split"]
        sh = args.out / ("shards_all" if n >= n_train else f"shards_{n}")
        ids = split_labels(sh, "test").index.tolist()
        assert test_ids is None or ids == test_ids, "the test split must be the same galaxies for every size"
        test_ids = ids
        t0 = time.perf_counter()
        metrics = run_train(resolve(args.backbone, str(sh), None, out=str(args.out / name), **train_cfg))
        wall = time.perf_counter() - t0
        preds[name] = runs.read_predictions(args.out / name / args.backbone, "test").loc[ids,
                                                                                         list(schema.TARGET_NAMES)]
        results.append({"name": name, "train_galaxies": got["train"], "val_galaxies": got["val"],
                        "test_galaxies": got["test"], "val_mae": metrics["val"]["mae"],
                        "test_mae": metrics["test"]["mae"], "epochs_run": metrics["epochs_run"],
                        "best_epoch": metrics["best_epoch"],
                        # as the run recorded it: a re-run that finds the run finished skips it in a moment
                        "train_wall_s": metrics.get("wall_time_s", wall),
                        "images_per_s": metrics.get("images_per_s")})
    y, msk = aligned(split_labels(args.out / "shards_all", "test"), test_ids)
    tr = split_labels(args.out / "shards_all", "train")
    ytr, mtr = tr[list(schema.TARGET_NAMES)].to_numpy(), tr[[f"mask:{n}" for n in schema.TARGET_NAMES]].to_numpy()
    mean = np.array([ytr[mtr[:, j], j].mean() for j in range(schema.N_TARGETS)])
    base = np.tile(mean, (len(y), 1))
    boot = paired_bootstrap({"baseline": base, **{k: v.to_numpy(np.float64) for k, v in preds.items()}}, y, msk)
    best_const = KaggleTerms(y, msk).best_constant()
    for r, k in zip(results, preds):
        f = boot["models"][k]
        r.update(test_mae_lo=f["mae"].lo, test_mae_hi=f["mae"].hi, kaggle=_kaggle(boot, k),
                 vs_baseline_mae=f["mae"].point / boot["models"]["baseline"]["mae"].point)
    chosen = random_draw_ids(args.out / "shards_all", "test")
    rows = np.isin(np.asarray(test_ids), sorted(chosen)) if chosen else None
    rd = random_draw({k: v.to_numpy(np.float64) for k, v in preds.items()}, y, msk, rows) if rows is not None else None
    for r, k in zip(results, preds):
        if rd and k in rd.models:
            iv = rd.models[k]
            r["kaggle_random"] = {"rmse": iv.point, "lo": iv.lo, "hi": iv.hi, "vs_constant": rd.ratio(k),
                                  "galaxies": rd.galaxies}
    for a, b in zip(results, results[1:]):  # does each step up in data help? paired difference b - a
        d = paired_bootstrap({a["name"]: preds[a["name"]].to_numpy(np.float64),
                              b["name"]: preds[b["name"]].to_numpy(np.float64)}, y, msk, reference=a["name"])
        iv = d["models"][b["name"]]["vs_best"]
        b["vs_previous"] = {"d_test_mae": iv.point, "lo": iv.lo, "hi": iv.hi, "helps": iv.hi < 0}
        if rd and a["name"] in rd.models and b["name"] in rd.models:
            dk = rd.difference(b["name"], a["name"])
            b["vs_previous"]["d_kaggle_random"] = {"d": dk.point, "lo": dk.lo, "hi": dk.hi, "helps": dk.hi < 0}
    out = {"machine": machine(), "backbone": args.backbone, "recipe": train_cfg, "shard": shard_cfg,
           "catalogs": full["catalogs"], "duplicates": full["counts"]["duplicates"],
           "baseline_test_mae": boot["models"]["baseline"]["mae"].point,
           "best_constant_kaggle_rmse": best_const,
           "random_draw": {"galaxies": rd.galaxies, "best_constant_kaggle_rmse": rd.constant} if rd else None,
           "sizes": results}
    (args.out / "learning_curve.json").write_text(json.dumps(out, indent=2))
    for r in results:
        emit(r)
    _plot(out, args.out / "learning_curve.png")
    print(f"wrote {args.out / 'learning_curve.json'} and {args.out / 'learning_curve.png'}")


def _recipe_title(res: dict) -> str:
    r = res["recipe"]
    extra = [f"crop {r['crop']:g}" if "crop" in r else "", f"{r['loss']} loss" if "loss" in r else "",
             f"{r['tta']} views" if r.get("tta", 1) > 1 else ""]
    return ", ".join([res["backbone"], f"{r['image_size']} px", f"{r['epochs']} epochs", *filter(None, extra)])


def _plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = res["sizes"]
    n = [r["train_galaxies"] for r in s]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    mae = np.array([r["test_mae"] for r in s])
    err = np.array([[r["test_mae"] - r["test_mae_lo"] for r in s], [r["test_mae_hi"] - r["test_mae"] for r in s]])
    ax.errorbar(n, mae, yerr=err, marker="o", capsize=3, label="test MAE (95% paired bootstrap)")
    ax.plot(n, [r["val_mae"] for r in s], marker="s", ls=":", label="val MAE")
    ax.axhline(res["baseline_test_mae"], color="k", ls="--", lw=1, label="train-mean baseline (test)")
    ax.set(xscale="log", xlabel="train galaxies", ylabel="MAE over the labelled answers",
           title=_recipe_title(res))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax = axes[1]
    k = [r["kaggle"] for r in s]
    ax.errorbar(n, [x["rmse"] for x in k], yerr=[[x["rmse"] - x["lo"] for x in k], [x["hi"] - x["rmse"] for x in k]],
                marker="o", capsize=3, color="#d62728", label="Kaggle RMSE (cumulative, 30 columns)")
    if res["best_constant_kaggle_rmse"]:
        ax.axhline(res["best_constant_kaggle_rmse"], color="k", ls="--", lw=1, label="best constant")
    title = f"Kaggle metric: {k[0]['galaxies']} test galaxies with all 30 known"
    rd = res.get("random_draw")
    if rd and all("kaggle_random" in r for r in s):
        kr = [r["kaggle_random"] for r in s]
        ax.errorbar(n, [x["rmse"] for x in kr], yerr=[[x["rmse"] - x["lo"] for x in kr],
                                                      [x["hi"] - x["rmse"] for x in kr]],
                    marker="D", capsize=3, color="#9467bd", label=f"the same, {rd['galaxies']} random-draw ones")
        ax.axhline(rd["best_constant_kaggle_rmse"], color="#9467bd", ls=":", lw=1, label="their best constant")
        title += f"\n(and the {rd['galaxies']} of them that are a random draw)"
    ax.set(xscale="log", xlabel="train galaxies", ylabel="RMSE", title=title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.suptitle("How much labelled data is enough? The same test galaxies for every size")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
