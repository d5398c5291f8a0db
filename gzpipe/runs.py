"""What a trained run *is*: one module owns the layout of every run folder, its completion marker, its
prediction files, the digests of what it was built from, and how a finished backbone is loaded.

Layout under an artifacts folder ``OUT``::

    OUT/<backbone>/                 kind "backbone": config.json, checkpoints/{latest,previous,best_model}.pth,
                                    metrics.json, training_curves.png, {val,test}_predictions.parquet,
                                    features/{train,val,test}.parquet + meta.json, inputs.json,
                                    training_complete.txt (written last)
    OUT/<engine>_<backbone>/        kind "booster": config.json (names the engine), the engine's model files,
                                    metrics.json, {val,test}_predictions.parquet, inputs.json, boost_complete.txt
    OUT/ensemble_<method>/          kind "ensemble": weights.json, metrics.json, {val,test}_predictions.parquet,
                                    inputs.json, ensemble_complete.txt

``inputs.json`` records the sha256 of every file a run was built from (the shards' manifest, the checkpoint, the
features, the members' predictions); ``changed_inputs`` tells whether any of them changed since, so a stale run
is never reused or reported without a word.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gzpipe import schema
from gzpipe.errors import GzpipeError
from gzpipe.fileio import atomic_open, local_path, sha256_file, write_json
from gzpipe.rerun import stale_line

BACKBONE, BOOSTER, ENSEMBLE = "backbone", "booster", "ensemble"
EXPORT = "export"  # a `gzpipe export` folder: a backbone as safetensors + config.json (gzpipe.export)
MARKERS = {BACKBONE: "training_complete.txt", BOOSTER: "boost_complete.txt", ENSEMBLE: "ensemble_complete.txt"}
CONFIG, METRICS, INPUTS, WEIGHTS = "config.json", "metrics.json", "inputs.json", "weights.json"
CHECKPOINTS, BEST = "checkpoints", "best_model.pth"
EVAL_SPLITS = ("val", "test")


# --- layout --------------------------------------------------------------------------------------------------

def backbone_dir(out: str | Path, backbone: str) -> Path:
    return Path(out) / backbone


def booster_dir(out: str | Path, engine: str, backbone: str) -> Path:
    return Path(out) / f"{engine}_{backbone}"


def ensemble_dir(out: str | Path, method: str) -> Path:
    return Path(out) / f"ensemble_{method}"


def best_checkpoint(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINTS / BEST


def features_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "features"


# --- completion ----------------------------------------------------------------------------------------------

FAILED = "failed.json"  # an unfinished run whose last attempt crashed: the error, and whether a retry can resume


def record_failure(run_dir: str | Path, error: BaseException) -> None:
    """Say in an unfinished run folder that its last attempt crashed (not stopped): the error, and whether it had a
    checkpoint to resume from. Without one, the same command starts over the same way and would crash the same
    way, so nobody is told to just run it again."""
    d = Path(run_dir)
    msg = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
    write_json(d / FAILED, {"error": f"{type(error).__name__}: {msg}" if msg else type(error).__name__,
                            "checkpoint": (d / CHECKPOINTS / "latest_checkpoint.pth").exists()})


def failure_of(run_dir: str | Path) -> dict | None:
    try:
        return json.loads((Path(run_dir) / FAILED).read_text())
    except (OSError, ValueError):
        return None


def kind_of(run_dir: str | Path) -> str | None:
    """The kind of a *finished* run folder, or None."""
    d = Path(run_dir)
    for kind, marker in MARKERS.items():
        if (d / marker).exists():
            return kind
    return None


def is_complete(run_dir: str | Path, kind: str) -> bool:
    return (Path(run_dir) / MARKERS[kind]).exists()


def mark_complete(run_dir: str | Path, kind: str, line: str) -> None:
    """Written last: a run counts as finished only once every other file is in place."""
    with atomic_open(Path(run_dir) / MARKERS[kind], "w") as f:
        f.write(line.rstrip("\n") + "\n")


def unmark(run_dir: str | Path, kind: str) -> None:
    (Path(run_dir) / MARKERS[kind]).unlink(missing_ok=True)


def read_json(run_dir: str | Path, name: str) -> dict:
    p = Path(run_dir) / name
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise GzpipeError(f"{p} is missing; the run folder is incomplete (re-run the stage that writes it)") from None
    except ValueError as e:
        raise GzpipeError(f"{p} is not valid JSON ({e}); re-run the stage that writes it") from None


def trained_config(run_dir: str | Path) -> dict:
    """A backbone run's training config: its ``config.json``, else the one inside its best checkpoint."""
    d = Path(run_dir)
    if (d / CONFIG).exists():
        return read_json(d, CONFIG)
    from gzpipe.train import checkpoint as ckpt

    try:
        return ckpt.load(best_checkpoint(d))["config"]
    except FileNotFoundError:
        raise GzpipeError(f"no trained model in {d}; run `gzpipe train --backbone {d.name}` first") from None


