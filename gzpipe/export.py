"""`gzpipe export --model artifacts/NAME --out DIR`: a finished backbone as the field shares models, in the layout
timm reads, so that ``timm.create_model('local-dir:DIR', pretrained=True, num_classes=0)`` (and Zoobot's
``FinetuneableZoobot*(name='local-dir:DIR')``, which calls it) loads the encoder with every weight:

* ``model.safetensors`` and ``config.json`` written by timm's own ``save_for_hf``: the encoder under timm's
  architecture name and key names (no ``backbone.`` prefix), its input settings (size, channels, mean and std, the
  eval crop as ``crop_pct``) in ``pretrained_cfg``; gzpipe's settings beside them under ``config.json``'s ``gzpipe``
  key (timm ignores it): the head, the 30 targets in their order and kind, the questions learnt, the crop and
  stretch, the channels, the metrics, the checkpoint it came from;
* ``gzpipe_head.safetensors``: the 30-output head (tensors only, no pickle);
* ``README.md``: a model card - the data it was trained on, what its metrics cover, the command.

Timm backbones (``timm:NAME``) and resnet50 (torchvision's and timm's resnet50 share every key name) export so;
the other built-in backbones are torchvision networks, whose key names timm's versions do not share: their export
holds the encoder under torchvision's names (``torchvision.models.get_model(config['gzpipe']['torchvision'])`` loads
it) and gzpipe's settings, and timm's loader refuses it by name.

`gzpipe predict --model DIR` and `gzpipe train --weights DIR` read it back (``gzpipe.models.weights``); the round
trip predicts exactly what the run folder does. Exports of version 1 (the whole network under ``backbone.`` and
``head.`` in one file, gzpipe's settings at the top of config.json) are still read. Re-runs follow
``gzpipe.rerun``: an export of the same checkpoint is skipped, another one is kept until ``--force``, and a new one
is written beside the old and swapped in whole.
"""

from __future__ import annotations

import contextlib
import io
import shlex
from pathlib import Path

from gzpipe import __version__, rerun, runs, schema
from gzpipe.errors import GzpipeError
from gzpipe.fileio import atomic_open, check_out_folder, finish_swap, rebuilt, umask_mode, write_json
from gzpipe.models.weights import EXPORT_FORMAT, export_settings, read_folder_config

MODEL_FILE = "model.safetensors"
HEAD_FILE = "gzpipe_head.safetensors"
FORMAT_VERSION = 2
# built-in backbones whose torchvision key names are a timm architecture's too
TIMM_EQUIVALENT = {"resnet50": "resnet50"}


def timm_architecture(spec) -> str | None:
    """The timm architecture whose keys the backbone's encoder has, or None (a torchvision network timm lacks)."""
    return spec.weights_architecture or TIMM_EQUIVALENT.get(spec.name)


