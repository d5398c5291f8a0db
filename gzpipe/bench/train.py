"""`gzpipe bench train`: training throughput of one backbone.

* ``device_data``: one fixed batch already on the device, so the rate is the model's own ceiling;
* ``loader``: the same steps fed by the real loader from shards, so the data-stall share is visible
  (``data_stall`` = 1 - loader rate / ceiling rate).

Both run the training loop's own step (``gzpipe.train.loop.train_one_epoch``: the masked loss, its accumulation on
the device, gradient clipping, the optimizer - fused AdamW on CUDA, as `gzpipe train` makes it - and the learning-rate
scheduler), so the stall is the training loop's, not a lighter step's.

Rates are medians over ``repeats`` timed windows of ``steps`` optimizer steps, after ``warmup`` steps.
Peak memory: CUDA's max allocated on a GPU, the process's peak RSS on the CPU.
"""

from __future__ import annotations

import itertools
import resource
import statistics
import time
from dataclasses import dataclass

import torch

from gzpipe.bench.machine import describe
from gzpipe.loaders import create_loader
from gzpipe.loaders.contract import Batch
from gzpipe.models import BACKBONES, create_model, resolve_name
from gzpipe.device import resolve_device
from gzpipe.train.loop import EpochState, LogitsModel, lr_lambda, train_one_epoch


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


@dataclass
class _LoopSettings:
    """What ``train_one_epoch`` reads of a TrainConfig, at `gzpipe train`'s defaults (no timed checkpoints)."""

    loss: str = "l1"
    grad_clip: float = 1.0
    checkpoint_minutes: float = 0.0


class _Source:
    """A window's batches shaped as a loader for ``train_one_epoch`` (exactly the steps it takes: none drawn and
    dropped)."""

    def __init__(self, it):
        self.it = it

    def set_epoch(self, epoch: int) -> None:
        pass

    def __iter__(self):
        return self.it


def run(cfg: TrainBenchConfig) -> list[dict]:
    backbone, image_size, batch_size, shards, backend = cfg.backbone, cfg.image_size, cfg.batch_size, cfg.shards, cfg.backend
    workers, device, amp, channels_last = cfg.workers, cfg.device, cfg.amp, cfg.channels_last
    steps, warmup, repeats = cfg.steps, cfg.warmup, cfg.repeats
    name = resolve_name(backbone)
    dev = resolve_device(device or "auto")
    cl = BACKBONES[name].channels_last(dev.type) if channels_last is None else channels_last
    net = LogitsModel(create_model(name), cl).to(dev)
    if cl:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=dev.type == "cuda")
    total = (warmup + steps * repeats) * 2
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(max(1, warmup), total))
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as `gzpipe train` sets it
    if cfg.compile:  # compiled before the warm-up steps, which then include the compilation
        net = torch.compile(net)
    precision = amp if dev.type == "cuda" and amp != "off" else "fp32"
    loop_cfg = _LoopSettings()

    def window(source, n: int) -> None:
        """``n`` steps of the training loop itself over ``source`` (its own step: loss, clipping, optimizer,
        scheduler, the loss kept on the device)."""
        train_one_epoch(net, _Source(itertools.islice(source, n)), opt, sched, None, dev, amp, loop_cfg, 0, n,
                        EpochState(), lambda state: None)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    base = {"backbone": name, "image_size": image_size, "batch_size": batch_size, "precision": precision,
            "compile": cfg.compile,
            "channels_last": cl, "device": str(dev), "steps": steps, "repeats": repeats, "machine": describe()}
    x = torch.randn(batch_size, 3, image_size, image_size, device=dev).contiguous(memory_format=torch.channels_last)
    y = torch.rand(batch_size, 30, device=dev)
    m = torch.ones(batch_size, 30, dtype=torch.bool, device=dev)
    fixed = iter(lambda: Batch(x, y, m, [""] * batch_size), None)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    window(fixed, warmup)
    sync()
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        window(fixed, steps)
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

        real = batches()  # one stream across the windows: no epoch restart inside a timed window
        window(real, warmup)
        sync()
        rates = []
        for _ in range(repeats):
            t = time.perf_counter()
            window(real, steps)
            sync()
            rates.append(steps * batch_size / (time.perf_counter() - t))
        rate = statistics.median(rates)
        rows.append({**base, "mode": "loader", "backend": loader.backend, "workers": workers,
                     "images_per_s": round(rate, 2), "passes": [round(r, 2) for r in rates],
                     "data_stall": round(max(0.0, 1 - rate / ceiling), 4), "peak_memory_mb": round(_peak_mb(dev), 1)})
    return rows
