"""Training configuration: the study's defaults, then the backbone's own (``BackboneSpec.defaults``), then a
config file, then flags.

The resolved config is saved as ``config.json`` in every run folder and inside every checkpoint.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from gzpipe.configs import from_mapping
from gzpipe.device import AMP, check_device_name
from gzpipe.errors import GzpipeError
from gzpipe.fileio import check_out_folder
from gzpipe.loaders.presets import DEFAULT_CROP, check_crop
from gzpipe.models import BACKBONES, resolve_name
from gzpipe.models.heads import HEADS

# The original study: batch 32, learning rate 3e-4, up to 250 epochs, patience 12. A backbone that needs other
# values says so in its registry entry (``BackboneSpec.defaults``); every other key falls back to these.
STUDY_DEFAULTS = {"batch_size": 32, "lr": 3e-4, "epochs": 250, "patience": 12, "weight_decay": 0.05,
                  "warmup_epochs": 3}
# The study's 3e-4 is for starting from weights (--weights, --pretrained). From random initialisation the default is
# 1e-3: on the real sample's val split (resnet50, 15 epochs at 64 px, batch 32, 4 seeds) it lowered val MAE by 1.5%
# on average (benchmarks/RESULTS.md, "The 0.60 goal: sharp shards and the learning rate from scratch").
SCRATCH_LR = 1e-3

MODES = ("resume", "restart", "skip")
LOSSES = ("l1", "mse", "bce", "cumulative", "mse_reach")
SELECT = ("loss", "kaggle")
# Keys that change what a checkpoint means: resuming with other values would silently mix two runs.
RESUME_KEYS = ("backbone", "shards", "batch_size", "lr", "weight_decay", "warmup_epochs", "epochs", "image_size",
               "crop", "seed", "head", "loss", "channels_last", "grad_clip", "weights", "pretrained", "ema_decay",
               "zero_init_residual", "channels", "select", "catalogue_heads", "drop_path")
# What a key missing from an older run's saved config meant when that run was trained (before the key existed).
SAVED_BEFORE = {"zero_init_residual": False, "loss": "mse", "crop": DEFAULT_CROP, "channels": 3, "select": "loss",
                "catalogue_heads": False, "drop_path": None}
# Keys a user sets (a study's `train:` section, a --config file); the rest are fixed by the command.
NOT_USER_KEYS = ("backbone", "shards", "out", "mode", "heads", "device_defaults")


@dataclass
class TrainConfig:
    backbone: str
    shards: str
    out: str = "artifacts"
    epochs: int = 250
    batch_size: int = 32
    eval_batch_size: int | None = None
    lr: float = 3e-4
    weight_decay: float = 0.05
    warmup_epochs: float = 3
    patience: int = 12
    min_delta: float = 0.0
    grad_clip: float = 1.0
    image_size: int = 224
    crop: float = DEFAULT_CROP  # the share of the image side the model sees, resized to image_size
    backend: str = "auto"
    workers: int = 2
    device: str = "auto"
    seed: int = 42
    compile: bool = False
    amp: str = "bf16"
    channels_last: bool | None = None
    head: str | None = None
    loss: str = "l1"
    weights: str | None = None
    pretrained: bool = False
    channels: int | None = None  # input channels: 3 (RGB) or 1 (greyscale); None: what --weights was made for, else 3
    # what the best epoch and early stopping follow: the val loss, or the val Kaggle RMSE (cumulative fractions,
    # every known value) on the val galaxies of the shards' random draw (``gzpipe shard --random-draw``; all val
    # galaxies where there is none): the metric the study is judged by, on the galaxies it is judged on
    select: str = "loss"
    # a head per catalogue format of the train split on one shared encoder (gzpipe.models.heads.CatalogueHeads);
    # ``heads`` is what it resolved to when training began (the formats, the default first), not set by a user
    catalogue_heads: bool = False
    heads: list | None = None
    device_defaults: dict | None = None  # what the GPU's defaults set (``gpu_defaults``), recorded with the run
    mode: str = "resume"
    checkpoint_minutes: float = 5.0
    stop_after: int | None = None
    shuffle_buffer: int = 1000
    tta: int = 1  # views averaged when the finished model is evaluated (and by `features`); 1 = none
    tta_kind: str = "dihedral"
    ema_decay: float | None = None  # keep, validate and save an exponential moving average of the weights
    zero_init_residual: bool = True  # from random initialisation: every residual block starts as the identity
    # stochastic depth: the rate at which residual branches are dropped in training (timm's drop_path_rate, rising
    # over the blocks; torchvision's stochastic_depth_prob); None: the architecture's own (0 in timm)
    drop_path: float | None = None

    @property
    def run_dir(self) -> Path:
        return Path(self.out) / self.backbone

    def to_dict(self) -> dict:
        return asdict(self)


def saved_value(saved: dict, key: str):
    """``key`` of a run's saved config, reading an older run's missing key as what it meant then."""
    return saved.get(key, SAVED_BEFORE.get(key))


def defaults_for(backbone: str, from_weights: bool = False) -> dict:
    """The study's defaults (with ``SCRATCH_LR`` unless weights are loaded) overridden by the backbone's own."""
    study = STUDY_DEFAULTS if from_weights else {**STUDY_DEFAULTS, "lr": SCRATCH_LR}
    return {**study, **BACKBONES[resolve_name(backbone)].defaults}


def read_config_file(path: str | Path) -> dict:
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise GzpipeError(f"config file not found: {p}") from None
    except ValueError as e:
        raise GzpipeError(f"config file {p} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise GzpipeError(f"config file {p} must hold a JSON object of option names to values")
    data.pop("backbone", None)
    return data


def resolve(backbone: str | None, shards: str, config_file: str | Path | None = None, check_paths: bool = True,
            **flags) -> TrainConfig:
    """Defaults < config file (JSON object of the same keys) < explicit flags (None = not given). ``backbone`` may
    be None when the weights name their architecture (a Hugging Face folder, an export, a run, Zoobot's
    checkpoints); the input channels default to what the weights were made for."""
    chosen: dict = read_config_file(config_file) if config_file is not None else {}
    chosen.update({k: v for k, v in flags.items() if v is not None and k not in ("out", "mode")})
    source = _weights_source(chosen.get("weights"), check_paths)
    name = _backbone_of(backbone, source)
    if source is not None and chosen.get("channels") is None:
        from gzpipe.models.weights import channels_of

        channels = source.channels or channels_of(source, BACKBONES[name])
        if channels and channels != 3:
            chosen["channels"] = channels
    values = {**defaults_for(name, from_weights=bool(chosen.get("weights") or chosen.get("pretrained"))), **chosen}
    where = f"config file {config_file}" if config_file is not None else "train options"
    values.update(gpu_defaults(values, chosen))
    cfg = from_mapping(TrainConfig, {k: v for k, v in values.items() if k != "device_defaults"}, where,
                       exclude=NOT_USER_KEYS, backbone=name, shards=str(shards),
                       **{k: flags[k] for k in ("out", "mode") if flags.get(k) is not None})
    cfg.device_defaults = values.get("device_defaults")
    validate(cfg, check_paths)
    if source is not None and check_paths:  # the weights fit the network, before a single file is written
        from gzpipe.models.weights import check

        check(source, BACKBONES[cfg.backbone], cfg.channels or 3)
    return cfg


# On a GPU the CPU's defaults starve it (batch 32 and 2 loader workers left an H100 idle between steps): where a run
# trains on CUDA and the user set none of these, batch 256 with the learning rate scaled by the square root of the
# batch ratio (the rule for Adam-type optimisers: Malladi et al. 2022, "On the SDEs and Scaling Rules for Adaptive
# Gradient Algorithms"), and this rank's share of the CPU cores as loader workers. Fused AdamW and cuDNN's autotuner
# are always on there (gzpipe.train.run). torch.compile stays off until the GPU suite has measured that it pays.
GPU_BATCH = 256


def gpu_defaults(values: dict, chosen: dict) -> dict:
    """The GPU's defaults for the keys the user did not set (none on the CPU), and ``device_defaults``: what was set."""
    import os

    import torch

    device = str(values.get("device") or "auto")
    if device == "cpu" or not torch.cuda.is_available():
        return {}
    from gzpipe.info import cpu_count

    out = {}
    if "batch_size" not in chosen:
        out["batch_size"] = GPU_BATCH
        if "lr" not in chosen:
            out["lr"] = float(values["lr"]) * math.sqrt(GPU_BATCH / float(values["batch_size"]))
    if "workers" not in chosen:
        ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
        out["workers"] = max(2, min(16, cpu_count() // ranks - 1))
    return {**out, "device_defaults": dict(out)} if out else {}


def _weights_source(weights, check_paths: bool):
    if not weights or not check_paths:
        return None
    from gzpipe.models.weights import locate

    return locate(weights)


def _backbone_of(backbone: str | None, source) -> str:
    """``--backbone``, or the architecture the weights name; both given, they must agree."""
    named = source.architecture if source is not None else None
    if backbone is None:
        if named is None:
            raise GzpipeError("--backbone is needed" + (f": --weights {source.given} does not name its architecture"
                                                        if source is not None else ""))
        return resolve_name(named)
    name = resolve_name(backbone)
    if named is not None and not _same_network(name, named):
        raise GzpipeError(f"--weights {source.given} holds a {named} ({source.describe()}), not {name}; leave "
                          f"--backbone out to train the weights' own architecture")
    return name


def _same_network(name: str, named: str) -> bool:
    """Whether a backbone takes the weights of the architecture a source names: the same name, or the same network
    under timm's and torchvision's names (timm's resnet50 keys are torchvision's)."""
    from gzpipe.models.timm_backbones import architecture

    spec = BACKBONES[name]
    return name == named or architecture(named) in {spec.weights_architecture, spec.torchvision_name, spec.name}


def warn_short_run(cfg: TrainConfig) -> None:
    """A warm-up longer than the run never reaches the peak learning rate: say so (once, when training starts)."""
    if cfg.warmup_epochs > cfg.epochs:
        warnings.warn(f"the warm-up ({cfg.warmup_epochs:g} epochs) is longer than the run ({cfg.epochs} epoch"
                      f"{'s' if cfg.epochs > 1 else ''}): the learning rate reaches only "
                      f"{100 * cfg.epochs / cfg.warmup_epochs:.0f}% of --lr; shorten --warmup-epochs", stacklevel=2)


def warn_upsampled_crop(cfg: TrainConfig, manifest: dict) -> None:
    """Shards stored smaller than the evaluation crop needs make every input an enlarged, blurred crop: say so, with
    the ``--resize`` that would not (the real sample's resnet50 at 64 px: val MAE 2% lower from 128 px shards than
    from 64 px ones, benchmarks/RESULTS.md)."""
    stored = manifest.get("stored_size")
    crop = cfg.crop
    if isinstance(stored, int) and stored * crop < cfg.image_size:
        need = math.ceil(cfg.image_size / crop)
        warnings.warn(f"the shards hold {stored} px images, so the centre crop ({crop:g} of the side, "
                      f"{stored * crop:.0f} px) is enlarged to --image-size {cfg.image_size}: inputs are blurred; "
                      f"shard with --resize {need} or more (or without --resize) for sharp ones", stacklevel=2)


def validate(cfg: TrainConfig, check_paths: bool = True) -> None:
    """Ranges and names; with ``check_paths`` also the shard folder and ``--out``."""
    def bad(msg: str):
        raise GzpipeError(msg)

    for key, low in (("epochs", 1), ("batch_size", 1), ("patience", 1), ("image_size", 16), ("workers", 0),
                     ("seed", 0), ("shuffle_buffer", 1)):
        if getattr(cfg, key) < low:
            bad(f"{key} must be at least {low}, got {getattr(cfg, key)}")
    for key in ("lr", "grad_clip"):
        if not getattr(cfg, key) > 0:
            bad(f"{key} must be positive, got {getattr(cfg, key)}")
    for key in ("weight_decay", "warmup_epochs", "min_delta", "checkpoint_minutes"):
        if getattr(cfg, key) < 0:
            bad(f"{key} must not be negative, got {getattr(cfg, key)}")
    if cfg.ema_decay is not None and not 0 < cfg.ema_decay < 1:
        bad(f"ema_decay must be in (0, 1), got {cfg.ema_decay}")
    if cfg.drop_path is not None and not 0 <= cfg.drop_path < 1:
        bad(f"drop_path must be in [0, 1), got {cfg.drop_path}")
    if cfg.eval_batch_size is not None and cfg.eval_batch_size < 1:
        bad("eval_batch_size must be at least 1")
    if cfg.mode not in MODES:
        bad(f"mode must be one of {', '.join(MODES)}")
    if cfg.amp not in AMP:
        bad(f"amp must be one of {', '.join(AMP)}, got {cfg.amp!r}")
    if cfg.loss not in LOSSES:
        bad(f"loss must be one of {', '.join(LOSSES)}, got {cfg.loss!r}")
    if cfg.select not in SELECT:
        bad(f"select must be one of {', '.join(SELECT)}, got {cfg.select!r}")
    if cfg.head is not None and cfg.head not in HEADS:
        bad(f"head must be one of {', '.join(HEADS)}, got {cfg.head!r}")
    check_device_name(cfg.device)
    check_crop(cfg.crop)
    from gzpipe.loaders.tta import check_tta

    check_tta(cfg.tta, cfg.tta_kind)
    from gzpipe.loaders import check_backend_name

    check_backend_name(cfg.backend)
    if cfg.weights and cfg.pretrained:
        bad("give either --weights PATH or --pretrained, not both")
    if cfg.channels is not None and cfg.channels not in (1, 3):
        bad(f"channels must be 1 (greyscale) or 3 (RGB), got {cfg.channels}")
    spec = BACKBONES[cfg.backbone]
    if cfg.channels == 1 and not spec.takes_channels:
        bad(f"{cfg.backbone} is built for RGB images; a 1-channel (greyscale) input needs a timm architecture "
            "(--backbone timm:NAME)")
    if spec.fixed_size and cfg.image_size != spec.fixed_size:
        bad(f"{cfg.backbone} takes {spec.fixed_size} px images only (its position table is fixed); give --image-size "
            f"{spec.fixed_size}, or a convolutional architecture for other sizes")
    if not check_paths:
        return
    check_out_folder(cfg.out)
    if not (Path(cfg.shards) / "manifest.json").exists():
        bad(f"no manifest.json in {cfg.shards}: pass --shards with a folder written by `gzpipe shard`")
