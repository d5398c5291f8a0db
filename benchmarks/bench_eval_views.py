"""Which test-time views: a finished backbone run evaluated at eval rotations and crops, on the random draw.

    .venv/bin/python benchmarks/bench_eval_views.py --run artifacts/real/timm:resnet10t
        [--shards artifacts/real/shards] [--angles 0,22.5,45,67.5] [--crops 0.45,0.5,0.55] [--workers 2]

Each pass warps the stored images at one rotation (``turn``, degrees) and one eval crop through the `pil` loader,
as ``gzpipe.loaders.tta``'s ``angles`` kind does, and averages that pass's 8 dihedral views. The sets compared,
each against the pass at 0 degrees and the run's own crop (the 8 dihedral views): every single pass, the four
angles at the run's crop (the ``angles`` kind's 32 views), the crops at 0 degrees, 0 plus each other angle (16
views), and every pass. Scored by the Kaggle RMSE on the val and test galaxies of the catalogues the shards name as
a random draw, with 95% paired-bootstrap intervals (choose on val; test confirms). Prints one JSON object per line.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, machine  # noqa: E402

from gzpipe import schema  # noqa: E402
from gzpipe.labels import MASK_COLUMNS, random_draw_ids, split_labels  # noqa: E402
from gzpipe.report.random_draw import random_draw  # noqa: E402


def passes(run: Path, shards: Path, angles: list[float], crops: list[float], workers: int) -> dict:
    """{(split, angle, crop): (ids, predictions N x 30)} for the val and test splits."""
    import torch

    from gzpipe.loaders import create_loader
    from gzpipe.loaders.tta import views
    from gzpipe.runs import load_trained

    t = load_trained(run, device="cpu")
    out = {}
    for split, angle, crop in itertools.product(("val", "test"), angles, crops):
        loader = create_loader(shards, split, "pil", t.image_size, 128, device="cpu", workers=workers, crop=crop,
                               turn=angle, channels=t.channels)
        ids, preds = [], []
        for b in loader:
            preds.append(torch.stack([t.features_and_predictions(v)[1] for v in views(b.images, 8)]).mean(0).numpy())
            ids += b.ids
        out[split, angle, crop] = (ids, np.concatenate(preds))
    return out


def view_sets(angles: list[float], crops: list[float], own: float) -> dict[str, list[tuple[float, float]]]:
    sets = {f"8 dihedral at {a:g} deg, crop {c:g}": [(a, c)] for a, c in itertools.product(angles, crops)
            if (a, c) != (0.0, own)}
    sets[f"{8 * len(angles)}: the angles at crop {own:g}"] = [(a, own) for a in angles]
    sets[f"{8 * len(crops)}: the crops at 0 deg"] = [(0.0, c) for c in crops]
    for a in angles[1:]:
        sets[f"16: 0 and {a:g} deg, crop {own:g}"] = [(0.0, own), (a, own)]
    sets[f"{8 * len(angles) * len(crops)}: every pass"] = list(itertools.product(angles, crops))
    return sets


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, type=Path, help="a finished backbone run folder")
    ap.add_argument("--shards", type=Path, help="its shards [the run's own, from its config]")
    ap.add_argument("--angles", default="0,22.5,45,67.5")
    ap.add_argument("--crops", default="", help="eval crops [the run's own]")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args(argv)
    from gzpipe.runs import load_trained

    t = load_trained(a.run, device="cpu")
    shards = a.shards or Path(t.config["shards"])
    angles = [float(x) for x in a.angles.split(",")]
    if 0.0 not in angles:
        angles = [0.0, *angles]
    crops = [float(x) for x in a.crops.split(",")] if a.crops else [t.crop]
    if t.crop not in crops:
        crops = [t.crop, *crops]
    start = time.perf_counter()
    got = passes(a.run, shards, angles, crops, a.workers)
    wall = time.perf_counter() - start
    base = "plain"
    for split in ("val", "test"):
        lab = split_labels(shards, split)
        chosen = set(random_draw_ids(shards, split) or [])
        ids = got[split, 0.0, t.crop][0]
        lab = lab.loc[ids]
        y, m = lab[list(schema.TARGET_NAMES)].to_numpy(float), lab[MASK_COLUMNS].to_numpy(bool)
        preds = {base: got[split, 0.0, t.crop][1]}
        for name, members in view_sets(angles, crops, t.crop).items():
            assert all(got[(split, *p)][0] == ids for p in members)  # eval loaders keep their order
            preds[name] = np.mean([got[(split, *p)][1] for p in members], axis=0)
        r = random_draw(preds, y, m, np.array([i in chosen for i in ids]))
        if r is None:
            raise SystemExit(f"{shards} names no random-draw galaxies with all 30 cumulative values in {split}")
        for name in preds:
            if name == base:
                continue
            d = r.difference(name, base)
            emit({"split": split, "views": name, "kaggle_random": round(r.models[name].point, 5),
                  "vs_constant": round(r.ratio(name), 4), "vs_8_dihedral": round(d.point, 5),
                  "ci95": [round(d.lo, 5), round(d.hi, 5)], "baseline": round(r.models[base].point, 5),
                  "galaxies": r.galaxies, "constant": round(r.constant, 5)})
    emit({"passes": len(got), "wall_s": round(wall, 1), "machine": machine()})


if __name__ == "__main__":
    main()
