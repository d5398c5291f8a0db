#!/usr/bin/env python3
"""Contact sheet of a shard folder's galaxies as the loader delivers them: each galaxy's eval view beside a few
train-augmented views, with its id and its top vote fractions. A quick look that the shards, the labels and the
augmentation are what you think they are.

    python tools/preview.py SHARDS [--split train] [--n 8] [--views 3] [--image-size 128] [--out preview.png]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("shards", type=Path, help="a shard folder written by `gzpipe shard`")
    ap.add_argument("--split", default="train", choices=("train", "val", "test"), help="split to show [train]")
    ap.add_argument("--n", type=int, default=8, help="galaxies (rows) to show [8]")
    ap.add_argument("--views", type=int, default=3, help="train-augmented views per galaxy [3]")
    ap.add_argument("--image-size", type=int, default=128, help="loader output size in pixels [128]")
    ap.add_argument("--crop", type=float, default=0.8, help="share of the image side the model sees, as "
                    "`gzpipe train --crop` [0.8]")
    ap.add_argument("--backend", default="pil", help="loader backend: pil, dali, nvjpeg or auto [pil]")
    ap.add_argument("--seed", type=int, default=0, help="augmentation seed [0]")
    ap.add_argument("--out", type=Path, default=Path("preview.png"), help="PNG to write [preview.png]")
    return ap


def top_answers(targets, mask, k: int = 2) -> list[str]:
    """The first task's leading answer, then the ``k - 1`` largest valid answers of the later tasks (the odd-feature
    task left out: nearly every galaxy's "no" leads it), as 'task: answer 0.82'."""
    from gzpipe import schema

    def label(j: int) -> str:
        task, answer = schema.TARGET_NAMES[j].split("_a", 1)
        return f"{task.split('_', 1)[1]}: {answer.split('_', 1)[1]} {targets[j]:.2f}"

    first, odd = schema.TASK_SLICES["t01_smooth_or_features"], schema.TASK_SLICES["t06_odd"]
    order = [first.start + int(targets[first].argmax())]
    later = [j for j in range(first.stop, schema.N_TARGETS) if mask[j] and not odd.start <= j < odd.stop]
    order += sorted(later, key=lambda j: -targets[j])[: k - 1]
    return [label(j) for j in order]


def collect(shards: Path, split: str, n: int, views: int, size: int, backend: str, seed: int, crop: float = 0.8):
    """{id: (eval image, [train images], targets, mask)} for up to ``n`` galaxies of the split's first shards."""
    from gzpipe.loaders import create_loader
    from gzpipe.loaders.shards import SplitShards, split_shards

    sp = split_shards(shards, split)
    files, have = [], 0
    for f in sp.files:  # enough whole shards for n galaxies
        files.append(f)
        have += f.samples
        if have >= n:
            break
    part = SplitShards(sp.root, split, tuple(files), sp.manifest)
    denorm = _denormaliser()
    out: dict = {}
    for b in create_loader(part, split, backend, size, 16, train=False, device="cpu", workers=0, crop=crop):
        for i, img, t, m in zip(b.ids, b.images, b.targets, b.mask):
            if len(out) < n:
                out[i] = (denorm(img), [], t.numpy(), m.numpy())
    for epoch in range(views):
        loader = create_loader(part, split, backend, size, 1, train=True, device="cpu", workers=0, seed=seed,
                               shuffle_buffer=1, crop=crop)  # batches of 1: train mode drops a last partial batch
        loader.set_epoch(epoch)
        for b in loader:
            for i, img in zip(b.ids, b.images):
                if i in out and len(out[i][1]) <= epoch:
                    out[i][1].append(denorm(img))
    return out


def _denormaliser():
    import numpy as np

    from gzpipe.loaders.presets import IMAGENET_MEAN, IMAGENET_STD

    mean, std = np.array(IMAGENET_MEAN) * 255, np.array(IMAGENET_STD) * 255

    def denorm(img):
        x = img.detach().cpu().permute(1, 2, 0).numpy() * std + mean
        return np.clip(x, 0, 255).astype("uint8")

    return denorm


def draw(galaxies: dict, views: int, title: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = len(galaxies)
    fig, axes = plt.subplots(rows, views + 1, figsize=(1.9 * (views + 1) + 1.2, 2.0 * rows + 0.6), squeeze=False)
    for r, (gid, (ev, trains, t, m)) in enumerate(galaxies.items()):
        for c, img in enumerate([ev, *trains]):
            ax = axes[r, c]
            ax.imshow(img)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("eval view" if c == 0 else f"train view {c}", fontsize=9)
        axes[r, 0].set_ylabel(f"{gid}\n" + "\n".join(top_answers(t, m)), fontsize=8, rotation=0, ha="right",
                              va="center", labelpad=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.n < 1 or args.views < 0 or args.image_size < 16:
        print("error: --n must be >= 1, --views >= 0 and --image-size >= 16", file=sys.stderr)
        return 2
    from gzpipe.errors import GzpipeError

    try:
        galaxies = collect(args.shards, args.split, args.n, args.views, args.image_size, args.backend, args.seed,
                           args.crop)
    except GzpipeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    draw(galaxies, args.views, f"{args.shards} ({args.split}): eval view and {args.views} train-augmented views, "
                               f"{args.image_size} px, crop {args.crop:g}, {args.backend} backend", args.out)
    print(f"wrote {args.out} ({len(galaxies)} galaxies)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