def run_export(model: str | Path, out: str | Path, force: bool = False) -> Path:
    from safetensors.torch import save

    from gzpipe.loaders.presets import DEFAULT_CROP, IMAGENET_MEAN, IMAGENET_STD
    from gzpipe.manifest import read_manifest
    from gzpipe.models import BACKBONES, resolve_name
    from gzpipe.train import checkpoint as ckpt

    model, out = Path(model), Path(out)
    kind = runs.model_kind(model)
    if kind == runs.EXPORT:
        raise GzpipeError(f"{model} is an export already; copy the folder to share it")
    check_out_folder(out, what="the export folder")
    if kind != runs.BACKBONE:
        return _export_composite(model, kind, out, force)
    best = runs.best_checkpoint(model)
    digest = runs.digest(best)
    finish_swap(out)
    have = export_settings(read_folder_config(out)) if out.is_dir() else None
    if out.is_dir() and any(out.iterdir()) and have is None:
        raise GzpipeError(f"--out {out} holds other files; give a new or empty folder for the export")
    if have is not None and not force:
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
    channels = int(cfg.get("channels") or 3)
    crop = float(cfg.get("crop") or DEFAULT_CROP)
    arch = timm_architecture(spec)
    settings = {
        "format": EXPORT_FORMAT, "format_version": FORMAT_VERSION, "gzpipe_version": __version__,
        "architecture": name, "timm_architecture": arch, "torchvision": None if arch else spec.torchvision_name,
        "head": cfg["head"], "head_file": HEAD_FILE, "features": spec.features, "channels": channels,
        "heads": cfg.get("heads"),  # a head per catalogue format (the default first), or None for one head
        "targets": list(schema.TARGET_NAMES), "target_kind": (manifest.get("target") or {}).get("kind"),
        "tasks": {t: [s.start, s.stop] for t, s in schema.TASK_SLICES.items()},
        "tasks_trained": metrics.get("tasks_trained") or list(schema.TASK_SLICES),
        "image_size": int(cfg["image_size"]),
        "input": {"channels": "RGB" if channels == 3 else "grey (ITU-R 601 luma of the RGB picture)",
                  "scale": "pixel / 255", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                  "layout": f"N x {channels} x image_size x image_size", "eval_crop": crop, "resize": "bilinear",
                  "geometry": "a non-square image's centred square (the largest that fits)",
                  **_stored_input(metrics, cfg)},
        "channels_last": cfg.get("channels_last"),
        "metrics": {split: {k: metrics[split][k] for k in ("mae", "rmse", "accuracy", "galaxies") if k in metrics[split]}
                    for split in runs.EVAL_SPLITS if split in metrics},
        "metrics_cover": runs.metrics_cover(metrics.get("tasks_trained")),
        "training": {k: cfg.get(k) for k in ("epochs", "batch_size", "lr", "weight_decay", "loss", "seed",
                                                 "image_size", "crop", "tta", "tta_kind", "ema_decay", "drop_path",
                                                 "pretrained", "weights")},
        "epochs_run": metrics.get("epochs_run"), "best_epoch": metrics.get("best_epoch"),
        "source": {"run": str(model.resolve()), "checkpoint_sha256": digest},
    }
    encoder = {k[len("backbone."):]: v.contiguous() for k, v in state["model"].items() if k.startswith("backbone.")}
    head = {k[len("head."):]: v.contiguous() for k, v in state["model"].items() if k.startswith("head.")}
    with rebuilt(out) as staged:
        staged.mkdir(parents=True, exist_ok=True)
        if arch:
            _save_for_timm(arch, encoder, channels, settings, staged)
        else:
            with atomic_open(staged / MODEL_FILE, "wb") as f:
                f.write(save(encoder, metadata={"format": "pt"}))
            write_json(staged / "config.json", {"gzpipe": settings})
        with atomic_open(staged / HEAD_FILE, "wb") as f:  # safetensors' own writer makes its files 0600
            f.write(save(head, metadata={"format": "pt", "gzpipe": EXPORT_FORMAT}))
        with atomic_open(staged / "README.md", "w") as f:
            f.write(_model_card(settings, cfg, manifest))
        for f in staged.iterdir():
            umask_mode(f)  # readable by others as any file the user writes (timm's safetensors writer uses 0600)
    n = sum(t.numel() for t in (*encoder.values(), *head.values()))
    rerun.say(f"export: {name} ({n:,} parameters, test MAE "
              f"{settings['metrics'].get('test', {}).get('mae', float('nan')):.4f}) -> {out}"
              + ("" if arch else f" (torchvision's {spec.torchvision_name}: timm has no network with its key names)"))
    return out


BACKBONES_DIR, BOOSTERS_DIR = "backbones", "boosters"


def _folder_name(run: str) -> str:
    """A member run's name as a folder name on every file system (``timm:resnet18`` -> ``timm__resnet18``)."""
    return run.replace(":", "__")


