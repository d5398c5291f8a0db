"""The report's figures. Each is made for reading: sorted bars, labelled axes, values written on the heat map."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from gzpipe import schema  # noqa: E402
from gzpipe.fileio import atomic_open  # noqa: E402

_PALETTE = ("#ff7f0e", "#2ca02c", "#d62728", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def kind_colours(kinds) -> dict[str, str]:
    """Deep models blue, ensembles purple, each boosting engine its own colour (in the order they appear)."""
    colours = {"deep": "#1f77b4", "ensemble": "#9467bd"}
    engines = [k for k in dict.fromkeys(kinds) if k not in colours]
    colours.update({k: _PALETTE[i % len(_PALETTE)] for i, k in enumerate(engines)})
    return colours


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, dpi=110, format="png", bbox_inches="tight")  # legends placed outside the axes included
    plt.close(fig)


def metric_bars(table: pd.DataFrame, path: Path, baseline: dict | None = None) -> None:
    """Every model's test MAE, Kaggle RMSE (where test galaxies have all 30 cumulative fractions) and accuracy, best
    first, with the 95% paired-bootstrap intervals and the train-mean baseline."""
    t = table.sort_values("mae")
    panels = [("mae", "test MAE (lower is better)")]
    if "kaggle_rmse" in t and t["kaggle_rmse"].notna().any():
        n_k = int(t["kaggle_galaxies"].max()) if "kaggle_galaxies" in t else None
        panels.append(("kaggle_rmse", "Kaggle RMSE" + (f" on the {n_k} galaxies with all 30 known"
                                                                             if n_k else "") + " (lower is better)"))
    if "kaggle_random" in t and t["kaggle_random"].notna().any():
        n_r = int(t["random_galaxies"].max())
        panels.insert(0, ("kaggle_random", f"Kaggle RMSE on the {n_r} random-draw galaxies (lower is better)"))
    panels.append(("accuracy", "test accuracy, rounded to 0/1 (higher is better)"))
    h = max(3.0, 0.32 * len(t) + 1.2)
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), h), sharey=True)
    palette = kind_colours(t["kind"])
    colours = [palette[k] for k in t["kind"]]
    y = np.arange(len(t))
    n_test = int(t["test_galaxies"].max()) if "test_galaxies" in t and t["test_galaxies"].notna().any() else None
    for ax, (col, label) in zip(axes, panels):
        err = None
        if f"{col}_lo" in t and t[f"{col}_lo"].notna().any():  # the 95% paired-bootstrap interval
            err = np.vstack([(t[col] - t[f"{col}_lo"]).clip(lower=0), (t[f"{col}_hi"] - t[col]).clip(lower=0)])
            err = np.nan_to_num(err.astype(float))
        ax.barh(y, t[col].fillna(0), color=colours, xerr=err, error_kw={"ecolor": "0.25", "capsize": 2, "lw": 1})
        base = baseline.get(col) if baseline else None
        if base is not None:  # behind the value labels, which sit on a white box: the line never hides them
            ax.axvline(base, color="k", ls="--", lw=1, zorder=1)
        ends = t[f"{col}_hi"].fillna(t[col]) if err is not None else t[col]
        for yi, v, end in zip(y, t[col], ends):
            if pd.notna(v):
                ax.text(end, yi, f" {v:.3f}", va="center", fontsize=8, zorder=3,
                        bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.4, "alpha": 0.85})
        ax.set(xlabel=label)
        ax.grid(axis="x", alpha=0.3)
        if col == "accuracy":
            ax.set_xlim(min(0.5, t["accuracy"].min() - 0.05), 1.0)
        else:
            top = t[f"{col}_hi"].max() if f"{col}_hi" in t and t[f"{col}_hi"].notna().any() else t[col].max()
            ax.set_xlim(0, float(max(top, base or 0)) * 1.18)
    axes[0].set_yticks(y, [_label(r) for _, r in t.iterrows()])
    axes[0].invert_yaxis()
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in palette.values()]
    names = list(palette.keys())
    if baseline is not None:  # named in the legend, not written across the line
        handles.append(plt.Line2D([0], [0], color="k", ls="--", lw=1))
        kag = f", Kaggle RMSE {baseline['kaggle_rmse']:.3f}" if baseline.get("kaggle_rmse") is not None and \
            len(panels) == 3 else ""
        names.append(f"train-mean baseline (MAE {baseline['mae']:.3f}{kag},\naccuracy {baseline['accuracy']:.3f})")
    if "mae_lo" in t and t["mae_lo"].notna().any():
        handles.append(plt.Line2D([0], [0], color="0.25", lw=1, marker="|"))
        names.append("95% paired-bootstrap interval\n(* = MAE not distinguishable from the best)")
    axes[-1].legend(handles, names, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.suptitle("All models on the test split" + (f" ({n_test} galaxies)" if n_test else "") + ", best MAE first")
    _save(fig, path)


def _label(row) -> str:
    """A model's name, flagged when it is an ensemble of a single member (that member itself)."""
    members = row.get("members") if hasattr(row, "get") else None
    tied = row.get("tied_with_best") if hasattr(row, "get") else None
    lo = row.get("d_mae_vs_best_lo") if hasattr(row, "get") else None
    mark = " *" if tied is True and not (lo == 0 and row.get("d_mae_vs_best_hi") == 0) else ""
    if row["kind"] == "ensemble" and isinstance(members, str) and members.startswith("1 "):
        return f"{row['name']} (one member){mark}"
    return row["name"] + mark


