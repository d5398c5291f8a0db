"""The `gzpipe` command line. Each command parses its options into a config object and calls one stage function.

Bad input raises ``GzpipeError``; ``gzpipe.exits`` turns it (and signals, usage and disk errors) into one line. Names
of backbones, loader backends, engines and ensemble methods come from their registries (plug-ins included, see
``gzpipe.plugins``), which import nothing heavy, so `--help` is quick.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Optional

import typer
from rich.console import Console

from gzpipe.boost.registry import ENGINES
from gzpipe.ensemble.methods import METHODS
from gzpipe.errors import GzpipeError
from gzpipe.exits import run_app
from gzpipe.loaders.registry import BACKENDS
from gzpipe.models.registry import BACKBONES
from gzpipe.plugins import load_plugins

try:
    load_plugins()  # before the options are built: plug-ins' names are valid choices too
except GzpipeError as _plugin_error:  # reported when a command runs (below), as a one-line error
    PLUGIN_ERROR: GzpipeError | None = _plugin_error
else:
    PLUGIN_ERROR = None

app = typer.Typer(
    help="gzpipe: Galaxy Zoo 2 catalogue and images -> WebDataset shards -> fast loaders -> trained morphology "
         "models. Every command has --help; `gzpipe study` runs them all.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: readable at 80 columns, choices listed in full
)
bench_app = typer.Typer(help="Benchmarks that print JSON rows (one object per line).", no_args_is_help=True,
                        rich_markup_mode=None)
app.add_typer(bench_app, name="bench")
out = Console(soft_wrap=True)  # one summary line stays one line in logs and pipes


@app.callback()
def _main() -> None:
    if PLUGIN_ERROR is not None:
        raise PLUGIN_ERROR


def _device_option(value):
    """Checked where it is parsed, so the error names the flag (the stages' own check names the setting)."""
    from gzpipe.device import check_device_name

    if value is not None:
        try:
            check_device_name(value, "")
        except GzpipeError as e:
            raise typer.BadParameter(str(e).strip()) from None
    return value


def _positive(value):
    if value is not None and not value > 0:
        raise typer.BadParameter(f"must be positive, got {value}")
    return value


def _choices(*names: str):
    return Literal.__getitem__(tuple(names))


Backend = _choices("auto", *BACKENDS)
Engine = _choices(*ENGINES)
Method = _choices(*METHODS)
Device = str  # auto, cpu, cuda or cuda:N - checked by gzpipe.device
Format = Literal["auto", "hart16", "kaggle", "zoobot"]
Target = Literal["debiased", "weighted_fraction", "fraction"]
Verify = Literal["decode", "header"]
Amp = Literal["bf16", "fp16", "off"]
TtaKind = Literal["dihedral", "rotate"]
BACKBONE_NAMES = ", ".join(BACKBONES)
DEVICE_HELP = "auto (the GPU when there is one), cpu, cuda or cuda:N."


@app.command()
def info() -> None:
    """Print library versions, whether CUDA and DALI are usable, and the CPU count."""
    from gzpipe.info import collect

    for k, v in collect().items():
        out.print(f"[bold]{k:>14}[/bold]  {v}")


@app.command()
def synth(
    out_dir: Path = typer.Argument(..., metavar="OUT", help="Folder to write images/, gz2_hart16.csv and "
                                                             "gz2_filename_mapping.csv into."),
    n: int = typer.Option(1000, "--n", min=1, metavar="N", help="Number of galaxies."),
    seed: int = typer.Option(0, metavar="N", help="Random seed: the same seed gives the same bytes."),
    quality: int = typer.Option(90, min=1, max=100, metavar="Q", help="JPEG quality of the 424 x 424 images."),
    workers: int = typer.Option(1, min=1, metavar="N", help="Processes rendering in parallel (the output does not "
                                                            "depend on it)."),
) -> None:
    """Render a synthetic GZ2 release (images, Hart16 table, filename mapping) from physical galaxy models."""
    from gzpipe.synth import SynthConfig, synth as run

    summary = run(SynthConfig(out=out_dir, n=n, seed=seed, quality=quality, workers=workers))
    out.print(f"wrote {summary['galaxies']} galaxies to {summary['out']}")
    out.print(f"next: gzpipe shard --catalog {summary['catalog']} --mapping {summary['mapping']} "
              f"--images {summary['images']} --out SHARDS")


@app.command()
def download(
    dest: Path = typer.Option(Path("data/gz2"), metavar="DIR", help="Folder for the release files (and images/ "
                                                                    "unpacked)."),
    what: str = typer.Option("labels,mapping,images", metavar="LIST", help="Comma list of: labels "
                             "(gz2_hart16.csv.gz), mapping, images (the 3.4 GB zip)."),
    base_url: Optional[str] = typer.Option(None, metavar="URL", help="A mirror serving the files under their "
                                                                     "release names."),
    checksums: Optional[Path] = typer.Option(None, metavar="FILE", help="File of '<md5>  <file name>' lines (for a "
                                                                        "mirror's files)."),
    timeout: float = typer.Option(60.0, min=0.1, metavar="SECONDS", help="Network timeout."),
) -> None:
    """Fetch the GZ2 release (Hart16 table, filename mapping, image zip), resumable, with checksum checks and a
    safe unzip."""
    from gzpipe.download import DownloadConfig, run_download

    run_download(DownloadConfig(str(dest), tuple(w.strip() for w in what.split(",") if w.strip()), base_url,
                                str(checksums) if checksums else None, timeout))
    out.print(f"next: gzpipe shard --catalog {dest}/gz2_hart16.csv.gz --mapping {dest}/gz2_filename_mapping.csv "
              f"--images {dest}/images --out SHARDS")


@app.command()
def shard(
    catalog: Path = typer.Option(..., metavar="FILE", help="Labels: gz2_hart16.csv[.gz], a CSV with asset_id and "
                                 "Hart16 columns, Kaggle's training_solutions, or a galaxy-datasets (Zoobot) "
                                 "catalogue (CSV or Parquet)."),
    images: Path = typer.Option(..., metavar="DIR", help="Folder of the images (<asset_id>.jpg for Hart16, "
                                "<GalaxyID>.jpg for Kaggle; file_loc paths of a Zoobot catalogue are relative "
                                "to it)."),
    out_dir: Path = typer.Option(..., "--out", metavar="DIR", help="Output folder for the tars, their .idx files and "
                                                                   "manifest.json."),
    mapping: Optional[Path] = typer.Option(None, metavar="FILE", help="gz2_filename_mapping.csv (needed when the "
                                           "catalogue has dr7objid but no asset_id)."),
    format: Format = typer.Option("auto", "--format", help="Catalogue format; auto tells them apart by their "
                                                          "columns."),
    target: Target = typer.Option("debiased", help="Hart16 column family to train on."),
    fraction: float = typer.Option(1.0, min=0.0, max=1.0, metavar="F", help="Keep this share of galaxies (by id "
                                   "hash: a larger fraction keeps a superset)."),
    val: float = typer.Option(0.1, min=0.0, max=1.0, metavar="F", help="Share of galaxies in the validation split."),
    test: float = typer.Option(0.1, min=0.0, max=1.0, metavar="F", help="Share of galaxies in the test split."),
    seed: int = typer.Option(42, metavar="N", help="Seed of the split, subsample and write-order hashes."),
    resize: Optional[int] = typer.Option(None, min=8, max=4096, metavar="PX", help="Re-encode images at this size "
                                         "(square) instead of storing the originals."),
    quality: int = typer.Option(90, min=1, max=100, metavar="Q", help="JPEG quality when --resize re-encodes."),
    shard_size: int = typer.Option(1000, min=1, metavar="N", help="Samples per tar shard."),
    workers: int = typer.Option(1, min=1, metavar="N", help="Processes packing shards in parallel."),
    verify: Verify = typer.Option("decode", help="decode: decode each JPEG (catches corrupt data); header: check "
                                                 "markers only (faster)."),
    max_rejected: float = typer.Option(0.1, min=0.0, max=1.0, metavar="F", help="Fail (exit 2, the manifest still "
                                       "written) when more than this share of the rows is rejected."),
) -> None:
    """Pack a catalogue and its images into WebDataset tar shards with DALI indexes and a manifest."""
    from gzpipe.shard import ShardConfig, run_shard

    cfg = ShardConfig(catalog=catalog, images=images, out=out_dir, mapping=mapping, format=format, target=target,
                      fraction=fraction, val=val, test=test, seed=seed, resize=resize, quality=quality,
                      shard_size=shard_size, workers=workers, verify=verify, max_rejected=max_rejected)
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
        out.print(f"converted: {c['converted']} greyscale/CMYK JPEGs stored as RGB (listed under `converted` in the "
                  "manifest)")


@app.command()
def verify(
    shards: Path = typer.Argument(..., metavar="SHARDS", help="Shard folder written by `gzpipe shard`."),
    quick: bool = typer.Option(False, "--quick", help="Check presence, sizes and indexes only (no sha256 of the "
                                                      "tars)."),
) -> None:
    """Check every shard against manifest.json (present, size, sha256, index, samples). Exits 1 and names each
    damaged file and the `gzpipe shard` command that rebuilds just those."""
    from gzpipe.shard.verify import rebuild_command, verify_shards

    checks = verify_shards(shards, quick)
    bad = [c for c in checks if not c.ok]
    for c in bad:
        out.print(f"[bold red]damaged[/bold red] {shards / c.name}: {c.problem}", highlight=False)
    if not bad:
        empty = sum(1 for c in checks if c.samples == 0)
        out.print(f"{len(checks)} shards OK in {shards}" + (" (sizes and indexes; without --quick the sha256 too)"
                                                             if quick else "")
                  + (f"; {empty} of them hold no samples" if empty else ""))
        return
    out.print(f"{len(bad)} of {len(checks)} shards damaged. Rebuild just those (the rest are reused) with:\n"
              f"  {rebuild_command(shards)}", highlight=False, markup=False)
    raise typer.Exit(1)


@app.command()
def train(
    backbone: str = typer.Option(..., metavar="NAME", help=f"One of {BACKBONE_NAMES}."),
    shards: Path = typer.Option(..., metavar="DIR", help="Shard folder written by `gzpipe shard`."),
    out_dir: Optional[Path] = typer.Option(None, "--out", metavar="DIR", help="Artifacts folder; the run goes to "
                                                                              "OUT/<backbone>/ [artifacts]."),
    config: Optional[Path] = typer.Option(None, metavar="FILE", help="JSON file of options (the flags' names with "
                                                                     "underscores); flags win."),
    epochs: Optional[int] = typer.Option(None, min=1, metavar="N", help="Maximum epochs [250]."),
    batch_size: Optional[int] = typer.Option(None, min=1, metavar="N", help="Batch size per process [32]."),
    lr: Optional[float] = typer.Option(None, metavar="X", callback=_positive, help="Peak learning rate of AdamW "
                                                                                   "[3e-4]."),
    weight_decay: Optional[float] = typer.Option(None, min=0.0, metavar="X", help="AdamW weight decay [0.05]."),
    warmup_epochs: Optional[float] = typer.Option(None, min=0.0, metavar="X", help="Linear warm-up before the cosine "
                                                                                   "decay, in epochs [3]."),
    patience: Optional[int] = typer.Option(None, min=1, metavar="N", help="Early stopping: epochs without a better "
                                                                          "validation loss [12]."),
    image_size: Optional[int] = typer.Option(None, min=16, metavar="PX", help="Input size [224]."),
    backend: Optional[Backend] = typer.Option(None, help="Loader backend [auto]."),
    workers: Optional[int] = typer.Option(None, min=0, metavar="N", help="Loader workers [2]."),
    device: Optional[Device] = typer.Option(None, metavar="DEVICE", callback=_device_option, help=DEVICE_HELP + " [auto]"),
    seed: Optional[int] = typer.Option(None, min=0, metavar="N", help="Seed of weights, shuffling and "
                                                                      "augmentation [42]."),
    amp: Optional[Amp] = typer.Option(None, help="CUDA precision (fp16 uses a GradScaler); the CPU always runs "
                                                 "fp32 [bf16]."),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last",
                                                 help="Memory format [the backbone's default]."),
    head: Optional[Literal["sigmoid", "softmax"]] = typer.Option(None, help="Output activation; softmax is per "
                                                                            "task [sigmoid for debiased targets]."),
    loss: Optional[Literal["l1", "mse", "bce"]] = typer.Option(None, help="Loss over valid entries only; l1 is the "
                                                                          "MAE the study reports [l1]."),
    zero_init_residual: Optional[bool] = typer.Option(None, "--zero-init-residual/--no-zero-init-residual",
                                                      help="From random initialisation, start every residual "
                                                           "block as the identity [on]."),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile the model."),
    weights: Optional[Path] = typer.Option(None, metavar="FILE", help="Local state dict to start from (its "
                                                                      "ImageNet head is ignored)."),
    pretrained: Optional[bool] = typer.Option(None, "--pretrained", help="Start from torchvision's ImageNet "
                                                                         "weights (needs internet)."),
    restart: bool = typer.Option(False, "--restart", help="Start over, ignoring existing checkpoints."),
    skip: bool = typer.Option(False, "--skip", help="Only evaluate the finished model, as it was trained."),
    checkpoint_minutes: Optional[float] = typer.Option(None, min=0.0, metavar="MIN", help="Also checkpoint within "
                                                       "an epoch at most this often [5]."),
    stop_after: Optional[int] = typer.Option(None, min=1, metavar="N", help="Exit (resumably) after this many "
                                             "epochs in this invocation, e.g. for time-limited jobs."),
    tta: Optional[int] = typer.Option(None, min=1, metavar="N", help="Evaluate the finished model averaging N "
                                      "test-time views; `features` then uses the same views [1]."),
    ema_decay: Optional[float] = typer.Option(None, min=0.0, max=0.99999, metavar="X", help="Keep an exponential "
                                              "moving average of the weights (decay per step, e.g. 0.99); it is "
                                              "validated and saved as the model [off]."),
    tta_kind: Optional[TtaKind] = typer.Option(None, help="dihedral: exact 90-degree rotations and mirrors (up to "
                                                          "8); rotate: N evenly spaced angles [dihedral]."),
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
                  checkpoint_minutes=checkpoint_minutes, stop_after=stop_after, tta=tta, tta_kind=tta_kind,
                  ema_decay=ema_decay, zero_init_residual=zero_init_residual)
    run_train(cfg)


