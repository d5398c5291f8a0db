"""The `gzpipe` command line. Each command parses its options into a config and calls one stage function.

Bad input raises ``GzpipeError``; ``gzpipe.exits`` turns it (and signals, usage and disk errors) into one line.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from gzpipe.errors import GzpipeError
from gzpipe.exits import run_app

app = typer.Typer(
    help="gzpipe: Galaxy Zoo 2 catalogue + images -> WebDataset shards -> fast loaders -> trained morphology models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Benchmarks that print JSON rows (one object per line).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
out = Console(soft_wrap=True)  # one summary line stays one line in logs and pipes


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
    n: int = typer.Option(1000, "--n", min=1, help="Number of galaxies."),
    seed: int = typer.Option(0, help="Random seed: the same seed gives the same bytes."),
    quality: int = typer.Option(90, min=1, max=100, help="JPEG quality of the 424x424 images."),
    workers: int = typer.Option(1, min=1, help="Processes rendering in parallel (output does not depend on it)."),
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
def download(
    dest: Path = typer.Option(Path("data/gz2"), help="Folder for the release files (and images/ unpacked)."),
    what: str = typer.Option("labels,mapping,images", help="Comma list of: labels (gz2_hart16.csv.gz), mapping, images (3.4 GB zip)."),
    base_url: Optional[str] = typer.Option(None, help="A mirror serving the files under their release names."),
    checksums: Optional[Path] = typer.Option(None, help="File of '<md5>  <file name>' lines (for a mirror's files)."),
    timeout: float = typer.Option(60.0, min=0.1, help="Network timeout in seconds."),
) -> None:
    """Fetch the GZ2 release (Hart16 table, filename mapping, image zip) with resume, checksum checks and a safe
    unzip. Afterwards: gzpipe shard --catalog DEST/gz2_hart16.csv.gz --mapping DEST/gz2_filename_mapping.csv --images DEST/images"""
    from gzpipe.download import run_download

    run_download(dest, [w.strip() for w in what.split(",") if w.strip()], base_url, checksums, timeout)
    out.print(f"next: gzpipe shard --catalog {dest}/gz2_hart16.csv.gz --mapping {dest}/gz2_filename_mapping.csv "
              f"--images {dest}/images --out SHARDS")


@app.command()
def shard(
    catalog: Path = typer.Option(..., help="Labels CSV: gz2_hart16.csv[.gz], a CSV with asset_id + Hart16 columns, or Kaggle training_solutions."),
    images: Path = typer.Option(..., help="Folder of <id>.jpg images (asset_id for Hart16, GalaxyID for Kaggle)."),
    out_dir: Path = typer.Option(..., "--out", help="Output folder for the tars, .idx files and manifest.json."),
    mapping: Optional[Path] = typer.Option(None, help="gz2_filename_mapping.csv (needed when the catalogue has dr7objid but no asset_id)."),
    format: Format = typer.Option(Format.auto, "--format", help="Catalogue format; auto tells them apart by their columns."),
    target: Target = typer.Option(Target.debiased, help="Hart16 column family to train on."),
    fraction: float = typer.Option(1.0, min=0.0, max=1.0, help="Keep this share of galaxies (by id hash: a larger fraction keeps a superset)."),
    val: float = typer.Option(0.1, min=0.0, max=1.0, help="Share of galaxies in the validation split."),
    test: float = typer.Option(0.1, min=0.0, max=1.0, help="Share of galaxies in the test split."),
    seed: int = typer.Option(42, help="Seed of the split, subsample and write-order hashes."),
    resize: Optional[int] = typer.Option(None, min=8, max=4096, help="Re-encode images at this size (px, square) instead of storing the originals."),
    quality: int = typer.Option(90, min=1, max=100, help="JPEG quality when --resize re-encodes."),
    shard_size: int = typer.Option(1000, min=1, help="Samples per tar shard."),
    workers: int = typer.Option(1, min=1, help="Processes packing shards in parallel."),
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
    if c.get("converted"):
        out.print(f"converted: {c['converted']} greyscale/CMYK JPEGs stored as RGB (listed under `converted` in the manifest)")


@app.command()
def verify(
    shards: Path = typer.Argument(..., help="Shard folder written by `gzpipe shard`."),
    quick: bool = typer.Option(False, "--quick", help="Check presence, sizes and indexes only (no sha256 of the tars)."),
) -> None:
    """Check every shard against manifest.json (present, size, sha256, index). Exits 1 and names each damaged file
    and the `gzpipe shard` command that rebuilds just those."""
    from gzpipe.shard.verify import rebuild_command, verify_shards

    checks = verify_shards(shards, quick)
    bad = [c for c in checks if not c.ok]
    for c in bad:
        out.print(f"[bold red]damaged[/bold red] {shards / c.name}: {c.problem}", highlight=False)
    if not bad:
        out.print(f"{len(checks)} shards OK in {shards}" + (" (sizes and indexes; without --quick the sha256 too)" if quick else ""))
        return
    out.print(f"{len(bad)} of {len(checks)} shards damaged. Rebuild just those (the rest are reused) with:\n"
              f"  {rebuild_command(shards)}", highlight=False, markup=False)
    raise typer.Exit(1)


@app.command()
def features(
    backbone: str = typer.Option(..., help="Backbone whose best checkpoint extracts the features."),
    out_dir: Path = typer.Option(Path("artifacts"), "--out", help="Artifacts folder holding <backbone>/."),
    shards: Optional[Path] = typer.Option(None, help="Shards to read [the ones the backbone was trained on]."),
    backend: str = typer.Option("auto", help="Loader backend: auto, dali, nvjpeg or pil."),
    batch_size: int = typer.Option(128, min=1, help="Batch size for inference."),
    workers: int = typer.Option(2, min=0, help="Loader workers."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    dtype: str = typer.Option("float16", help="Storage type of the features: float16 (half the disk) or float32."),
    force: bool = typer.Option(False, help="Re-extract even when up to date."),
) -> None:
    """Write each split's penultimate features (with ids, targets, mask) to <out>/<backbone>/features/<split>.parquet,
    in chunks; skipped when up to date with the checkpoint."""
    from gzpipe.features import FeaturesConfig, run_features

    run_features(FeaturesConfig(backbone=backbone, out=str(out_dir), shards=str(shards) if shards else None,
                                backend=backend, batch_size=batch_size, workers=workers, device=device, dtype=dtype,
                                force=force))


@app.command()
def boost(
    engine: str = typer.Option(..., help="xgboost or lightgbm."),
    backbone: str = typer.Option(..., help="Backbone whose cached features to train on."),
    out_dir: Path = typer.Option(Path("artifacts"), "--out", help="Artifacts folder."),
    rounds: int = typer.Option(200, min=1, help="Maximum boosting rounds (trees per target)."),
    early_stopping: int = typer.Option(20, min=1, help="Stop after this many rounds without a better validation RMSE."),
    learning_rate: float = typer.Option(0.1, min=0.0, help="Shrinkage."),
    max_depth: int = typer.Option(6, min=1, help="XGBoost tree depth."),
    num_leaves: int = typer.Option(31, min=2, help="LightGBM leaves per tree."),
    max_bin: int = typer.Option(64, min=2, help="Histogram bins per feature (64 is ~2-4x faster than 256 here)."),
    colsample: float = typer.Option(0.25, min=0.01, max=1.0, help="Share of features sampled per tree."),
    multi_strategy: str = typer.Option("one_output_per_tree", help="XGBoost: one_output_per_tree (faster, measured) or multi_output_tree."),
    device: str = typer.Option("auto", help="auto (GPU when there is one), cpu or cuda."),
    force: bool = typer.Option(False, help="Retrain a finished booster."),
    dask_scheduler: Optional[str] = typer.Option(None, help="Train with xgboost.dask / lightgbm.dask on this existing Dask scheduler (tcp://host:port)."),
) -> None:
    """Gradient-boosted trees on a backbone's cached features, predicting the 30 targets (early-stopped on val,
    evaluated on test). Output: <out>/<engine>_<backbone>/."""
    from gzpipe.boost import BoostConfig, run_boost

    run_boost(BoostConfig(engine=engine, backbone=backbone, out=str(out_dir), rounds=rounds,
                          early_stopping=early_stopping, learning_rate=learning_rate, max_depth=max_depth,
                          num_leaves=num_leaves, max_bin=max_bin, colsample=colsample, multi_strategy=multi_strategy,
                          device=device, force=force, dask_scheduler=dask_scheduler))


@app.command()
def ensemble(
    method: str = typer.Option(..., help="equal, accuracy (weights ~ val accuracy) or inverse_mae (weights ~ 1/val MAE)."),
    out_dir: Path = typer.Option(Path("artifacts"), "--out", help="Artifacts folder."),
    backbones: Optional[str] = typer.Option(None, help="Comma list of backbones [every finished one]."),
) -> None:
    """Weighted mean of the backbones' predictions; weights from the validation split, evaluated on test."""
    from gzpipe.ensemble import run_ensemble

    run_ensemble(method, out_dir, backbones.split(",") if backbones else None)


