"""`gzpipe bench train`: training throughput of one backbone.

* ``device_data``: one fixed batch already on the device, so the rate is the model's own ceiling;
* ``loader``: the same steps fed by the real loader from shards, so the data-stall share is visible
  (``data_stall`` = 1 - loader rate / ceiling rate).

Rates are medians over ``repeats`` timed windows of ``steps`` optimizer steps, after ``warmup`` steps.
Peak memory: CUDA's max allocated on a GPU, the process's peak RSS on the CPU.
"""

from __future__ import annotations

import resource
import statistics
import time
from dataclasses import dataclass

import torch

from gzpipe.bench.machine import describe
from gzpipe.loaders import create_loader
from gzpipe.models import BACKBONES, create_model, resolve_name
from gzpipe.device import precision as amp_context, resolve_device
from gzpipe.train.loop import LogitsModel, masked_loss


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class TrainBenchConfig:
    backbone: str
    image_size: int = 224
    batch_size: int = 64
    shards: str | None = None
    backend: str = "auto"
    workers: int = 2
    device: str | None = None
    amp: str = "bf16"
    channels_last: bool | None = None
    steps: int = 10
    warmup: int = 3
    repeats: int = 3
    compile: bool = False


def run(cfg: TrainBenchConfig) -> list[dict]:
    backbone, image_size, batch_size, shards, backend = cfg.backbone, cfg.image_size, cfg.batch_size, cfg.shards, cfg.backend
    workers, device, amp, channels_last = cfg.workers, cfg.device, cfg.amp, cfg.channels_last
    steps, warmup, repeats = cfg.steps, cfg.warmup, cfg.repeats
    name = resolve_name(backbone)
    dev = resolve_device(device or "auto")
    cl = BACKBONES[name].channels_last(dev.type) if channels_last is None else channels_last
    net = LogitsModel(create_model(name)).to(dev)
    if cl:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    if cfg.compile:  # compiled before the warm-up steps, which then include the compilation
        net = torch.compile(net)
    autocast = amp_context(dev, amp)
    precision = amp if dev.type == "cuda" and amp != "off" else "fp32"

    def step(x, y, m):
        with autocast():
            logits = net(x)
        loss, _ = masked_loss(net.activate(logits.float()), logits, y, m)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    base = {"backbone": name, "image_size": image_size, "batch_size": batch_size, "precision": precision,
            "compile": cfg.compile,
            "channels_last": cl, "device": str(dev), "steps": steps, "repeats": repeats, "machine": describe()}
    x = torch.randn(batch_size, 3, image_size, image_size, device=dev)
    x = x.contiguous(memory_format=torch.channels_last) if cl else x
    y = torch.rand(batch_size, 30, device=dev)
    m = torch.ones(batch_size, 30, dtype=torch.bool, device=dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    for _ in range(warmup):
        step(x, y, m)
    sync()
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(steps):
            step(x, y, m)
        sync()
        rates.append(steps * batch_size / (time.perf_counter() - t))
    ceiling = statistics.median(rates)
    rows = [{**base, "mode": "device_data", "images_per_s": round(ceiling, 2), "passes": [round(r, 2) for r in rates],
             "peak_memory_mb": round(_peak_mb(dev), 1)}]
    if shards is not None:
        loader = create_loader(shards, "train", backend, image_size, batch_size, train=True, device=dev, workers=workers)

        def batches():
            epoch = 0
            while True:
                loader.set_epoch(epoch)
                yield from loader
                epoch += 1

        it = batches()
        for _ in range(warmup):
            b = next(it)
            step(b.images if cl else b.images.contiguous(), b.targets, b.mask)
        sync()
        rates = []
        for _ in range(repeats):
            t = time.perf_counter()
            for _ in range(steps):
                b = next(it)
                step(b.images if cl else b.images.contiguous(), b.targets, b.mask)
            sync()
            rates.append(steps * batch_size / (time.perf_counter() - t))
        rate = statistics.median(rates)
        rows.append({**base, "mode": "loader", "backend": loader.backend, "workers": workers,
                     "images_per_s": round(rate, 2), "passes": [round(r, 2) for r in rates],
                     "data_stall": round(max(0.0, 1 - rate / ceiling), 4), "peak_memory_mb": round(_peak_mb(dev), 1)})
    return rows