def shards_of(run_dir: str | Path) -> str:
    """The shard folder a run's predictions come from: a backbone's own, a booster's backbone's."""
    d = Path(run_dir)
    cfg = read_json(d, CONFIG)
    if "shards" in cfg:
        return cfg["shards"]
    if "backbone" in cfg:
        return read_json(d.parent / cfg["backbone"], CONFIG)["shards"]
    raise GzpipeError(f"{d / CONFIG} names no shards and no backbone")


# --- predictions ---------------------------------------------------------------------------------------------

def write_predictions(run_dir: str | Path, split: str, ids: list[str], pred: np.ndarray) -> None:
    """``<split>_predictions.parquet``: ``id`` and the 30 targets (float32), one row per galaxy."""
    df = pd.DataFrame(np.asarray(pred, dtype=np.float32), columns=list(schema.TARGET_NAMES))
    df.insert(0, "id", [str(i) for i in ids])
    with atomic_open(Path(run_dir) / f"{split}_predictions.parquet", "wb") as f:
        df.to_parquet(f, index=False)


def predictions_path(run_dir: str | Path, split: str) -> Path:
    return Path(run_dir) / f"{split}_predictions.parquet"


def read_predictions(run_dir: str | Path, split: str) -> pd.DataFrame:
    """A frame indexed by id with the 30 target columns."""
    p = predictions_path(run_dir, split)
    if not p.exists():
        raise GzpipeError(f"{p} not found; the run in {Path(run_dir)} is unfinished")
    return pd.read_parquet(local_path(p)).set_index("id")


# --- inputs: what a run was built from -----------------------------------------------------------------------

def _stored_path(path: Path, run_dir: Path) -> str:
    """Relative to the artifacts folder when inside it (so the folder can move as a whole), else absolute."""
    base = run_dir.resolve().parent
    p = path.resolve()
    try:
        return str(p.relative_to(base))
    except ValueError:
        return str(p)


def _real_path(stored: str, run_dir: Path) -> Path:
    p = Path(stored)
    return p if p.is_absolute() else run_dir.resolve().parent / p


@functools.lru_cache(maxsize=256)
def _digest_cached(path: str, mtime_ns: int, size: int) -> str:
    return sha256_file(path)


def digest(path: str | Path) -> str:
    """sha256 of a file, computed once per (path, mtime, size) in this process (checkpoints are large)."""
    st = os.stat(path)
    return _digest_cached(str(Path(path).resolve()), st.st_mtime_ns, st.st_size)


def input_record(paths: dict[str, str | Path], run_dir: str | Path) -> dict:
    d = Path(run_dir)
    return {label: {"path": _stored_path(Path(p), d), "sha256": digest(p)} for label, p in paths.items()}


def record_inputs(run_dir: str | Path, paths: dict[str, str | Path]) -> dict:
    """Write ``inputs.json``: the digest of every file the run is built from."""
    rec = input_record(paths, run_dir)
    write_json(Path(run_dir) / INPUTS, rec)
    return rec


SHARDS_INPUT = "shards"  # the label of a backbone's training data in its inputs.json


def changed_data(run_dir: str | Path) -> list[str]:
    """Whether a backbone's training data changed (not its --weights file): what makes a finished or half-finished
    training run out of date."""
    return changed_inputs(run_dir, labels=lambda label: label == SHARDS_INPUT)


def changed_inputs(run_dir: str | Path, labels=None, missing_ok: bool = False) -> list[str]:
    """Descriptions of the inputs that differ from the ones the run was built from ([] when current, or when the
    run predates input records). ``labels``: only inputs whose label passes this test; ``missing_ok``: an input
    that is gone is not reported (only one that has changed)."""
    d = Path(run_dir)
    p = d / INPUTS
    if not p.exists():
        return []
    try:
        rec = json.loads(p.read_text())
    except ValueError:
        return [f"its {INPUTS} is unreadable"]
    out = []
    for label, r in rec.items():
        if labels is not None and not labels(label):
            continue
        f = _real_path(r["path"], d)
        if not f.exists():
            if not missing_ok:
                out.append(f"{label} ({f}) is gone")
        elif digest(f) != r["sha256"]:
            out.append(f"{label} ({f}) has changed")
    return out


# --- finding runs --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunInfo:
    name: str
    kind: str
    dir: Path