@app.command()
def report(out_dir: Path = typer.Option(Path("artifacts"), "--out", help="Artifacts folder.")) -> None:
    """Comparison tables, figures and a self-contained report.html in <out>/model_comparison/."""
    from gzpipe.report import run_report

    run_report(out_dir)


@app.command()
def predict(
    images: list[Path] = typer.Argument(..., help="Image files, folders of images, or tar shards."),
    model: Path = typer.Option(..., help="A trained model folder: artifacts/<backbone>, artifacts/<engine>_<backbone> or artifacts/ensemble_<method>."),
    out_csv: Path = typer.Option(Path("predictions.csv"), "--out", help="CSV to write: id, error, 30 fractions [, cumulative]."),
    tta: int = typer.Option(1, min=1, help="Test-time augmentation: average this many rotated / flipped views."),
    cumulative: bool = typer.Option(False, "--cumulative", help="Also write Kaggle-style cumulative fractions (Class1.1 ...)."),
    batch_size: int = typer.Option(32, min=1, help="Images per batch."),
    workers: int = typer.Option(2, min=0, help="Decoding worker processes."),
    device: str = typer.Option("auto", help="auto (GPU when there is one), cpu or cuda."),
) -> None:
    """Predict the 30 GZ2 vote fractions for new galaxy images with any trained model. Unreadable files get a row
    with the reason in the `error` column; the rest go on."""
    from gzpipe.predict import run_predict

    run_predict(model, images, out_csv, tta, cumulative, batch_size, workers, device)


