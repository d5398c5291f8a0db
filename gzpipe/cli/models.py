"""Commands that train models: train, features, boost, ensemble."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Optional

import typer

from gzpipe.cli.common import (BACKBONE_NAMES, DEVICE_HELP, Amp, Backend, Device, Engine, Method, TtaKind,
                               _device_option, _positive, app)
from gzpipe.errors import GzpipeError

@app.command()
def train(
    backbone: Optional[str] = typer.Option(None, metavar="NAME", help=f"One of {BACKBONE_NAMES} [the "
                                           "architecture --weights names: a Hugging Face folder's config.json, an "
                                           "export, a run, a Zoobot checkpoint]."),
    shards: Path = typer.Option(..., metavar="DIR", help="Shard folder written by `gzpipe shard`."),
    out_dir: Optional[Path] = typer.Option(None, "--out", metavar="DIR", help="Artifacts folder; the run goes to "
                                                                              "OUT/<backbone>/ [artifacts]."),
    config: Optional[Path] = typer.Option(None, metavar="FILE", help="JSON file of options (the flags' names with "
                                                                     "underscores); flags win."),
    epochs: Optional[int] = typer.Option(None, min=1, metavar="N", help="Maximum epochs [250]."),
    batch_size: Optional[int] = typer.Option(None, min=1, metavar="N", help="Batch size per process [32]."),
    lr: Optional[float] = typer.Option(None, metavar="X", callback=_positive, help="Peak learning rate of AdamW "
                                                                                   "[1e-3 from random initialisation"
                                                                                   ", 3e-4 from --weights or "
                                                                                   "--pretrained]."),
    weight_decay: Optional[float] = typer.Option(None, min=0.0, metavar="X", help="AdamW weight decay [0.05]."),
    warmup_epochs: Optional[float] = typer.Option(None, min=0.0, metavar="X", help="Linear warm-up before the cosine "
                                                                                   "decay, in epochs [3]."),
    patience: Optional[int] = typer.Option(None, min=1, metavar="N", help="Early stopping: epochs without a better "
                                                                          "validation loss [12]."),
    image_size: Optional[int] = typer.Option(None, min=16, metavar="PX", help="Input size [224]."),
    crop: Optional[float] = typer.Option(None, min=0.2, max=1.0, metavar="SHARE", help=(
        "Share of the image side the model sees, a centred crop resized to --image-size (training draws 7/8 to 9/8 "
        "of it) [0.8]. GZ2 cutouts hold the galaxy in their central third to half: 0.5 gives it 1.6x the pixels "
        "at the same cost (shard with --resize at least --image-size / crop).")),
    backend: Optional[Backend] = typer.Option(None, help="Loader backend [auto]."),
    workers: Optional[int] = typer.Option(None, min=0, metavar="N", help="Loader workers [2]."),
    device: Optional[Device] = typer.Option(None, metavar="DEVICE", callback=_device_option,
                                            help=DEVICE_HELP + " [auto]"),
    seed: Optional[int] = typer.Option(None, min=0, metavar="N", help="Seed of weights, shuffling and "
                                                                      "augmentation [42]."),
    amp: Optional[Amp] = typer.Option(None, help="CUDA precision (fp16 uses a GradScaler); the CPU always runs "
                                                 "fp32 [bf16]."),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last",
                                                 help="Memory format [the backbone's default]."),
    head: Optional[Literal["sigmoid", "softmax"]] = typer.Option(None, help="Output activation; softmax is per "
                                                                            "task [sigmoid for debiased targets]."),
    loss: Optional[Literal["l1", "mse", "bce", "cumulative", "mse_reach"]] = typer.Option(None, help=(
        "Loss over valid entries only; l1 is the MAE the study reports, cumulative the squared error of the "
        "cumulative fractions that Kaggle's metric takes the root of, mse_reach the squared error with each answer "
        "weighted by the share of volunteers who reached its question [l1].")),
    select: Optional[Literal["loss", "kaggle"]] = typer.Option(None, help=(
        "What the best epoch and early stopping follow: the val loss, or the val Kaggle RMSE (cumulative fractions) "
        "on the shards' random-draw val galaxies (gzpipe shard --random-draw; all val galaxies without one) [loss].")),
    catalogue_heads: Optional[bool] = typer.Option(None, "--catalogue-heads/--no-catalogue-heads", help=(
        "A head per catalogue format of the shards (kaggle, hart16, ...) on one shared encoder: each galaxy trained "
        "and scored through its own catalogue's head, new images through the one `predict --catalogue` picks [off].")),
    zero_init_residual: Optional[bool] = typer.Option(None, "--zero-init-residual/--no-zero-init-residual",
                                                      help="From random initialisation, start every residual "
                                                           "block as the identity [on]."),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile the model."),
    weights: Optional[Path] = typer.Option(None, metavar="PATH", help="Weights to start from (their classifier is "
                                           "ignored), checked against the network before anything is written: a "
                                           ".pth / .bin state dict, a .safetensors file, a Lightning .ckpt (Zoobot's "
                                           "FinetuneableZoobotTree and ZoobotTree; read without running its code), a "
                                           "Hugging Face folder (timm's save_for_hf, a Zoobot encoder, a hub cache "
                                           "entry), a `gzpipe export` or a gzpipe run folder. A 1-channel encoder "
                                           "(Zoobot's greyscale ones) trains on greyscale input."),
    channels: Optional[int] = typer.Option(None, min=1, max=3, metavar="N", help="Input channels, 3 (RGB) or 1 "
                                           "(greyscale: the luma of each picture; timm architectures only) [what "
                                           "--weights was made for, else 3]."),
    pretrained: Optional[bool] = typer.Option(None, "--pretrained", help="Start from the published ImageNet "
                                              "weights, torchvision's or timm's own (needs internet)."),
    restart: bool = typer.Option(False, "--restart", help="Start over, ignoring existing checkpoints: the new run "
                                 "is trained beside the existing one and replaces it only when complete (a failed "
                                 "or interrupted --restart leaves the existing run as it was; the same command "
                                 "continues it)."),
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
    drop_path: Optional[float] = typer.Option(None, min=0.0, max=0.99, metavar="P", help="Stochastic depth: drop "
                                              "residual branches in training with this rate (timm's drop_path_rate, "
                                              "e.g. 0.1; torchvision's stochastic_depth_prob) [the architecture's "
                                              "own: 0 in timm]."),
    tta_kind: Optional[TtaKind] = typer.Option(None, help="dihedral: exact 90-degree rotations and mirrors (up to "
                                                          "8); angles: those 8 at N / 8 angles each warped from "
                                                          "the stored image (N = 16, 32 ...); rotate: N evenly "
                                                          "spaced angles of the plain view [dihedral]."),
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
                  patience=patience, image_size=image_size, crop=crop, backend=backend, workers=workers, device=device, seed=seed,
                  amp=amp, channels_last=channels_last, head=head, loss=loss, compile=compile,
                  weights=str(weights) if weights else None, pretrained=pretrained, mode=mode,
                  checkpoint_minutes=checkpoint_minutes, stop_after=stop_after, tta=tta, tta_kind=tta_kind,
                  ema_decay=ema_decay, zero_init_residual=zero_init_residual, channels=channels, select=select,
                  catalogue_heads=catalogue_heads, drop_path=drop_path)
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
    force: bool = typer.Option(False, help="Re-extract even when up to date (the new features replace the old "
                                           "ones only when every split is done)."),
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
    max_bin: int = typer.Option(64, min=2, max=1024, metavar="N", help="Histogram bins per feature (64 is 2-4x "
                                                                       "faster than 256 here)."),
    colsample: float = typer.Option(0.25, min=0.01, max=1.0, metavar="F", help="Share of features sampled per "
                                                                               "tree."),
    subsample: float = typer.Option(1.0, min=0.01, max=1.0, metavar="F", help="Share of train rows sampled per "
                                                                             "tree."),
    pca: Optional[int] = typer.Option(None, min=1, metavar="K", help="First reduce the features to K principal "
                                      "components, fitted on the train split (kept with the model)."),
    by_catalogue: Optional[bool] = typer.Option(
        None, "--by-catalogue/--no-by-catalogue", help="Give the booster one 0/1 input per catalogue format of the "
        "shards (kaggle:, hart16: ids), so it learns each catalogue's labels as they are rather than a mix (two "
        "catalogues can label one galaxy differently: `gzpipe shard` says so); val and test galaxies are scored in "
        "their own catalogue's, `gzpipe predict --catalogue` picks one [on when the shards join several formats]."),
    max_depth: Optional[int] = typer.Option(None, min=1, max=64, metavar="N", help="XGBoost tree depth [6]; its "
                                            "histogram cache is held within a quarter of the free memory."),
    num_leaves: Optional[int] = typer.Option(None, min=2, max=131072, metavar="N", help="LightGBM leaves per tree "
                                             "[31]; no more are asked for than the train rows fill (rows / "
                                             "min_data_in_leaf), and their histograms are held within a quarter of "
                                             "the free memory."),
    multi_strategy: Optional[Literal["one_output_per_tree", "multi_output_tree"]] = typer.Option(
        None, help="XGBoost's multi-output trees [one_output_per_tree: faster, measured]."),
    param: list[str] = typer.Option([], "--param", metavar="KEY=VALUE", help="One of the engine's own parameters "
                                    "(repeatable): lightgbm num_leaves, min_data_in_leaf, bin_sample_rows (rows "
                                    "sampled to place bin edges); xgboost max_depth, multi_strategy; a plug-in "
                                    "engine's own; or seed [42], threads [0: all cores], pca_fit_rows [20000]. E.g. "
                                    "--param min_data_in_leaf=20."),
    device: Device = typer.Option("auto", metavar="DEVICE", callback=_device_option, help=DEVICE_HELP),
    force: bool = typer.Option(False, help="Retrain a finished booster: every option is checked first, and the new "
                                           "booster replaces the old one only when complete."),
    dask_scheduler: Optional[str] = typer.Option(None, metavar="ADDRESS", help="Train with xgboost.dask / "
                                                 "lightgbm.dask on this running Dask scheduler (tcp://host:port)."),
) -> None:
    """Gradient-boosted trees on a backbone's cached features, predicting the 30 targets (early-stopped on val,
    evaluated on test). Output: <out>/<engine>_<backbone>/."""
    from gzpipe.boost import BoostConfig, run_boost
    from gzpipe.boost.stage import split_param_option

    common, params = split_param_option(_key_values(param), engine)
    params.update({k: v for k, v in (("max_depth", max_depth), ("num_leaves", num_leaves),
                                     ("multi_strategy", multi_strategy)) if v is not None})
    run_boost(BoostConfig(engine=engine, backbone=backbone, out=str(out_dir), rounds=rounds,
                          early_stopping=early_stopping, learning_rate=learning_rate, max_bin=max_bin,
                          colsample=colsample, subsample=subsample, pca=pca, by_catalogue=by_catalogue,
                          device=device, force=force,
                          objective=objective, dask_scheduler=dask_scheduler, params=params, **common))


@app.command()
def ensemble(
    method: Method = typer.Option(..., help="equal; accuracy (weights ~ val accuracy); inverse_mae (weights ~ 1 / val "
                                            "MAE); stacked (per-target weights over backbones and boosters)."),
    out_dir: Path = typer.Option(Path("artifacts"), "--out", metavar="DIR", help="Artifacts folder."),
    backbones: Optional[str] = typer.Option(None, metavar="LIST", help="equal, accuracy, inverse_mae: comma list "
                                            "of backbones [every finished one]."),
    members: Optional[str] = typer.Option(None, metavar="LIST", help="stacked: comma list of run names (backbones "
                                          "and boosters) [every finished one]."),
    force: bool = typer.Option(False, help="Refit a finished ensemble (the new one replaces it only when "
                                           "complete)."),
) -> None:
    """Combine finished models; weights from the validation split only, evaluated on test. A finished ensemble of
    the same members is skipped; one of other members is kept until --force."""
    from gzpipe.ensemble import EnsembleConfig, run_ensemble

    run_ensemble(EnsembleConfig(method=method, out=str(out_dir), backbones=backbones, members=members, force=force))