def finished_runs(out: str | Path) -> list[RunInfo]:
    """Every finished run folder directly under ``out``, sorted by name."""
    root = Path(out)
    if not root.is_dir():
        return []
    runs = []
    # hidden folders are replacements being built (``fileio.staging_dir``), never finished runs
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        kind = kind_of(d)
        if kind is not None:
            runs.append(RunInfo(d.name, kind, d))
    return runs


def model_kind(run_dir: str | Path) -> str:
    """The kind of a finished model folder; otherwise a one-line error that says what the folder is and what to
    do: an unfinished run, an artifacts folder (listing the models inside), or no gzpipe folder at all."""
    d = Path(run_dir)
    if not d.exists():
        raise GzpipeError(f"model folder not found: {d}")
    if not d.is_dir():
        raise GzpipeError(f"--model {d} is a file; give a run folder such as artifacts/resnet50")
    kind = kind_of(d)
    if kind is not None:
        return kind
    from gzpipe.export import is_export

    if is_export(d):
        return EXPORT
    if (d / CHECKPOINTS).is_dir() or (d / CONFIG).exists():
        try:
            cfg = json.loads((d / CONFIG).read_text())
        except (OSError, ValueError):
            cfg = {}
        stage = ("boost" if "engine" in cfg else "ensemble" if "method" in cfg
                 else "train" if (d / CHECKPOINTS).is_dir() or "backbone" in cfg else None)
        command = f"run the same `gzpipe {stage}` command again" if stage else "re-run the stage that wrote it"
        failed = failure_of(d)
        if failed and not failed.get("checkpoint"):
            raise GzpipeError(f"{d} is an unfinished run whose training crashed before its first checkpoint "
                              f"({failed['error']}); the same command would start over and crash the same way: fix "
                              "the cause (the error above), then train it again (--restart), then predict")
        if failed:
            raise GzpipeError(f"{d} is an unfinished run whose training crashed ({failed['error']}); fix the cause, "
                              f"then {command} to resume it from its last checkpoint, then predict")
        raise GzpipeError(f"{d} is an unfinished run (it was stopped before it completed); {command} to finish it, "
                          "then predict")
    inside = finished_runs(d)
    if inside:
        names = ", ".join(r.name for r in inside[:12]) + (" ..." if len(inside) > 12 else "")
        raise GzpipeError(f"{d} is an artifacts folder, not one model; pick one of the {len(inside)} models in it "
                          f"(e.g. --model {inside[0].dir}): {names}")
    raise GzpipeError(f"{d} is not a trained gzpipe model (no {MARKERS[BACKBONE]}, {MARKERS[BOOSTER]} or "
                      f"{MARKERS[ENSEMBLE]} in it)")


def stale_message(run_dir: str | Path, changes: list[str], fix: str) -> str:
    return stale_line(Path(run_dir).name, changes, fix)


# --- loading a finished backbone -----------------------------------------------------------------------------

@dataclass
class TrainedBackbone:
    """A finished backbone, ready for inference on ``device`` exactly as it was trained: its own image size and
    head, channels-last where that is the default, autocast on CUDA."""

    name: str
    run_dir: Path
    config: dict
    model: object  # gzpipe.models.GZModel, in eval mode on ``device``
    device: object
    channels_last: bool
    autocast: object
    checkpoint: Path
    tasks_trained: list | None = None  # the questions it had labels for (None: recorded by none, all of them)
    input: dict | None = None  # how its images were made 8-bit (``input_of_shards``; None: recorded by none)

    @property
    def stretch(self) -> str:
        """The stretch its training images were made 8-bit with (``gzpipe.pixels.stretch``): predict applies it."""
        from gzpipe.pixels import DEFAULT_STRETCH

        return (self.input or {}).get("stretch") or DEFAULT_STRETCH

    @property
    def stored(self) -> tuple[int | None, int]:
        """(side, JPEG quality) its training images were stored at by `gzpipe shard --resize`; side None: as given
        (or recorded by none). Predict stores a new image file the same way before the view is cut from it."""
        inp = self.input or {}
        return inp.get("stored_size"), int(inp.get("quality") or 90)

    @property
    def image_size(self) -> int:
        return int(self.config["image_size"])

    @property
    def crop(self) -> float:
        """The share of the image side it was trained to see (runs from before ``crop`` existed: the default)."""
        from gzpipe.loaders.presets import DEFAULT_CROP

        return float(self.config.get("crop") or DEFAULT_CROP)

    @property
    def channels(self) -> int:
        """Input channels: 3 (RGB), or 1 for a greyscale encoder."""
        return int(self.config.get("channels") or 3)

    @property
    def view(self) -> tuple[int, float, int]:
        """(image size, crop, channels): what an input must be made into for this model."""
        return self.image_size, self.crop, self.channels

    def _input(self, x):
        import torch

        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x.contiguous()

    @property
    def heads(self) -> list[str]:
        """The catalogue formats it has a head each for (the default first); [] for one head."""
        return list(self.config.get("heads") or [])

    def features_and_predictions(self, x, catalogues=None):
        """A normalised N x C x S x S batch -> (features N x width, predictions N x 30), float32 on the device.
        ``catalogues``: for a model with a head per catalogue, each row's catalogue format (else its default head)."""
        import torch

        with torch.inference_mode(), self.autocast():
            f = self.model.features(self._input(x))
            idx = self.model.catalogue_index(catalogues) if catalogues is not None else None
            p = self.model.head(f, idx.to(f.device)) if idx is not None else self.model.head(f)
        return f.float(), p.float()