def per_task_heatmap(table: pd.DataFrame, path: Path) -> None:
    t = table.sort_values("mae")
    tasks = [name for name in schema.TASK_SLICES]
    data = t[[f"mae:{k}" for k in tasks]].to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(1.0 * len(tasks) + 3, 0.36 * len(t) + 2))
    im = ax.imshow(data, cmap="viridis_r", aspect="auto")
    ax.set_xticks(range(len(tasks)), [k.split("_", 1)[1].replace("_", " ") for k in tasks], rotation=35, ha="right")
    ax.set_yticks(range(len(t)), t["name"])
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            if np.isfinite(data[i, j]):
                v = data[i, j]
                ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=7,
                        color="white" if v > np.nanmean(data) else "black")
            else:  # a question the test split has no label for (a catalogue without it): no score, not a blank
                ax.text(j, i, "no labels", ha="center", va="center", fontsize=7, color="0.45")
    fig.colorbar(im, ax=ax, label="test MAE of the task's answers")
    ax.set_title("Test MAE per GZ2 task (rows: models, best first)")
    _save(fig, path)


KEY_ANSWERS = ("t01_smooth_or_features_a01_smooth", "t01_smooth_or_features_a02_features_or_disk",
               "t02_edgeon_a04_yes", "t03_bar_a06_bar", "t04_spiral_a08_spiral", "t06_odd_a14_yes")


def predicted_vs_true(pred: np.ndarray, target: np.ndarray, mask: np.ndarray, model: str, path: Path) -> None:
    fig, axes = plt.subplots(2, 3, figsize=(12, 7.5))
    for ax, name in zip(axes.flat, KEY_ANSWERS):
        j = schema.TARGET_INDEX[name]
        ok = mask[:, j]
        ax.scatter(target[ok, j], pred[ok, j], s=8, alpha=0.5)
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        mae = float(np.mean(np.abs(pred[ok, j] - target[ok, j]))) if ok.any() else float("nan")
        task = name.split("_a")[0]
        answer = name[len(task) + 1:]
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="true vote fraction", ylabel="predicted")
        ax.set_title(f"{task}\n{answer}   MAE {mae:.3f}, n = {int(ok.sum())}", fontsize=10)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Predicted vs true on the test split: {model} (the best model)")
    _save(fig, path)


def all_training_curves(histories: dict[str, list[dict]], path: Path) -> None:
    from gzpipe.train.plots import epoch_axis

    fig, axes = plt.subplots(1, 2, figsize=(13, 4))
    last = 1
    for i, (name, hist) in enumerate(histories.items()):
        ep = [h["epoch"] for h in hist]
        last = max([last, *ep])
        axes[0].plot(ep, [h["train_loss"] for h in hist], "s--", color=f"C{i}", alpha=0.6, ms=3)
        axes[0].plot(ep, [h["val_loss"] for h in hist], "-o", color=f"C{i}", label=name, ms=3)
        axes[1].plot(ep, [h["val_mae"] for h in hist], "-o", color=f"C{i}", label=name, ms=3)
    axes[0].set(title="loss: validation (solid), train (dashed)", xlabel="epoch")
    axes[1].set(title="validation MAE", xlabel="epoch")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        epoch_axis(ax, last)
    _save(fig, path)