def _export_composite(model: Path, kind: str, out: Path, force: bool) -> Path:
    """A booster or an ensemble as one self-contained folder: each backbone it reads exported once
    (``backbones/<name>/``, the layout above), each booster's files (``boosters/<name>/``: its engine's model files,
    its PCA reduction, its config and metrics), the ensemble's weights, a config.json and a model card; `predict`
    and ``gzpipe.load_model`` read it with the predictions of the run folder itself."""
    import hashlib
    import json
    import shutil

    from gzpipe.predict.model import members_of

    root = model.parent
    members = members_of(model, kind)
    backbones = sorted({m["backbone"] for m in members.values()})
    for b in backbones:
        if not runs.is_complete(root / b, runs.BACKBONE):
            raise GzpipeError(f"{model.name} reads the backbone {b}, which is not a finished run at {root / b}")
    sources = {b: runs.digest(runs.best_checkpoint(root / b)) for b in backbones}
    sources.update({n: runs.digest(root / n / runs.METRICS) for n, m in members.items() if m["kind"] == runs.BOOSTER})
    if kind == runs.ENSEMBLE:
        sources[model.name] = runs.digest(model / runs.WEIGHTS)
    digest = hashlib.sha256(json.dumps(sources, sort_keys=True).encode()).hexdigest()
    finish_swap(out)
    have = export_settings(read_folder_config(out)) if out.is_dir() else None
    if out.is_dir() and any(out.iterdir()) and have is None:
        raise GzpipeError(f"--out {out} holds other files; give a new or empty folder for the export")
    if have is not None and not force:
        diff = [] if have.get("source", {}).get("digest") == digest else [
            f"model {have.get('source', {}).get('run', '?')} -> {model}"]
        rerun.say(rerun.finished_line("export", out, diff, "--force"))
        return out
    metrics = runs.read_json(model, runs.METRICS)
    for name, m in members.items():
        m["folder"] = f"{BACKBONES_DIR if m['kind'] == runs.BACKBONE else BOOSTERS_DIR}/{_folder_name(name)}"
    settings = {
        "format": EXPORT_FORMAT, "format_version": FORMAT_VERSION, "gzpipe_version": __version__, "kind": kind,
        "name": model.name, "members": members, "backbones": {b: f"{BACKBONES_DIR}/{_folder_name(b)}" for b in backbones},
        "tasks_trained": metrics.get("tasks_trained") or list(schema.TASK_SLICES),
        "metrics_cover": runs.metrics_cover(metrics.get("tasks_trained")),
        "metrics": {split: {k: metrics[split][k] for k in ("mae", "rmse", "accuracy", "galaxies")
                            if k in metrics.get(split, {})} for split in runs.EVAL_SPLITS if split in metrics},
        "source": {"run": str(model.resolve()), "digest": digest},
    }
    with rebuilt(out) as staged:
        staged.mkdir(parents=True, exist_ok=True)
        for b in backbones:
            with contextlib.redirect_stdout(io.StringIO()):
                run_export(root / b, staged / settings["backbones"][b])
        for name, m in members.items():
            if m["kind"] == runs.BOOSTER:  # the engine's own files; not its predictions or its input records
                shutil.copytree(root / name, staged / m["folder"],
                                ignore=shutil.ignore_patterns("*_predictions.parquet", runs.INPUTS, ".*"))
        if kind == runs.ENSEMBLE:
            shutil.copy2(model / runs.WEIGHTS, staged / runs.WEIGHTS)
        write_json(staged / "config.json", {"gzpipe": settings})
        with atomic_open(staged / "README.md", "w") as f:
            f.write(_composite_card(settings))
    rerun.say(f"export: {model.name} ({kind}: {len(members)} member(s), {len(backbones)} backbone(s), test MAE "
              f"{settings['metrics'].get('test', {}).get('mae', float('nan')):.4f}) -> {out}")
    return out


def _composite_card(settings: dict) -> str:
    m = settings["metrics"]
    rows = [f"| {s} | {v.get('galaxies', '?')} | {v.get('mae', float('nan')):.4f} | {v.get('rmse', float('nan')):.4f} "
            f"| {v.get('accuracy', float('nan')):.4f} |" for s, v in m.items()]
    members = [f"- `{n}` ({v['kind']}{', on ' + v['backbone'] if v['kind'] != runs.BACKBONE else ''}): `{v['folder']}`"
               for n, v in settings["members"].items()]
    return "\n".join([
        f"# {settings['name']}: a gzpipe {settings['kind']} for Galaxy Zoo 2 morphology (gzpipe "
        f"{settings['gzpipe_version']})", "",
        f"Regresses the GZ2 vote fractions ({settings['metrics_cover']}).", "",
        "## Members", "", *members, "",
        "Each backbone folder is a `gzpipe export` of its own (timm reads its encoder where it is a timm network).", "",
        "## Metrics (the test split of its study)", "", "| split | galaxies | MAE | RMSE | accuracy |",
        "|---|---|---|---|---|", *rows, "",
        "## Use", "", "```bash", "gzpipe predict --model THIS_FOLDER images/ --out predictions.csv", "```", "",
        "```python", "import gzpipe", "df = gzpipe.load_model('THIS_FOLDER').predict(['galaxy.jpg'])", "```", ""])


