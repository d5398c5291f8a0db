"""Training configuration: per-backbone defaults in one table, overridden by a config file, then by flags.

The resolved config is saved as ``config.json`` in every run folder and inside every checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from gzpipe.errors import GzpipeError
from gzpipe.models import BACKBONES, resolve_name

# The original study: batch 32, learning rate 3e-4, up to 250 epochs, patience 12. One row per backbone so a
# backbone that needs other values changes one line; channels_last comes from the backbone registry.
_STUDY = {"batch_size": 32, "lr": 3e-4, "epochs": 250, "patience": 12, "weight_decay": 0.05, "warmup_epochs": 3}
DEFAULTS: dict[str, dict] = {
    "resnet50": dict(_STUDY),
    "efficientnet_v2_s": dict(_STUDY),
    "convnext_base": dict(_STUDY),
    "swin_v2_s": dict(_STUDY),
    "regnety_8gf": dict(_STUDY),
}
assert set(DEFAULTS) == set(BACKBONES)  # invariant: every registered backbone has a row

MODES = ("resume", "restart", "skip")
AMP = ("bf16", "fp16", "off")
# Keys that change what a checkpoint means: resuming with other values would silently mix two runs.
RESUME_KEYS = ("backbone", "shards", "batch_size", "lr", "weight_decay", "warmup_epochs", "epochs", "image_size",
               "seed", "head", "loss", "channels_last", "grad_clip", "weights", "pretrained")


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
    backend: str = "auto"
    workers: int = 2
    device: str = "auto"
    seed: int = 42
    compile: bool = False
    amp: str = "bf16"
    channels_last: bool | None = None
    head: str | None = None
    loss: str = "mse"
    weights: str | None = None
    pretrained: bool = False
    mode: str = "resume"
    checkpoint_minutes: float = 5.0
    stop_after: int | None = None
    shuffle_buffer: int = 1000

    @property
    def run_dir(self) -> Path:
        return Path(self.out) / self.backbone

    def to_dict(self) -> dict:
        return asdict(self)


def resolve(backbone: str, shards: str, config_file: str | Path | None = None, **flags) -> TrainConfig:
    """Table defaults < config file (JSON object of the same keys) < explicit flags (None = not given)."""
    name = resolve_name(backbone)
    values: dict = {"backbone": name, "shards": str(shards), **DEFAULTS[name]}
    known = {f.name for f in fields(TrainConfig)}
    if config_file is not None:
        p = Path(config_file)
        try:
            from_file = json.loads(p.read_text())
        except FileNotFoundError:
            raise GzpipeError(f"config file not found: {p}") from None
        except ValueError as e:
            raise GzpipeError(f"config file {p} is not valid JSON: {e}") from None
        if not isinstance(from_file, dict):
            raise GzpipeError(f"config file {p} must hold a JSON object of option names to values")
        unknown = sorted(set(from_file) - known)
        if unknown:
            raise GzpipeError(f"config file {p} has unknown keys: {', '.join(unknown)}")
        from_file.pop("backbone", None)
        values.update(from_file)
    values.update({k: v for k, v in flags.items() if v is not None})
    cfg = TrainConfig(**values)
    validate(cfg)
    return cfg


def validate(cfg: TrainConfig) -> None:
    def bad(msg: str):
        raise GzpipeError(msg)

    if cfg.epochs < 1:
        bad("--epochs must be at least 1")
    if cfg.batch_size < 1:
        bad("--batch-size must be at least 1")
    if not cfg.lr > 0:
        bad("--lr must be positive")
    if cfg.patience < 1:
        bad("--patience must be at least 1")
    if cfg.image_size < 16:
        bad("--image-size must be at least 16")
    if cfg.mode not in MODES:
        bad(f"mode must be one of {', '.join(MODES)}")
    if cfg.amp not in AMP:
        bad(f"--amp must be one of {', '.join(AMP)}")
    if cfg.loss not in ("mse", "bce"):
        bad("--loss must be mse or bce")
    if cfg.device not in ("auto", "cpu", "cuda") and not cfg.device.startswith("cuda:"):
        bad("--device must be auto, cpu or cuda")
    if cfg.weights and cfg.pretrained:
        bad("give either --weights PATH or --pretrained, not both")
    if Path(cfg.out).exists() and not Path(cfg.out).is_dir():
        bad(f"--out {cfg.out} is a file; give a folder for the runs")
    if not (Path(cfg.shards) / "manifest.json").exists():
        bad(f"no manifest.json in {cfg.shards}: pass --shards with a folder written by `gzpipe shard`")