@app.command()
def features(
    backbone: str = typer.Option(..., metavar="NAME", help="Backbone whose best checkpoint extracts the features."),
    out_dir: Path = typer.Option(Path("artifacts"), "--out", metavar="DIR", help="Artifacts folder holding "
                                                                                 "<backbone>/."),
    shards: Optional[Path] = typer.Option(None, metavar="DIR", help="Shards to read [the ones the backbone was "
                                                                    "trained on]."),
    backend: Backend = typer.Option("auto", help="Loader backend."),
    batch_size: int = typer.Option(128, min=1, metavar="N", help="Batch size for inference."),
    workers: int = typer.Option(2, min=0, metavar="N", help="Loader workers."),
    device: Device = typer.Option("auto", metavar="DEVICE", callback=_device_option, help=DEVICE_HELP),
    dtype: Literal["float16", "float32"] = typer.Option("float16", help="Storage type (float16 takes half the "
                                                                        "disk)."),
    force: bool = typer.Option(False, help="Re-extract even when up to date."),
    tta: Optional[int] = typer.Option(None, min=1, metavar="N", help="Average the features over N test-time views, "
                                      "the same for every split [the backbone's own --tta, else 1]."),
) -> None:
    """Write each split's penultimate features (with ids, targets, mask) to <out>/<backbone>/features/<split>.parquet,
    in chunks; skipped when up to date with the checkpoint and the shards."""
    from gzpipe.features import FeaturesConfig, run_features

    run_features(FeaturesConfig(backbone=backbone, out=str(out_dir), shards=str(shards) if shards else None,
                                backend=backend, batch_size=batch_size, workers=workers, device=device, dtype=dtype,
                                force=force, tta=tta))