def _save_for_timm(arch: str, encoder: dict, channels: int, settings: dict, folder: Path) -> None:
    """The encoder through timm's own ``save_for_hf``: loaded strictly into ``timm.create_model(arch)`` first, which
    proves the key names are timm's, then written with timm's config (input size, channels, mean, std, crop)."""
    import timm
    from timm.models import save_for_hf

    net = timm.create_model(arch, pretrained=False, num_classes=0, in_chans=channels)
    missing, unexpected = net.load_state_dict(encoder, strict=False)
    if missing or unexpected:
        raise GzpipeError(f"the encoder does not fit timm's {arch} ({len(missing)} keys missing, e.g. {missing[:2]}; "
                          f"{len(unexpected)} unexpected, e.g. {unexpected[:2]}); export cannot write it for timm")
    size = settings["image_size"]
    data_config = {"input_size": (channels, size, size), "interpolation": "bilinear",
                   "mean": tuple(settings["input"]["mean"]) if channels == 3 else (0.458,),
                   "std": tuple(settings["input"]["std"]) if channels == 3 else (0.226,),
                   "crop_pct": settings["input"]["eval_crop"], "crop_mode": "center"}
    # timm's default config names the ImageNet weights it would download (tag, licence): these are not those
    own = {"tag": "gzpipe", "license": "unspecified (see README.md)"}
    save_for_hf(net, str(folder), model_config={"gzpipe": settings, "pretrained_cfg": own}, safe_serialization=True,
                data_config=data_config)


def _model_card(config: dict, cfg: dict, manifest: dict) -> str:
    m = config["metrics"]
    counts = manifest.get("counts", {})
    splits = counts.get("per_split", {})
    source = manifest.get("config", {})
    train_cmd = ["gzpipe", "train", "--backbone", config["architecture"], "--shards", str(cfg["shards"])]
    for key in ("epochs", "batch_size", "lr", "image_size", "crop", "loss", "seed", "weights", "channels"):
        if cfg.get(key) is not None:
            train_cmd += [f"--{key.replace('_', '-')}", str(cfg[key])]
    if cfg.get("pretrained"):
        train_cmd.append("--pretrained")
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
        "gzpipe train --weights THIS_FOLDER --shards SHARDS   # fine-tune (the architecture is read from here)",
        "```", "",
        *(["The encoder in timm (and Zoobot's `FinetuneableZoobot*(name='local-dir:THIS_FOLDER')`):", "", "```python",
           "import timm", "encoder = timm.create_model('local-dir:THIS_FOLDER', pretrained=True, num_classes=0)",
           "```", ""] if config.get("timm_architecture") else
          [f"The encoder is torchvision's {config.get('torchvision')} (its classifier removed): "
           "`torchvision.models.get_model(...)` with `model.safetensors` loaded non-strictly.", ""]),
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
    cfg = export_settings(read_folder_config(d)) or {}
    name = resolve_name(cfg["architecture"])
    dev = device if isinstance(device, torch.device) else resolve_device(device or "auto")
    channels = int(cfg.get("channels") or 3)
    model = create_model(name, cfg["head"], channels=channels, heads=cfg.get("heads"))
    if int(cfg.get("format_version", 1)) >= 2:  # the encoder under its own key names, the head beside it
        model.backbone.load_state_dict(load_file(str(d / MODEL_FILE)))
        model.head.load_state_dict(load_file(str(d / cfg.get("head_file", HEAD_FILE))))
    else:
        model.load_state_dict(load_file(str(d / MODEL_FILE)))
    model.eval().to(dev)
    spec = BACKBONES[name]
    cl = spec.channels_last(dev.type)
    if cl:
        model = model.to(memory_format=torch.channels_last)
    config = {"backbone": name, "image_size": cfg["image_size"], "head": cfg["head"], "channels_last": cl,
              "amp": amp or "bf16", "crop": (cfg.get("input") or {}).get("eval_crop"), "channels": channels,
              "heads": cfg.get("heads")}
    return runs.TrainedBackbone(name, d, config, model, dev, cl, precision(dev, amp or "bf16"), d / MODEL_FILE,
                                cfg.get("tasks_trained"), {k: (cfg.get("input") or {}).get(k)
                                                           for k in ("stretch", "stored_size", "quality")})


def _stored_input(metrics: dict, cfg: dict) -> dict:
    """How the run's training images were made (``gzpipe.runs.input_of_shards``): the stretch, and the side and JPEG
    quality its shards stored them at, which predict applies to new image files."""
    got = runs.recorded_input(metrics.get("input"), cfg["shards"]) or runs.input_of_shards(cfg["shards"])
    return {"stretch": got["stretch"], "stored_size": got.get("stored_size"), "quality": got.get("quality") or 90}


def is_export(folder: str | Path) -> bool:
    d = Path(folder)
    if not d.is_dir():
        return False
    settings = export_settings(read_folder_config(d))
    return settings is not None and ((d / MODEL_FILE).exists() or settings.get("kind") in (runs.BOOSTER, runs.ENSEMBLE))