def stacked_weights(weights: dict[str, list[float]], path: Path, grouping: str | None = None,
                    shrink: float | None = None) -> None:
    """The stacked ensemble's weights: members (rows) x tasks (columns, the mean over the task's answers), with the
    sharing and shrinkage that cross-validation on val chose."""
    members = sorted(weights, key=lambda m: -float(np.mean(weights[m])))
    tasks = list(schema.TASK_SLICES)
    data = np.array([[np.mean(np.asarray(weights[m])[schema.TASK_SLICES[t]]) for t in tasks] for m in members])
    fig, ax = plt.subplots(figsize=(1.0 * len(tasks) + 3.5, 0.36 * len(members) + 2))
    im = ax.imshow(data, cmap="Blues", aspect="auto", vmin=0)
    ax.set_xticks(range(len(tasks)), [k.split("_", 1)[1].replace("_", " ") for k in tasks], rotation=35, ha="right")
    ax.set_yticks(range(len(members)), members)
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            if data[i, j] >= 0.005:
                ax.text(j, i, f"{data[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if data[i, j] > 0.6 * data.max() else "black")
    fig.colorbar(im, ax=ax, label="weight (mean over answers)")
    from gzpipe.ensemble.stacked import SHARING

    chosen = ", ".join(x for x in (grouping and SHARING.get(grouping, grouping),
                                   shrink is not None and f"shrinkage {shrink:g}") if x)
    ax.set_title("Stacked ensemble: each member's weight per task (fitted on the validation split)"
                 + (f"\n{chosen}, chosen by cross-validation within val" if chosen else ""))
    _save(fig, path)


def tta_effect(table: pd.DataFrame, path: Path) -> None:
    """Test MAE with and without test-time augmentation, for the models evaluated both ways."""
    t = table.dropna(subset=["mae_without_tta"]).sort_values("mae")
    y = np.arange(len(t))
    fig, ax = plt.subplots(figsize=(9, 0.4 * len(t) + 1.6))
    ax.barh(y - 0.2, t["mae_without_tta"], height=0.4, color="#bbbbbb", label="without TTA")
    ax.barh(y + 0.2, t["mae"], height=0.4, color="#1f77b4", label="with TTA")
    for yi, a, b in zip(y, t["mae_without_tta"], t["mae"]):
        ax.text(max(a, b), yi, f"  {b - a:+.4f}", va="center", fontsize=8)
    ax.set_yticks(y, t["name"])
    ax.invert_yaxis()
    ax.set_xlabel("test MAE (lower is better)")
    ax.set_xlim(0, float(max(t["mae_without_tta"].max(), t["mae"].max())) * 1.18)  # room for the differences
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("Test-time augmentation: test MAE with and without")
    _save(fig, path)


def kaggle_by_catalogue(by_cat: pd.DataFrame, table: pd.DataFrame, path: Path) -> None:
    """One panel per group of test galaxies (all, then each catalogue): every model's Kaggle RMSE over every known
    cumulative value, as a share of the best constant's on the same values (1 = no better than a constant), with
    its 95% paired-bootstrap interval; models in the main table's order (best MAE first)."""
    order = [n for n in table.sort_values("mae")["name"] if n in set(by_cat["name"])]
    kinds = dict(zip(table["name"], table["kind"]))
    palette = kind_colours(table["kind"])
    groups = list(dict.fromkeys(by_cat["catalogue"]))
    h = max(3.0, 0.32 * len(order) + 1.4)
    fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups) + 1.5, h), sharey=True, squeeze=False)
    y = np.arange(len(order))
    for ax, g in zip(axes[0], groups):
        t = by_cat[by_cat["catalogue"] == g].set_index("name").loc[order]
        const = float(t["best_constant"].iloc[0])
        ratio = t["kaggle_vs_constant"].to_numpy(float)
        err = np.vstack([ratio - t["kaggle_rmse_known_lo"] / const, t["kaggle_rmse_known_hi"] / const - ratio])
        ax.barh(y, np.nan_to_num(ratio), color=[palette[kinds[n]] for n in order],
                xerr=np.nan_to_num(err.clip(min=0)), error_kw={"ecolor": "0.25", "capsize": 2, "lw": 1})
        ax.axvline(1.0, color="k", ls="--", lw=1, zorder=1)
        for yi, v in zip(y, ratio):
            if np.isfinite(v):
                ax.text(0.02, yi, f"{v:.3f}", va="center", fontsize=8, color="white", zorder=3)
        top = np.nanmax(np.append(t["kaggle_rmse_known_hi"].to_numpy(float) / const, ratio))
        ax.set(xlim=(0, max(1.05, float(top) * 1.12 if np.isfinite(top) else 1.05)),  # no bar or whisker cut
               xlabel="Kaggle RMSE / best constant's (lower is better)",
               title=f"{g}: {int(t['galaxies'].iloc[0]):,} galaxies, {int(t['kaggle_values'].iloc[0]):,} values\n"
                     f"best constant {const:.4f}")
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(y, order)
    axes[0][0].invert_yaxis()
    _save(fig, path)