@app.command()
def study(
    preset: Optional[str] = typer.Option(None, help="demo (synthetic, CPU, ~10 min), real (../shared sample) or full (original hyperparameters, GPU)."),
    config: Optional[Path] = typer.Option(None, help="YAML: preset + overrides of data / shard / train / boost / backbones / engines / methods / out."),
    out_dir: Optional[str] = typer.Option(None, "--out", help="Artifacts folder [from the preset]."),
) -> None:
    """Run the whole 18-model study, skipping finished steps and resuming interrupted ones."""
    from gzpipe.study import resolve_study, run_study

    cfg = resolve_study(preset, config, out_dir)
    run_study(cfg)
    from gzpipe.report.collect import collect

    table, _ = collect(Path(cfg["out"]))
    _print_summary(table)


def _print_summary(table) -> None:
    from rich.table import Table

    t = Table(title="gzpipe study: test split")
    for col in ("model", "kind", "accuracy", "MAE", "RMSE"):
        t.add_column(col, justify="left" if col in ("model", "kind") else "right")
    for _, r in table.sort_values("mae").iterrows():
        t.add_row(r["name"], r["kind"], f"{r['accuracy']:.4f}", f"{r['mae']:.4f}", f"{r['rmse']:.4f}")
    out.print(t)


@app.command()
def demo(out_dir: Optional[str] = typer.Option(None, "--out", help="Artifacts folder [artifacts].")) -> None:
    """Same as `gzpipe study --preset demo`."""
    study(preset="demo", config=None, out_dir=out_dir)


class Backend(str, Enum):
    auto = "auto"
    dali = "dali"
    nvjpeg = "nvjpeg"
    pil = "pil"


