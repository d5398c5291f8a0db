"""`gzpipe bench loader` and `gzpipe bench train`: benchmarks that print JSON rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Optional

import typer

from gzpipe.cli.common import BACKBONE_NAMES, DEVICE_HELP, Amp, Backend, Device, _device_option, bench_app

@bench_app.command("loader")
def bench_loader(
    shards: Path = typer.Option(..., metavar="DIR", help="Shard folder written by `gzpipe shard`."),
    backend: Backend = typer.Option("auto", help="Loader backend to measure."),
    image_size: int = typer.Option(224, min=16, metavar="PX", help="Output size."),
    batch_size: int = typer.Option(64, min=1, metavar="N", help="Batch size."),
    workers: int = typer.Option(2, min=0, metavar="N", help="Loader workers (DALI threads); the baseline uses the "
                                                            "same number."),
    passes: int = typer.Option(3, min=1, metavar="N", help="Timed passes over the split (after one warm-up); the "
                                                           "median is reported."),
    split: Literal["train", "val", "test"] = typer.Option("train", help="Split to read (with train augmentation)."),
    device: Optional[Device] = typer.Option(None, metavar="DEVICE", callback=_device_option, help=DEVICE_HELP),
    references: bool = typer.Option(True, help="Also measure the notebook baseline and the decode ceiling."),
) -> None:
    """Loader throughput (images/s, median of passes) with the notebook baseline and the JPEG decode ceiling
    measured on the same galaxies in the same run. Prints one JSON object per line."""
    from gzpipe.bench.loader import LoaderBenchConfig, run

    for row in run(LoaderBenchConfig(str(shards), backend, image_size, batch_size, workers, passes, split, device,
                                     references)):
        print(json.dumps(row), flush=True)


@bench_app.command("train")
def bench_train(
    backbone: str = typer.Option(..., metavar="NAME", help=f"One of {BACKBONE_NAMES}."),
    image_size: int = typer.Option(224, min=16, metavar="PX", help="Input size."),
    batch_size: int = typer.Option(64, min=1, metavar="N", help="Batch size."),
    shards: Optional[Path] = typer.Option(None, metavar="DIR", help="Shard folder: also measure with the real "
                                                                    "loader (data stall)."),
    backend: Backend = typer.Option("auto", help="Loader backend for the loader row."),
    workers: int = typer.Option(2, min=0, metavar="N", help="Loader workers."),
    device: Optional[Device] = typer.Option(None, metavar="DEVICE", callback=_device_option, help=DEVICE_HELP),
    amp: Amp = typer.Option("bf16", help="CUDA precision (the CPU runs fp32)."),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last", help="Memory format "
                                                 "[the backbone's default]."),
    steps: int = typer.Option(10, min=1, metavar="N", help="Optimizer steps per timed window."),
    warmup: int = typer.Option(3, min=0, metavar="N", help="Untimed steps first."),
    repeats: int = typer.Option(3, min=1, metavar="N", help="Timed windows; the median is reported."),
    compile: bool = typer.Option(False, "--compile/--no-compile", help="torch.compile the model (the warm-up steps "
                                                                       "include the compilation)."),
) -> None:
    """Training throughput (images/s): with data already on the device (the model's ceiling) and, with --shards,
    fed by the real loader, so the data-stall share shows. Prints JSON rows with peak memory."""
    from gzpipe.bench.train import TrainBenchConfig, run

    for row in run(TrainBenchConfig(backbone, image_size, batch_size, str(shards) if shards else None, backend,
                                    workers, device, amp, channels_last, steps, warmup, repeats, compile)):
        print(json.dumps(row), flush=True)