def load_trained(run_dir: str | Path, device=None, amp: str | None = None) -> TrainedBackbone:
    """The best checkpoint of a backbone run, loaded with the config it was trained with."""
    import torch

    from gzpipe.device import precision, resolve_device
    from gzpipe.models import BACKBONES, create_model
    from gzpipe.train import checkpoint as ckpt

    d = Path(run_dir)
    best = best_checkpoint(d)
    if not best.exists():
        raise GzpipeError(f"no trained model at {best}; run `gzpipe train --backbone {d.name}` first")
    dev = device if isinstance(device, torch.device) else resolve_device(device or "auto")
    state = ckpt.load(best)
    cfg = state["config"]
    if cfg["backbone"] not in BACKBONES:
        from gzpipe.models import resolve_name

        try:
            resolve_name(cfg["backbone"])  # a timm: backbone registers itself here
        except GzpipeError:
            raise GzpipeError(f"{d} holds a {cfg['backbone']!r} model, a backbone not registered in this gzpipe; "
                              f"register it (gzpipe.models.register) before loading") from None
    model = create_model(cfg["backbone"], cfg["head"], channels=int(cfg.get("channels") or 3), heads=cfg.get("heads"))
    model.load_state_dict(state["model"])
    model.eval().to(dev)
    spec = BACKBONES[cfg["backbone"]]
    cl = spec.channels_last(dev.type) if cfg.get("channels_last") is None else bool(cfg["channels_last"])
    trained_on = state.get("device_type")
    if trained_on and trained_on != dev.type:  # another device type: its own default memory format
        cl = spec.channels_last(dev.type)
    if cl:
        model = model.to(memory_format=torch.channels_last)
    try:
        metrics = json.loads((d / METRICS).read_text())
    except (OSError, ValueError):
        metrics = {}
    return TrainedBackbone(cfg["backbone"], d, cfg, model, dev, cl, precision(dev, amp or cfg.get("amp", "bf16")),
                           best, metrics.get("tasks_trained"), recorded_input(metrics.get("input"), cfg.get("shards")))


def recorded_input(recorded: dict | None, shards) -> dict | None:
    """A run's ``input`` as its metrics.json recorded it; one recorded before the stored size was (2026-12-07)
    takes it from its shards' manifest while they are there."""
    if recorded is None or "stored_size" in recorded or not shards:
        return recorded
    return {**input_of_shards(shards), **recorded}


def input_of_shards(shards: str | Path) -> dict:
    """What a model trained on ``shards`` expects of an image beyond its size: the stretch that made deep images and
    FITS 8-bit there (``gzpipe.pixels.stretch``), and the side and JPEG quality the shards stored every image at
    (``gzpipe shard --resize / --quality``; ``stored_size`` None: as given), recorded in its metrics.json and exports
    so that predict makes new images the same way (``gzpipe.predict.parts.FileChunk``)."""
    from gzpipe.manifest import read_manifest
    from gzpipe.pixels import DEFAULT_STRETCH

    try:
        manifest = read_manifest(shards)
    except GzpipeError:
        manifest = {}
    config = manifest.get("config") or {}
    stored = manifest.get("stored_size")
    return {"stretch": config.get("stretch") or DEFAULT_STRETCH,
            "stored_size": stored if isinstance(stored, int) else None, "quality": int(config.get("quality") or 90)}


def metrics_cover(tasks_trained: list[str] | None) -> str:
    """What a model's figures are over, in words, for its metrics.json, model card and report."""
    learnt = list(tasks_trained or schema.TASK_SLICES)
    if len(learnt) == len(schema.TASK_SLICES):
        return "every known label of the split's galaxies, all 10 questions"
    return (f"the known labels of the {len(learnt)} of 10 questions it had training labels for ({', '.join(learnt)}); "
            "it predicts the others empty")