@bench_app.command("loader")
def bench_loader(
    shards: Path = typer.Option(..., help="Shard folder written by `gzpipe shard`."),
    backend: Backend = typer.Option(Backend.auto, help="Loader backend to measure."),
    image_size: int = typer.Option(224, min=16, help="Output size in pixels."),
    batch_size: int = typer.Option(64, min=1, help="Batch size."),
    workers: int = typer.Option(2, min=0, help="Loader workers (DALI threads); the baseline uses the same number."),
    passes: int = typer.Option(3, min=1, help="Timed passes over the split (after one warm-up); the median is reported."),
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
    image_size: int = typer.Option(224, min=16, help="Input size in pixels."),
    batch_size: int = typer.Option(64, min=1, help="Batch size."),
    shards: Optional[Path] = typer.Option(None, help="Shard folder: also measure with the real loader (data stall)."),
    backend: Backend = typer.Option(Backend.auto, help="Loader backend for the loader row."),
    workers: int = typer.Option(2, min=0, help="Loader workers."),
    device: Optional[str] = typer.Option(None, help="cpu or cuda; default: cuda when available."),
    amp: str = typer.Option("bf16", help="CUDA precision: bf16, fp16 or off (the CPU runs fp32)."),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last", help="Memory format [per-backbone default]."),
    steps: int = typer.Option(10, min=1, help="Optimizer steps per timed window."),
    warmup: int = typer.Option(3, min=0, help="Untimed steps first."),
    repeats: int = typer.Option(3, min=1, help="Timed windows; the median is reported."),
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
    epochs: Optional[int] = typer.Option(None, min=1, help="Maximum epochs [250]."),
    batch_size: Optional[int] = typer.Option(None, min=1, help="Batch size per process [32]."),
    lr: Optional[float] = typer.Option(None, min=0.0, help="Peak learning rate of AdamW [3e-4]."),
    weight_decay: Optional[float] = typer.Option(None, min=0.0, help="AdamW weight decay [0.05]."),
    warmup_epochs: Optional[float] = typer.Option(None, min=0.0, help="Linear warm-up length before the cosine decay [3]."),
    patience: Optional[int] = typer.Option(None, min=1, help="Early stopping: epochs without a better validation loss [12]."),
    image_size: Optional[int] = typer.Option(None, min=16, help="Input size in pixels [224]."),
    backend: Optional[str] = typer.Option(None, help="Loader backend: auto, dali, nvjpeg or pil [auto]."),
    workers: Optional[int] = typer.Option(None, min=0, help="Loader workers [2]."),
    device: Optional[str] = typer.Option(None, help="auto, cpu or cuda [auto]."),
    seed: Optional[int] = typer.Option(None, min=0, help="Seed of weights init, shuffling and augmentation [42]."),
    amp: Optional[str] = typer.Option(None, help="CUDA precision: bf16, fp16 (with a GradScaler) or off [bf16]; the CPU always runs fp32."),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last", help="Memory format [per-backbone default]."),
    head: Optional[str] = typer.Option(None, help="sigmoid or softmax (per task) [sigmoid for debiased targets, else softmax]."),
    loss: Optional[str] = typer.Option(None, help="mse or bce (soft targets), over valid entries only [mse]."),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile the model."),
    weights: Optional[Path] = typer.Option(None, help="Local torchvision state dict to start from (its ImageNet head is ignored)."),
    pretrained: Optional[bool] = typer.Option(None, "--pretrained", help="Start from torchvision's ImageNet weights (needs internet)."),
    restart: bool = typer.Option(False, "--restart", help="Start over, ignoring existing checkpoints."),
    skip: bool = typer.Option(False, "--skip", help="Only load the finished model and evaluate it."),
    checkpoint_minutes: Optional[float] = typer.Option(None, min=0.0, help="Also checkpoint within an epoch at most this often [5]."),
    stop_after: Optional[int] = typer.Option(None, min=1, help="Exit (resumably) after this many epochs in this invocation, e.g. for time-limited jobs."),
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


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the command; every failure a user can fix ends as one line (see ``gzpipe.exits``)."""
    run_app(app, argv)


if __name__ == "__main__":
    main()
