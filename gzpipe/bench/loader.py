"""`gzpipe bench loader`: loader throughput against two references measured on the same galaxies in the same run.

* the backend: train-mode epochs over the split (rotation, flips, crop, resize, normalise, on the device);
* ``baseline``: what notebook studies do - a map-style Dataset opening each original ``<id>.jpg`` from the
  image folder the shards came from (the manifest records it) with PIL, torchvision ``RandomRotation(180,
  BILINEAR)``, flips, ``Resize(image_size)``, ``ToTensor``, ``Normalize``, in a DataLoader with the same workers;
* ``decode_ceiling``: the decode-only rate of the *stored* JPEGs on one core, times the workers.

Each figure is the median of ``passes`` timed passes after one warm-up pass.
"""

from __future__ import annotations

import io
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from gzpipe.bench.machine import describe
from gzpipe.loaders import create_loader
from gzpipe.loaders.shards import iter_samples, split_shards


def _median_rate(run_pass, passes: int) -> tuple[float, list[float]]:
    run_pass()  # warm-up: worker start, page cache, lazy imports
    rates = []
    for _ in range(passes):
        t = time.perf_counter()
        n = run_pass()
        rates.append(n / (time.perf_counter() - t))
    return statistics.median(rates), rates


def bench_backend(shards: Path, backend: str, image_size: int, batch_size: int, workers: int, passes: int,
                  split: str, device: str | None) -> dict:
    """A pass is one epoch: its rate includes the pipeline's fill (the first batch) and its drain (the last worker
    finishing alone). ``steady_images_per_s`` is the rate between a pass's first and last batch, without the fill:
    what a long epoch (GZ2's 190,000 training galaxies) sees."""
    loader = create_loader(shards, split, backend, image_size, batch_size, train=True, device=device, workers=workers)
    epoch = [0]
    first_s, steady = [], []

    def run_pass() -> int:
        loader.set_epoch(epoch[0])
        epoch[0] += 1
        n, n_first = 0, 0
        t0 = t_first = time.perf_counter()
        for b in loader:
            if not n:
                if b.images.is_cuda:
                    torch.cuda.synchronize()
                t_first, n_first = time.perf_counter(), len(b)
            n += len(b)
        if n and b.images.is_cuda:
            torch.cuda.synchronize()  # the rate must include the device work, not just its launch
        t_end = time.perf_counter()
        first_s.append(t_first - t0)
        if n > n_first and t_end > t_first:
            steady.append((n - n_first) / (t_end - t_first))
        return n

    rate, rates = _median_rate(run_pass, passes)
    out = {"backend": loader.backend, "images_per_s": round(rate, 1), "passes": [round(r, 1) for r in rates]}
    if len(steady) > passes:  # the warm-up pass's figures are left out
        out["steady_images_per_s"] = round(statistics.median(steady[1:]), 1)
        out["first_batch_s"] = round(statistics.median(first_s[1:]), 3)
    return out


class _NotebookDataset(torch.utils.data.Dataset):
    def __init__(self, paths: list[Path], image_size: int):
        from torchvision import transforms as T

        self.paths = paths
        self.tf = T.Compose([
            T.RandomRotation(180, interpolation=T.InterpolationMode.BILINEAR),
            T.RandomHorizontalFlip(), T.RandomVerticalFlip(), T.Resize(image_size), T.ToTensor(),
            T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return self.tf(Image.open(self.paths[i]).convert("RGB"))


def bench_baseline(paths: list[Path], image_size: int, batch_size: int, workers: int, passes: int) -> dict:
    dl = torch.utils.data.DataLoader(_NotebookDataset(paths, image_size), batch_size=batch_size, shuffle=True,
                                     num_workers=workers, drop_last=True)

    def run_pass() -> int:
        return sum(len(x) for x in dl)

    rate, rates = _median_rate(run_pass, passes)
    return {"backend": "baseline", "images_per_s": round(rate, 1), "passes": [round(r, 1) for r in rates]}


def bench_decode_ceiling(jpgs: list[bytes], workers: int, passes: int) -> dict:
    def run_pass() -> int:
        for data in jpgs:
            Image.open(io.BytesIO(data)).convert("RGB")
        return len(jpgs)

    rate, rates = _median_rate(run_pass, passes)
    w = max(1, workers)
    return {"backend": "decode_ceiling", "images_per_s": round(rate * w, 1), "per_core_images_per_s": round(rate, 1),
            "passes": [round(r * w, 1) for r in rates]}


@dataclass
class LoaderBenchConfig:
    shards: str
    backend: str = "pil"
    image_size: int = 224
    batch_size: int = 64
    workers: int = 2
    passes: int = 3
    split: str = "train"
    device: str | None = None
    references: bool = True


def run(cfg: LoaderBenchConfig) -> list[dict]:
    shards, backend, image_size, batch_size = Path(cfg.shards), cfg.backend, cfg.image_size, cfg.batch_size
    workers, passes, split, device, references = cfg.workers, cfg.passes, cfg.split, cfg.device, cfg.references
    sp = split_shards(shards, split)
    m = sp.manifest
    base = {"image_size": image_size, "batch_size": batch_size, "workers": workers, "split": split,
            "stored_size": m.get("stored_size", "original"), "images": sp.samples, "machine": describe()}
    rows = [{**base, **bench_backend(shards, backend, image_size, batch_size, workers, passes, split, device)}]
    if rows[0]["backend"] == "pil":
        from gzpipe.bench.loader_split import time_split

        parts = time_split(shards, split, image_size, workers, batch_size)
        worker_ms = parts["read_ms"] + parts["decode_ms"] + parts["warp_ms"]
        main_ms = parts["transfer_uint8_ms"] + parts["normalise_batch_ms"]
        # the whole path (read to normalised batch) in one process: what the per-image work costs with no worker
        # processes to feed; times the cores the workers can use, the most any number of workers could reach
        one = bench_backend(shards, backend, image_size, batch_size, 0, passes, split, device)
        cores = max(1, min(workers, os.cpu_count() or 1))
        whole = one.get("steady_images_per_s", one["images_per_s"]) * cores
        rows.append({**base, "backend": "pil time split (ms per image, each part alone)", **parts,
                     "worker_ms": round(worker_ms, 4), "main_process_ms": round(main_ms, 4),
                     "one_process_ms": round(1e3 * cores / whole, 4),
                     "whole_path_ceiling_images_per_s": round(whole, 1),
                     "share_of_transform_ceiling": round(rows[0]["images_per_s"]
                                                         / parts["transform_ceiling_images_per_s"], 3),
                     "share_of_whole_path_ceiling": round(rows[0]["images_per_s"] / whole, 3),
                     "steady_share_of_whole_path_ceiling": round(
                         rows[0].get("steady_images_per_s", rows[0]["images_per_s"]) / whole, 3)})
    if references:
        samples = [s for f in sp.files for s in iter_samples(f)]
        folder = Path(m["images_dir"])
        paths = [folder / f"{s['id']}.jpg" for s in samples]
        missing = [p for p in paths if not p.exists()]
        if missing:
            rows.append({**base, "backend": "baseline", "images_per_s": None,
                         "note": f"original images not found (e.g. {missing[0]}); baseline skipped"})
        else:
            rows.append({**base, "stored_size": "original", **bench_baseline(paths, image_size, batch_size, workers, passes)})
        rows.append({**base, **bench_decode_ceiling([s["jpg"] for s in samples], workers, passes)})
        b = rows[0]["images_per_s"]
        for r in rows[1:]:
            if r.get("images_per_s"):
                rows[0][f"vs_{r['backend']}"] = round(b / r["images_per_s"], 2)
    return rows
