#!/usr/bin/env python3
"""Two study folders side by side: each model's test MAE and accuracy in both, and the change, best first.
For "did my change help?": the same study before and after a change of code, data or settings.

    python tools/compare_runs.py BEFORE AFTER [--csv compare.csv] [--plot compare.png]

Each folder is an artifacts folder with model_comparison/comparison_table.csv (`gzpipe report` writes it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("before", type=Path, help="first study folder (e.g. artifacts/real)")
    ap.add_argument("after", type=Path, help="second study folder")
    ap.add_argument("--csv", type=Path, help="also write the merged table here")
    ap.add_argument("--plot", type=Path, help="also draw the MAE of both, per model, as a PNG")
    return ap


def load(folder: Path):
    import pandas as pd

    p = folder / "model_comparison" / "comparison_table.csv"
    if not p.exists():
        raise FileNotFoundError(f"{p} not found; run `gzpipe report --out {folder}` first")
    return pd.read_csv(p)


def compare(a, b, names: tuple[str, str]):
    """The merged table: name, kind, MAE and accuracy of each, and MAE after - before (negative is better)."""
    left = a[["name", "kind", "mae", "accuracy"]].rename(columns={"mae": f"mae_{names[0]}",
                                                                   "accuracy": f"accuracy_{names[0]}"})
    right = b[["name", "kind", "mae", "accuracy"]].rename(columns={"mae": f"mae_{names[1]}",
                                                                    "accuracy": f"accuracy_{names[1]}",
                                                                    "kind": "kind_b"})
    m = left.merge(right, on="name", how="outer")
    m["kind"] = m["kind"].fillna(m.pop("kind_b"))
    m["mae_change"] = m[f"mae_{names[1]}"] - m[f"mae_{names[0]}"]
    return m.sort_values(f"mae_{names[1]}", na_position="last").reset_index(drop=True)


def plot(m, names: tuple[str, str], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    y = np.arange(len(m))
    fig, ax = plt.subplots(figsize=(9, 0.3 * len(m) + 1.5))
    ax.barh(y - 0.2, m[f"mae_{names[0]}"], height=0.4, label=names[0], color="#bbbbbb")
    ax.barh(y + 0.2, m[f"mae_{names[1]}"], height=0.4, label=names[1], color="#1f77b4")
    ax.set_yticks(y, m["name"])
    ax.invert_yaxis()
    ax.set_xlabel("test MAE (lower is better)")
    ax.legend()
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    names = (args.before.name or "before", args.after.name or "after")
    if names[0] == names[1]:
        names = ("before", "after")
    try:
        m = compare(load(args.before), load(args.after), names)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    w = max(len(n) for n in m["name"])
    print(f"{'model':<{w}}  {'kind':<9} {'MAE ' + names[0]:>14} {'MAE ' + names[1]:>14} {'change':>8}")
    for _, r in m.iterrows():
        cells = [f"{r[c]:.4f}" if r[c] == r[c] else "-" for c in (f"mae_{names[0]}", f"mae_{names[1]}")]
        change = f"{r['mae_change']:+.4f}" if r["mae_change"] == r["mae_change"] else "-"
        print(f"{r['name']:<{w}}  {r['kind']:<9} {cells[0]:>14} {cells[1]:>14} {change:>8}")
    if args.csv:
        m.to_csv(args.csv, index=False, float_format="%.6g")
    if args.plot:
        plot(m, names, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