def _key_values(pairs: list[str]) -> dict:
    """``--param key=value`` pairs, values read as JSON where they parse (numbers, true/false), else strings."""
    out_ = {}
    for p in pairs:
        if "=" not in p:
            raise GzpipeError(f"--param {p!r}: write it as KEY=VALUE")
        k, v = p.split("=", 1)
        try:
            out_[k.strip()] = json.loads(v)
        except ValueError:
            out_[k.strip()] = v
    return out_


@app.command()
def boost(
    engine: Engine = typer.Option(..., help="Boosting engine."),
    backbone: str = typer.Option(..., metavar="NAME", help="Backbone whose cached features to train on."),
    out_dir: Path = typer.Option(Path("artifacts"), "--out", metavar="DIR", help="Artifacts folder."),
    rounds: int = typer.Option(200, min=1, metavar="N", help="Maximum boosting rounds (trees per target)."),
    early_stopping: int = typer.Option(20, min=1, metavar="N", help="Stop after this many rounds without a better "
                                                                    "validation RMSE (MAE with --objective l1)."),
    objective: Optional[Literal["l2", "l1"]] = typer.Option(
        None, help="l2: squared error (mean fractions); l1: absolute error (medians: the MAE the study reports) "
                   "[l1 for lightgbm, l2 for xgboost: measured]."),
    learning_rate: float = typer.Option(0.1, metavar="X", callback=_positive, help="Shrinkage."),
    max_bin: int = typer.Option(64, min=2, metavar="N", help="Histogram bins per feature (64 is 2-4x faster than "
                                                             "256 here)."),
    colsample: float = typer.Option(0.25, min=0.01, max=1.0, metavar="F", help="Share of features sampled per "
                                                                               "tree."),
    subsample: float = typer.Option(1.0, min=0.01, max=1.0, metavar="F", help="Share of train rows sampled per "
                                                                             "tree."),
    pca: Optional[int] = typer.Option(None, min=1, metavar="K", help="First reduce the features to K principal "
                                      "components, fitted on the train split (kept with the model)."),
    max_depth: Optional[int] = typer.Option(None, min=1, metavar="N", help="XGBoost tree depth [6]."),
    num_leaves: Optional[int] = typer.Option(None, min=2, metavar="N", help="LightGBM leaves per tree [31]."),
    multi_strategy: Optional[Literal["one_output_per_tree", "multi_output_tree"]] = typer.Option(
        None, help="XGBoost's multi-output trees [one_output_per_tree: faster, measured]."),
    param: list[str] = typer.Option([], "--param", metavar="KEY=VALUE", help="One of the engine's own parameters "
                                    "(repeatable): lightgbm num_leaves, min_data_in_leaf, bin_sample_rows (rows "
                                    "sampled to place bin edges); xgboost max_depth, multi_strategy; a plug-in "
                                    "engine's own. E.g. --param min_data_in_leaf=20."),
    device: Device = typer.Option("auto", metavar="DEVICE", callback=_device_option, help=DEVICE_HELP),
    force: bool = typer.Option(False, help="Retrain a finished booster."),
    dask_scheduler: Optional[str] = typer.Option(None, metavar="ADDRESS", help="Train with xgboost.dask / "
                                                 "lightgbm.dask on this running Dask scheduler (tcp://host:port)."),
) -> None:
    """Gradient-boosted trees on a backbone's cached features, predicting the 30 targets (early-stopped on val,
    evaluated on test). Output: <out>/<engine>_<backbone>/."""
    from gzpipe.boost import BoostConfig, run_boost

    params = {k: v for k, v in (("max_depth", max_depth), ("num_leaves", num_leaves),
                                ("multi_strategy", multi_strategy)) if v is not None}
    params.update(_key_values(param))
    run_boost(BoostConfig(engine=engine, backbone=backbone, out=str(out_dir), rounds=rounds,
                          early_stopping=early_stopping, learning_rate=learning_rate, max_bin=max_bin,
                          colsample=colsample, subsample=subsample, pca=pca, device=device, force=force,
                          objective=objective,
                          dask_scheduler=dask_scheduler,
                          params=params))


