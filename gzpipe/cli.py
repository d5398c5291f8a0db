"""The `gzpipe` command line. Each command parses its options into a config and calls one stage function.

Bad input raises ``GzpipeError``; ``main`` prints its one-line message and exits 2, never a traceback.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from gzpipe.errors import GzpipeError

app = typer.Typer(
    help="gzpipe: Galaxy Zoo 2 catalogue + images -> WebDataset shards -> fast loaders -> trained morphology models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Benchmarks that print JSON rows (one object per line).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
err = Console(stderr=True)
out = Console()


class Format(str, Enum):
    auto = "auto"
    hart16 = "hart16"
    kaggle = "kaggle"


class Target(str, Enum):
    debiased = "debiased"
    weighted_fraction = "weighted_fraction"
    fraction = "fraction"


class Verify(str, Enum):
    decode = "decode"
    header = "header"


@app.command()
def info() -> None:
    """Print library versions, whether CUDA and DALI are usable, and the CPU count."""
    from gzpipe.info import collect

    for k, v in collect().items():
        out.print(f"[bold]{k:>14}[/bold]  {v}")


@app.command()
def synth(
    out_dir: Path = typer.Argument(..., metavar="OUT", help="Folder to write images/, gz2_hart16.csv, gz2_filename_mapping.csv into."),
    n: int = typer.Option(1000, "--n", help="Number of galaxies."),
    seed: int = typer.Option(0, help="Random seed: the same seed gives the same bytes."),
    quality: int = typer.Option(90, help="JPEG quality of the 424x424 images."),
    workers: int = typer.Option(1, help="Processes rendering in parallel (output does not depend on it)."),
) -> None:
    """Render a synthetic GZ2 release (images + Hart16 table + filename mapping) from physical galaxy models."""
    from gzpipe.synth import SynthConfig, synth as run

    if n < 1:
        raise GzpipeError("--n must be at least 1")
    summary = run(SynthConfig(out=out_dir, n=n, seed=seed, quality=quality, workers=workers))
    out.print(f"wrote {summary['galaxies']} galaxies to {summary['out']}")
    out.print(f"next: gzpipe shard --catalog {summary['catalog']} --mapping {summary['mapping']} "
              f"--images {summary['images']} --out SHARDS")


@app.command()
def shard(
    catalog: Path = typer.Option(..., help="Labels CSV: gz2_hart16.csv[.gz], a CSV with asset_id + Hart16 columns, or Kaggle training_solutions."),
    images: Path = typer.Option(..., help="Folder of <id>.jpg images (asset_id for Hart16, GalaxyID for Kaggle)."),
    out_dir: Path = typer.Option(..., "--out", help="Output folder for the tars, .idx files and manifest.json."),
    mapping: Optional[Path] = typer.Option(None, help="gz2_filename_mapping.csv (needed when the catalogue has dr7objid but no asset_id)."),
    format: Format = typer.Option(Format.auto, "--format", help="Catalogue format; auto tells them apart by their columns."),
    target: Target = typer.Option(Target.debiased, help="Hart16 column family to train on."),
    fraction: float = typer.Option(1.0, help="Keep this share of galaxies (by id hash: a larger fraction keeps a superset)."),
    val: float = typer.Option(0.1, help="Share of galaxies in the validation split."),
    test: float = typer.Option(0.1, help="Share of galaxies in the test split."),
    seed: int = typer.Option(42, help="Seed of the split, subsample and write-order hashes."),
    resize: Optional[int] = typer.Option(None, help="Re-encode images at this size (px, square) instead of storing the originals."),
    quality: int = typer.Option(90, help="JPEG quality when --resize re-encodes."),
    shard_size: int = typer.Option(1000, help="Samples per tar shard."),
    workers: int = typer.Option(1, help="Processes packing shards in parallel."),
    verify: Verify = typer.Option(Verify.decode, help="decode: decode each JPEG (catches corrupt data); header: check markers only (faster)."),
) -> None:
    """Pack a catalogue and its images into WebDataset tar shards with DALI indexes and a manifest."""
    from gzpipe.shard import ShardConfig, run_shard

    cfg = ShardConfig(catalog=catalog, images=images, out=out_dir, mapping=mapping, format=format.value,
                      target=target.value, fraction=fraction, val=val, test=test, seed=seed, resize=resize,
                      quality=quality, shard_size=shard_size, workers=workers, verify=verify.value)
    m = run_shard(cfg)
    _print_shard_summary(m, out_dir)


def _print_shard_summary(m: dict, out_dir: Path) -> None:
    c = m["counts"]
    out.print(f"[bold]{c['written']}[/bold] written, [bold]{c['rejected']}[/bold] rejected of {c['inputs']} inputs "
              f"({c['catalog_rows']} catalogue rows, {c['excluded_by_fraction']} left out by --fraction)")
    out.print("splits: " + ", ".join(f"{k} {v}" for k, v in c["per_split"].items())
              + f"; {len(m['shards'])} shards in {out_dir}")
    if m["rejected_by_reason"]:
        out.print("rejected: " + ", ".join(f"{k} {v}" for k, v in m["rejected_by_reason"].items())
                  + f" (each row with its reason in {out_dir / 'manifest.json'})")


@app.command()
def demo(
    out_dir: Path = typer.Option(Path("artifacts/demo"), "--out", help="Folder for everything the demo makes."),
    n: int = typer.Option(300, "--n", help="Synthetic galaxies."),
    workers: int = typer.Option(2, help="Worker processes."),
) -> None:
    """Run the pipeline on the embedded synthetic default: synth -> shard (later stages join as they land)."""
    from gzpipe.shard import ShardConfig, run_shard
    from gzpipe.synth import SynthConfig, synth as run_synth

    raw = out_dir / "synth"
    s = run_synth(SynthConfig(out=raw, n=n, seed=0, workers=workers))
    out.print(f"synth: {s['galaxies']} galaxies in {raw}")
    shards = out_dir / "shards"
    m = run_shard(ShardConfig(catalog=Path(s["catalog"]), mapping=Path(s["mapping"]), images=Path(s["images"]),
                              out=shards, shard_size=100, workers=workers))
    _print_shard_summary(m, shards)


class Backend(str, Enum):
    auto = "auto"
    dali = "dali"
    nvjpeg = "nvjpeg"
    pil = "pil"


@bench_app.command("loader")
def bench_loader(
    shards: Path = typer.Option(..., help="Shard folder written by `gzpipe shard`."),
    backend: Backend = typer.Option(Backend.auto, help="Loader backend to measure."),
    image_size: int = typer.Option(224, help="Output size in pixels."),
    batch_size: int = typer.Option(64, help="Batch size."),
    workers: int = typer.Option(2, help="Loader workers (DALI threads); the baseline uses the same number."),
    passes: int = typer.Option(3, help="Timed passes over the split (after one warm-up); the median is reported."),
    split: str = typer.Option("train", help="Split to read (train mode augmentation is used)."),
    device: Optional[str] = typer.Option(None, help="cpu or cuda; default: cuda when available."),
    references: bool = typer.Option(True, help="Also measure the notebook baseline and the decode ceiling."),
) -> None:
    """Loader throughput (images/s, median of passes) with the notebook baseline and the JPEG decode ceiling
    measured on the same galaxies in the same run. Prints one JSON object per line."""
    from gzpipe.bench.loader import run

    for row in run(shards, backend.value, image_size, batch_size, workers, passes, split, device, references):
        print(json.dumps(row), flush=True)


@bench_app.command("train")
def bench_train(
    backbone: str = typer.Option(..., help="Backbone name (see `gzpipe train --help`)."),
    image_size: int = typer.Option(224, help="Input size in pixels."),
    batch_size: int = typer.Option(64, help="Batch size."),
    shards: Optional[Path] = typer.Option(None, help="Shard folder: also measure with the real loader (data stall)."),
    backend: Backend = typer.Option(Backend.auto, help="Loader backend for the loader row."),
    workers: int = typer.Option(2, help="Loader workers."),
    device: Optional[str] = typer.Option(None, help="cpu or cuda; default: cuda when available."),
    amp: str = typer.Option("bf16", help="CUDA precision: bf16, fp16 or off (the CPU runs fp32)."),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last", help="Memory format [per-backbone default]."),
    steps: int = typer.Option(10, help="Optimizer steps per timed window."),
    warmup: int = typer.Option(3, help="Untimed steps first."),
    repeats: int = typer.Option(3, help="Timed windows; the median is reported."),
) -> None:
    """Training throughput (images/s): with data already on the device (the model's ceiling) and, with --shards,
    fed by the real loader, so the data-stall share shows. Prints JSON rows with peak memory."""
    from gzpipe.bench.train import run

    for row in run(backbone, image_size, batch_size, shards, backend.value, workers, device, amp, channels_last,
                   steps, warmup, repeats):
        print(json.dumps(row), flush=True)


class Mode(str, Enum):
    resume = "resume"
    restart = "restart"
    skip = "skip"


@app.command()
def train(
    backbone: str = typer.Option(..., help="resnet50, efficientnet_v2_s, convnext_base, swin_v2_s or regnety_8gf."),
    shards: Path = typer.Option(..., help="Shard folder written by `gzpipe shard`."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Artifacts folder; the run goes to OUT/<backbone>/ [artifacts]."),
    config: Optional[Path] = typer.Option(None, help="JSON file of options (same names as the flags, underscores); flags win."),
    epochs: Optional[int] = typer.Option(None, help="Maximum epochs [250]."),
    batch_size: Optional[int] = typer.Option(None, help="Batch size per process [32]."),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate of AdamW [3e-4]."),
    weight_decay: Optional[float] = typer.Option(None, help="AdamW weight decay [0.05]."),
    warmup_epochs: Optional[float] = typer.Option(None, help="Linear warm-up length before the cosine decay [3]."),
    patience: Optional[int] = typer.Option(None, help="Early stopping: epochs without a better validation loss [12]."),
    image_size: Optional[int] = typer.Option(None, help="Input size in pixels [224]."),
    backend: Optional[str] = typer.Option(None, help="Loader backend: auto, dali, nvjpeg or pil [auto]."),
    workers: Optional[int] = typer.Option(None, help="Loader workers [2]."),
    device: Optional[str] = typer.Option(None, help="auto, cpu or cuda [auto]."),
    seed: Optional[int] = typer.Option(None, help="Seed of weights init, shuffling and augmentation [42]."),
    amp: Optional[str] = typer.Option(None, help="CUDA precision: bf16, fp16 (with a GradScaler) or off [bf16]; the CPU always runs fp32."),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last", help="Memory format [per-backbone default]."),
    head: Optional[str] = typer.Option(None, help="sigmoid or softmax (per task) [sigmoid for debiased targets, else softmax]."),
    loss: Optional[str] = typer.Option(None, help="mse or bce (soft targets), over valid entries only [mse]."),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile the model."),
    weights: Optional[Path] = typer.Option(None, help="Local torchvision state dict to start from (its ImageNet head is ignored)."),
    pretrained: Optional[bool] = typer.Option(None, "--pretrained", help="Start from torchvision's ImageNet weights (needs internet)."),
    restart: bool = typer.Option(False, "--restart", help="Start over, ignoring existing checkpoints."),
    skip: bool = typer.Option(False, "--skip", help="Only load the finished model and evaluate it."),
    checkpoint_minutes: Optional[float] = typer.Option(None, help="Also checkpoint within an epoch at most this often [5]."),
    stop_after: Optional[int] = typer.Option(None, help="Exit (resumably) after this many epochs in this invocation, e.g. for time-limited jobs."),
) -> None:
    """Train one backbone to regress the 30 GZ2 vote fractions. Without flags an unfinished run resumes from its
    latest checkpoint and a finished one is skipped. Under `torchrun --nproc_per_node=N -m gzpipe train ...` it
    trains with DistributedDataParallel."""
    from gzpipe.train.config import resolve
    from gzpipe.train.run import run_train

    if restart and skip:
        raise GzpipeError("give --restart or --skip, not both")
    mode = "restart" if restart else "skip" if skip else None
    cfg = resolve(backbone, str(shards), config, out=str(out_dir) if out_dir else None, epochs=epochs,
                  batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup_epochs=warmup_epochs,
                  patience=patience, image_size=image_size, backend=backend, workers=workers, device=device, seed=seed,
                  amp=amp, channels_last=channels_last, head=head, loss=loss, compile=compile,
                  weights=str(weights) if weights else None, pretrained=pretrained, mode=mode,
                  checkpoint_minutes=checkpoint_minutes, stop_after=stop_after)
    run_train(cfg)


def main() -> None:
    try:
        app()
    except GzpipeError as e:
        err.print(f"[bold red]error:[/bold red] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:  # a second Ctrl-C during training, or any stage without its own handler
        err.print("[bold red]interrupted[/bold red]: re-run the same command to resume", highlight=False)
        sys.exit(130)


if __name__ == "__main__":
    main()
