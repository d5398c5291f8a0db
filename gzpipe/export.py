"""`gzpipe export --model artifacts/NAME --out DIR`: a finished backbone as the field shares models, a folder of

* ``model.safetensors``: the whole network (``backbone.*``, ``head.*``), tensors only, no pickle;
* ``config.json``: what it needs to be used right - the architecture, the head, the 30 targets in their order and
  their kind, the input (image size, RGB scaled to 0..1 then normalised with the mean and std given, the eval crop),
  the memory format, the gzpipe version, the test and val metrics, the checkpoint it came from;
* ``README.md``: a model card - the data it was trained on, the metrics with the size of the test split, the command.

`gzpipe predict --model DIR` and `gzpipe train --weights DIR` read it back (``gzpipe.models.weights``); the round
trip predicts exactly what the run folder does. Re-runs follow ``gzpipe.rerun``: an export of the same checkpoint is
skipped, another one is kept until ``--force``, and a new one is written beside the old and swapped in whole.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from gzpipe import __version__, rerun, runs, schema
from gzpipe.errors import GzpipeError
from gzpipe.fileio import atomic_open, check_out_folder, finish_swap, rebuilt, write_json
from gzpipe.models.weights import EXPORT_FORMAT, read_folder_config

MODEL_FILE = "model.safetensors"


def run_export(model: str | Path, out: str | Path, force: bool = False) -> Path:
    from safetensors.torch import save

    from gzpipe.loaders.presets import DEFAULT_CROP, IMAGENET_MEAN, IMAGENET_STD
    from gzpipe.manifest import read_manifest
    from gzpipe.models import BACKBONES, resolve_name
    from gzpipe.train import checkpoint as ckpt

    model, out = Path(model), Path(out)
    kind = runs.model_kind(model)
    if kind != runs.BACKBONE:
        raise GzpipeError(f"{model} is a {kind}; `gzpipe export` writes a backbone (a network with its head): export "
                          "its backbone, or predict with the run folder itself")
    check_out_folder(out, what="the export folder")
    best = runs.best_checkpoint(model)
    digest = runs.digest(best)
    finish_swap(out)
    have = read_folder_config(out) if out.is_dir() else {}
    if out.is_dir() and any(out.iterdir()) and have.get("format") != EXPORT_FORMAT:
        raise GzpipeError(f"--out {out} holds other files; give a new or empty folder for the export")
    if have.get("format") == EXPORT_FORMAT and not force:
        old = have.get("source", {}).get("checkpoint_sha256")
        diff = [] if old == digest else [f"model {have.get('source', {}).get('run', '?')} -> {model}"]
        rerun.say(rerun.finished_line("export", out, diff, "--force"))
        return out
    state = ckpt.load(best)
    cfg = state["config"]
    name = resolve_name(cfg["backbone"])
    spec = BACKBONES[name]
    metrics = runs.read_json(model, runs.METRICS)
    try:
        manifest = read_manifest(cfg["shards"])
    except GzpipeError:
        manifest = {}
    config = {
        "format": EXPORT_FORMAT, "format_version": 1, "gzpipe_version": __version__,
        "architecture": name, "timm_architecture": spec.weights_architecture, "head": cfg["head"],
        "features": spec.features, "targets": list(schema.TARGET_NAMES),
        "target_kind": (manifest.get("target") or {}).get("kind"),
        "tasks": {t: [s.start, s.stop] for t, s in schema.TASK_SLICES.items()},
        "tasks_trained": metrics.get("tasks_trained") or list(schema.TASK_SLICES),
        "image_size": int(cfg["image_size"]),
        "input": {"channels": "RGB", "scale": "pixel / 255", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                  "layout": "N x 3 x image_size x image_size", "eval_crop": float(cfg.get("crop") or DEFAULT_CROP),
                  "resize": "bilinear", "geometry": "a non-square image's centred square (the largest that fits)",
                  "stretch": (metrics.get("input") or runs.input_of_shards(cfg["shards"]))["stretch"]},
        "channels_last": cfg.get("channels_last"),
        "metrics": {split: {k: metrics[split][k] for k in ("mae", "rmse", "accuracy", "galaxies") if k in metrics[split]}
                    for split in runs.EVAL_SPLITS if split in metrics},
        "metrics_cover": runs.metrics_cover(metrics.get("tasks_trained")),
        "training": {k: cfg.get(k) for k in ("epochs", "batch_size", "lr", "weight_decay", "loss", "seed",
                                                 "image_size", "crop", "tta", "ema_decay", "pretrained", "weights")},
        "epochs_run": metrics.get("epochs_run"), "best_epoch": metrics.get("best_epoch"),
        "source": {"run": str(model.resolve()), "checkpoint_sha256": digest},
    }
    tensors = {k: v.contiguous() for k, v in state["model"].items()}
    with rebuilt(out) as staged:
        staged.mkdir(parents=True, exist_ok=True)
        with atomic_open(staged / MODEL_FILE, "wb") as f:  # safetensors' own writer makes its files 0600
            f.write(save(tensors, metadata={"format": "pt", "gzpipe": EXPORT_FORMAT}))
        write_json(staged / "config.json", config)
        with atomic_open(staged / "README.md", "w") as f:
            f.write(_model_card(config, cfg, manifest))
    rerun.say(f"export: {name} ({sum(t.numel() for t in tensors.values()):,} parameters, test MAE "
              f"{config['metrics'].get('test', {}).get('mae', float('nan')):.4f}) -> {out}")
    return out


def _model_card(config: dict, cfg: dict, manifest: dict) -> str:
    m = config["metrics"]
    counts = manifest.get("counts", {})
    splits = counts.get("per_split", {})
    source = manifest.get("config", {})
    train_cmd = ["gzpipe", "train", "--backbone", config["architecture"], "--shards", str(cfg["shards"])]
    for key in ("epochs", "batch_size", "lr", "image_size", "crop", "loss", "seed"):
        if cfg.get(key) is not None:
            train_cmd += [f"--{key.replace('_', '-')}", str(cfg[key])]
    learnt = config["tasks_trained"]
    if len(learnt) == len(schema.TASK_SLICES):
        what = (f"Regresses the {len(config['targets'])} vote fractions of the 10 GZ2 questions "
                f"({config['target_kind'] or 'unknown'} targets)")
        cover = "over every known label of the test galaxies"
    else:
        n = sum(s.stop - s.start for t, s in schema.TASK_SLICES.items() if t in learnt)
        left = [t for t in schema.TASK_SLICES if t not in learnt]
        what = (f"Regresses the {n} vote fractions of the {len(learnt)} GZ2 questions its training catalogue labelled "
                f"({', '.join(learnt)}; {config['target_kind'] or 'unknown'} targets); the other {len(left)} "
                f"({', '.join(left)}) it never learnt, and `gzpipe predict` leaves them empty (NaN)")
        cover = f"over the {len(learnt)} questions it learnt only"
    lines = [
        f"# {config['architecture']} for Galaxy Zoo 2 morphology (gzpipe {config['gzpipe_version']})", "",
        f"{what}, from a {config['image_size']} px RGB image, with a {config['head']} head.", "",
        "## Data", "",
        f"- catalogue: `{source.get('catalog', '?')}` ({source.get('format', '?')} format, --target "
        f"{source.get('target', '?')})",
        f"- galaxies: {counts.get('written', '?')} written ({', '.join(f'{k} {v}' for k, v in splits.items())}); "
        "splits by a hash of each id",
        "", f"## Metrics (the best epoch's model, {cover})", "",
        "| split | galaxies | MAE | RMSE | accuracy |", "|---|---|---|---|---|",
        *[f"| {s} | {v.get('galaxies', '?')} | {v.get('mae', float('nan')):.4f} | {v.get('rmse', float('nan')):.4f} | "
          f"{v.get('accuracy', float('nan')):.4f} |" for s, v in m.items()],
        "", f"Best epoch {config['best_epoch']} of {config['epochs_run']} run.", "",
        "## Command", "", "```bash", shlex.join(train_cmd), "```", "",
        "## Use", "", "```bash",
        "gzpipe predict --model THIS_FOLDER images/ --out predictions.csv   # the 30 fractions",
        f"gzpipe train --backbone {config['architecture']} --weights THIS_FOLDER --shards SHARDS   # fine-tune",
        "```", "",
        "Inputs: RGB scaled to 0..1, normalised with the mean and std in `config.json`, "
        f"{config['image_size']} x {config['image_size']} px (the eval preset: a centre crop of "
        f"{config['input']['eval_crop']:g} of the side, resized bilinearly).", "",
    ]
    return "\n".join(lines)


def load_exported(folder: str | Path, device=None, amp: str | None = None):
    """An export folder as a ``runs.TrainedBackbone`` (what `predict` feeds), on ``device``."""
    import torch
    from safetensors.torch import load_file

    from gzpipe.device import precision, resolve_device
    from gzpipe.models import BACKBONES, create_model, resolve_name

    d = Path(folder)
    cfg = read_folder_config(d)
    name = resolve_name(cfg["architecture"])
    dev = device if isinstance(device, torch.device) else resolve_device(device or "auto")
    model = create_model(name, cfg["head"])
    model.load_state_dict(load_file(str(d / MODEL_FILE)))
    model.eval().to(dev)
    spec = BACKBONES[name]
    cl = spec.channels_last(dev.type)
    if cl:
        model = model.to(memory_format=torch.channels_last)
    config = {"backbone": name, "image_size": cfg["image_size"], "head": cfg["head"], "channels_last": cl,
              "amp": amp or "bf16", "crop": (cfg.get("input") or {}).get("eval_crop")}
    return runs.TrainedBackbone(name, d, config, model, dev, cl, precision(dev, amp or "bf16"), d / MODEL_FILE,
                                cfg.get("tasks_trained"), {"stretch": (cfg.get("input") or {}).get("stretch")})


def is_export(folder: str | Path) -> bool:
    d = Path(folder)
    return d.is_dir() and (d / MODEL_FILE).exists() and read_folder_config(d).get("format") == EXPORT_FORMAT