@app.command()
def ensemble(
    method: Method = typer.Option(..., help="equal; accuracy (weights ~ val accuracy); inverse_mae (weights ~ 1 / val "
                                            "MAE); stacked (per-target weights over backbones and boosters)."),
    out_dir: Path = typer.Option(Path("artifacts"), "--out", metavar="DIR", help="Artifacts folder."),
    backbones: Optional[str] = typer.Option(None, metavar="LIST", help="equal, accuracy, inverse_mae: comma list "
                                            "of backbones [every finished one]."),
    members: Optional[str] = typer.Option(None, metavar="LIST", help="stacked: comma list of run names (backbones "
                                          "and boosters) [every finished one]."),
) -> None:
    """Combine finished models; weights from the validation split only, evaluated on test."""
    from gzpipe.ensemble import EnsembleConfig, run_ensemble

    run_ensemble(EnsembleConfig(method=method, out=str(out_dir), backbones=backbones, members=members))


@app.command()
def report(out_dir: Path = typer.Option(Path("artifacts"), "--out", metavar="DIR", help="Artifacts folder.")) -> None:
    """Comparison tables, figures and a self-contained report.html in <out>/model_comparison/."""
    from gzpipe.report import run_report

    run_report(out_dir)


@app.command()
def predict(
    inputs: list[Path] = typer.Argument(..., metavar="INPUTS...", help="Image files, folders, tar files, shard "
                                        "folders, or catalogues (.csv / .parquet with an id and an image path "
                                        "column, e.g. galaxy-datasets' id_str and file_loc)."),
    model: Path = typer.Option(..., metavar="DIR", help="A finished model: artifacts/<backbone>, "
                               "artifacts/<engine>_<backbone> or artifacts/ensemble_<method>."),
    out_file: Optional[Path] = typer.Option(None, "--out", metavar="FILE", help="Output .parquet or .csv "
                                            "[predictions.csv; predictions.parquet beyond 5,000 rows]."),
    tta: int = typer.Option(1, min=1, metavar="N", help="Test-time augmentation: average N views."),
    tta_kind: TtaKind = typer.Option("dihedral", help="dihedral: exact rotations by 90 degrees and mirrors (up to "
                                                      "8); rotate: N evenly spaced angles."),
    cumulative: bool = typer.Option(False, "--cumulative", help="Also write Kaggle-style cumulative fractions "
                                                                "(Class1.1 ...)."),
    batch_size: int = typer.Option(32, min=1, metavar="N", help="Images per batch."),
    workers: int = typer.Option(2, min=0, metavar="N", help="Decoding worker processes."),
    device: Device = typer.Option("auto", metavar="DEVICE", callback=_device_option, help=DEVICE_HELP),
    backend: Backend = typer.Option("auto", help="Loader backend (dali reads shard folders only)."),
    part_size: int = typer.Option(10_000, min=1, metavar="N", help="Images per part: each part is saved when done, "
                                                                   "so a killed run resumes."),
    images: Optional[Path] = typer.Option(None, metavar="DIR", help="Folder that a catalogue's relative image paths "
                                                                    "start from [the catalogue's folder]."),
    id_column: Optional[str] = typer.Option(None, metavar="NAME", help="A catalogue's id column [id_str, id, "
                                                                       "asset_id, ...]."),
    path_column: Optional[str] = typer.Option(None, metavar="NAME", help="A catalogue's image path column "
                                                                         "[file_loc, path, ...]."),
) -> None:
    """Predict the 30 GZ2 vote fractions for new galaxy images with any finished model. Unreadable files get a row
    with the reason in the `error` column; the rest go on. Under `torchrun` the processes share the work."""
    from gzpipe.predict import PredictConfig, run_predict

    run_predict(PredictConfig(model=str(model), inputs=[str(p) for p in inputs],
                              out=str(out_file) if out_file else None, tta=tta, tta_kind=tta_kind,
                              cumulative=cumulative, batch_size=batch_size, workers=workers, device=device,
                              backend=backend, part_size=part_size, images=str(images) if images else None,
                              id_column=id_column, path_column=path_column))


@app.command()
def study(
    preset: Optional[Literal["demo", "real", "full"]] = typer.Option(
        None, help="demo: synthetic, CPU, ~10 min; real: the 800-galaxy sample ($GZPIPE_SHARED), < 30 min; full: "
                   "the original hyperparameters, for a GPU."),
    config: Optional[Path] = typer.Option(None, metavar="FILE", help="YAML: a preset and overrides of data, shard, "
                                          "train, boost, backbones, engines, methods, out."),
    out_dir: Optional[str] = typer.Option(None, "--out", metavar="DIR", help="Artifacts folder [the preset's]."),
    force: Optional[str] = typer.Option(None, metavar="STAGES", help="Re-do these stages even where finished: a "
                                        "comma list of synth, shard, train, features, boost, ensemble, report, or "
                                        "all."),
    restart: bool = typer.Option(False, "--restart", help="Same as --force all: everything from scratch."),
) -> None:
    """Run the whole model comparison, skipping what is finished and current, re-doing what is out of date and
    resuming what was interrupted. The resolved configuration is saved as <out>/study_config.yaml."""
    from gzpipe.report.collect import collect
    from gzpipe.study import STAGES, parse_stages, resolve_study, run_study

    stages = set(STAGES) if restart else parse_stages(force)
    cfg = resolve_study(preset, config, out_dir)
    run_study(cfg, stages)
    table, _, _ = collect(Path(cfg.out))
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
def demo(out_dir: Optional[str] = typer.Option(None, "--out", metavar="DIR", help="Artifacts folder "
                                                                                  "[artifacts].")) -> None:
    """Same as `gzpipe study --preset demo`."""
    study(preset="demo", config=None, out_dir=out_dir, force=None, restart=False)


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


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the command; every failure a user can fix ends as one line (see ``gzpipe.exits``)."""
    run_app(app, argv)


if __name__ == "__main__":
    main()
