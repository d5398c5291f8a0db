"""Reading a backbone's weights from what people share, as they share it (``--weights PATH``).

What ``PATH`` may be (``locate`` tells them apart without reading a tensor):

* a file: a torch state dict (``.pth`` / ``.pt`` / ``.bin``), a ``.safetensors`` file, or a Lightning checkpoint
  (``.ckpt``: Zoobot's ``FinetuneableZoobotTree`` and ``ZoobotTree`` save these), whose ``state_dict`` is read with
  ``torch.load(weights_only=True)`` and inert stand-ins for the classes it pickled (a ``Schema``, a config): no code
  from the file runs;
* a Hugging Face folder, as timm's ``save_for_hf`` writes it and Zoobot's encoders are published (``config.json``
  naming the ``architecture`` beside ``model.safetensors`` and/or ``pytorch_model.bin``), or a hub cache entry
  (``models--OWNER--NAME`` with ``snapshots/<revision>/``, its files links into ``blobs/``);
* a ``gzpipe export`` folder, or a finished gzpipe run folder (its best checkpoint).

The tensors are then matched to the backbone (``for_backbone``): whatever prefix the source puts before the
encoder's keys (``encoder.`` in Zoobot's checkpoints, ``backbone.`` in gzpipe's own, none in timm's) is found by
matching key names, the source's classifier is left out, and anything that does not fit is one error naming the
keys and shapes. ``check`` does all of it on a copy of the network on the ``meta`` device (no memory), so `train`
refuses a bad ``--weights`` before it writes anything. A source that names its architecture (a folder's
``config.json``, an export, a run, Zoobot's ``architecture_name``) lets ``--backbone`` be left out; one that was made
for 1-channel images (Zoobot's greyscale encoders, ``in_chans=1``) sets the input channels.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from gzpipe.errors import GzpipeError

EXPORT_FORMAT = "gzpipe-export"  # config.json's "format" (version 1) / "gzpipe"."format" (version 2) in an export
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth")  # timm's preference
FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
# What sources put before an encoder's own key names: none (timm, torchvision), gzpipe's GZModel, Zoobot's
# Lightning modules, DDP, other wrappers
PREFIXES = ("", "backbone.", "encoder.", "model.encoder.", "model.backbone.", "model.", "module.", "net.")


@dataclass(frozen=True)
class Weights:
    """A weights source, located: what it is, the files its tensors come from (their digests are recorded with
    the run), and what it says of the network it fits."""

    given: Path
    kind: str  # "file", "lightning", "hf-folder", "export", "run"
    file: Path  # the file the tensors are read from
    architecture: str | None = None  # a gzpipe backbone name ("timm:convnext_nano", "resnet50"), where it names one
    channels: int | None = None  # input channels it was made for, where it says
    files: tuple[Path, ...] = field(default=())  # every file read (the tensors', the config's)

    def describe(self) -> str:
        return {"file": "a weights file", "lightning": "a Lightning checkpoint", "hf-folder": "a Hugging Face folder",
                "export": "a gzpipe export", "run": "a gzpipe run"}[self.kind]


def read_folder_config(folder: Path) -> dict:
    p = Path(folder) / "config.json"
    if not p.exists():
        return {}
    try:
        cfg = json.loads(p.read_text())
    except ValueError as e:
        raise GzpipeError(f"{p} is not valid JSON ({e})") from None
    return cfg if isinstance(cfg, dict) else {}


def export_settings(cfg: dict) -> dict | None:
    """gzpipe's settings in an export's config.json: version 2 keeps them under ``gzpipe`` (timm reads the rest),
    version 1 at the top level; None for any other config."""
    if isinstance(cfg.get("gzpipe"), dict) and cfg["gzpipe"].get("format") == EXPORT_FORMAT:
        return cfg["gzpipe"]
    return cfg if cfg.get("format") == EXPORT_FORMAT else None


def _timm_name(arch: str | None) -> str | None:
    """A Hugging Face config's (or Zoobot's) architecture, a timm name, as a gzpipe backbone name: ``timm:NAME``."""
    if not arch:
        return None
    return arch if arch.startswith("timm:") else "timm:" + arch


def _channels_of_config(cfg: dict) -> int | None:
    args = cfg.get("model_args") or {}
    if isinstance(args.get("in_chans"), int):
        return args["in_chans"]
    size = (cfg.get("pretrained_cfg") or {}).get("input_size") or cfg.get("input_size")
    return int(size[0]) if isinstance(size, (list, tuple)) and size else None


def locate(path: str | Path) -> Weights:
    """What ``path`` is (see the module docstring), checked to exist and be readable; no tensor is read."""
    p = Path(path)
    if not p.exists():
        raise GzpipeError(f"--weights not found: {p}")
    if p.is_dir():
        return _locate_folder(p)
    _readable(p)
    if p.suffix == ".ckpt":
        arch, channels = _lightning_hints(p)
        return Weights(p, "lightning", p, arch, channels, (p,))
    if p.suffix not in FILE_SUFFIXES:
        raise GzpipeError(f"--weights {p}: expected a {', '.join(FILE_SUFFIXES)} file or a folder (a Hugging Face "
                          "folder, a gzpipe export or run)")
    return Weights(p, "file", p, files=(p,))


def _readable(p: Path) -> None:
    try:
        with open(p, "rb") as f:
            f.read(1)
    except OSError as e:
        raise GzpipeError(f"--weights {p} cannot be read ({e.strerror or e})") from None


def _locate_folder(p: Path) -> Weights:
    from gzpipe import runs

    snapshots = p / "snapshots"
    if snapshots.is_dir() and not (p / "config.json").exists():  # a hub cache entry: its newest snapshot
        found = sorted((s for s in snapshots.iterdir() if s.is_dir()), key=lambda s: s.stat().st_mtime)
        if not found:
            raise GzpipeError(f"--weights {p} is a Hugging Face cache entry without a snapshot")
        return _locate_folder(found[-1])
    if runs.kind_of(p) == runs.BACKBONE:
        cfg = runs.read_json(p, runs.CONFIG)
        best = runs.best_checkpoint(p)
        return Weights(p, "run", best, cfg["backbone"], cfg.get("channels"), (best,))
    cfg = read_folder_config(p)
    settings = export_settings(cfg)
    files = [p / f for f in WEIGHT_FILES if (p / f).exists()]
    if settings is not None:
        if not files:
            raise GzpipeError(f"--weights {p} is a gzpipe export without its model.safetensors")
        return Weights(p, "export", files[0], settings.get("architecture"), settings.get("channels"),
                       (files[0], p / "config.json"))
    if not files:
        others = sorted(f.name for f in p.iterdir() if f.suffix in FILE_SUFFIXES)
        if len(others) == 1:
            return locate(p / others[0])
        raise GzpipeError(f"--weights {p} is a folder without {' or '.join(WEIGHT_FILES[:2])}"
                          + (f" (it holds {', '.join(others[:4])}: give one of them)" if others else
                             "; give a weights file, a Hugging Face folder, a gzpipe export or a gzpipe run folder"))
    for f in files:
        _readable(f)
    extra = (p / "config.json",) if (p / "config.json").exists() else ()
    return Weights(p, "hf-folder", files[0], _timm_name(cfg.get("architecture")), _channels_of_config(cfg),
                   (files[0], *extra))


def _lightning_hints(path: Path) -> tuple[str | None, int | None]:
    """A Lightning checkpoint's hyperparameters (Zoobot's ``architecture_name``, ``channels``, ``greyscale``)."""
    hp = (_load_lightning(path).get("hyper_parameters") or {})
    hp = hp if isinstance(hp, dict) else {}
    arch = hp.get("architecture_name")
    channels = hp.get("channels") if isinstance(hp.get("channels"), int) else (1 if hp.get("greyscale") else None)
    hub = re.search(r"zoobot-encoder-(greyscale-)?([A-Za-z0-9_.]+)$", str(hp.get("name") or ""))
    if arch is None and hub:  # FinetuneableZoobot*(name='hf_hub:mwalmsley/zoobot-encoder-[greyscale-]ARCH')
        arch, channels = hub[2], channels or (1 if hub[1] else None)
    return (_timm_name(arch) if isinstance(arch, str) else None), channels


class _Inert:
    """Stands in for a class a checkpoint pickled (Zoobot's ``Schema``, a config object): keeps its state, runs
    nothing."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        self.state = state


_LIGHTNING_CACHE: dict[tuple, dict] = {}


def _load_lightning(path: Path) -> dict:
    """A Lightning checkpoint through ``torch.load(weights_only=True)``: the classes it pickled beside the tensors
    are named by ``get_unsafe_globals_in_checkpoint`` and allowed as inert stand-ins, so nothing from the file
    runs."""
    import torch

    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if key in _LIGHTNING_CACHE:
        return _LIGHTNING_CACHE[key]
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        stand_ins = [(type(n.rsplit(".", 1)[-1], (_Inert,), {}), n) for n in names]
        with torch.serialization.safe_globals(stand_ins):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a damaged or foreign file: one line
        msg = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
        raise GzpipeError(f"cannot read --weights {path} as a Lightning checkpoint ({type(e).__name__}: {msg})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("state_dict"), dict):
        raise GzpipeError(f"--weights {path} is not a Lightning checkpoint (no state_dict in it)")
    _LIGHTNING_CACHE.clear()
    _LIGHTNING_CACHE[key] = obj
    return obj


def state_dict(w: Weights) -> dict:
    """The source's tensors as it stores them (keys unchanged)."""
    if w.kind == "lightning":
        return dict(_load_lightning(w.file)["state_dict"])
    if w.file.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise GzpipeError("reading .safetensors needs the safetensors package (`pip install safetensors`)") from None
        try:
            return load_file(str(w.file))
        except Exception as e:  # noqa: BLE001 - a damaged or foreign file gets the same advice
            raise GzpipeError(f"cannot read --weights {w.file} as safetensors ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:160] if str(e) else ''})") from None
    import torch

    try:
        state = torch.load(w.file, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same advice
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        hint = " (a Lightning checkpoint? name it .ckpt)" if "Unsupported global" in str(e) else ""
        raise GzpipeError(f"cannot read --weights {w.file} as a torch state dict ({type(e).__name__}: {first}){hint}"
                          ) from None
    for key in ("state_dict", "model"):  # a Lightning-style or a gzpipe checkpoint
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise GzpipeError(f"--weights {w.file} holds a {type(state).__name__}, not a state dict of tensors")
    return state


def for_backbone(w: Weights, expected: dict, spec) -> dict:
    """The source's tensors under the backbone's own key names: the prefix that matches most of ``expected``
    (name -> tensor or shape of the backbone's state dict) is taken off, the source's classifier and head left out;
    missing keys, unexpected ones and shape mismatches are one error naming them."""
    state = state_dict(w)
    want = set(expected)
    best, best_hits = "", -1
    for prefix in PREFIXES:
        hits = sum(1 for k in state if k.startswith(prefix) and k[len(prefix):] in want)
        if hits > best_hits:
            best, best_hits = prefix, hits
    mine = {k[len(best):]: v for k, v in state.items() if k.startswith(best)}
    head = spec.classifier + "."
    mine = {k: v for k, v in mine.items() if not k.startswith(head)}
    target = spec.name
    if best_hits <= 0:
        shown = ", ".join(list(state)[:3])
        raise GzpipeError(f"--weights {w.given} does not fit {target}: none of its {len(state)} tensors ({shown} ...) "
                          f"is a {target} key (under any of the prefixes {', '.join(repr(p) for p in PREFIXES[1:4])} "
                          "...); is it another architecture?")
    missing = sorted(want - set(mine))
    unexpected = sorted(k for k in mine if k not in want)
    if best:  # another module's tensors under the same wrapper (Zoobot's head) are not the encoder's: ignore them
        unexpected = [k for k in unexpected if k.split(".")[0] in {e.split(".")[0] for e in want}]
    shapes = [(k, tuple(mine[k].shape), tuple(_shape(expected[k]))) for k in sorted(want & set(mine))
              if tuple(mine[k].shape) != tuple(_shape(expected[k]))]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            k, have, need = shapes[0]
            hint = ""
            if len(have) == 4 and len(need) == 4 and have[1] != need[1] and have[0] == need[0]:
                hint = f": weights for {have[1]}-channel images, the network takes {need[1]}"
            parts.append(f"{len(shapes)} of another shape ({k}: {'x'.join(map(str, have))} in the weights, "
                         f"{'x'.join(map(str, need))} here{hint})")
        if missing:
            parts.append(f"{len(missing)} missing ({', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''})")
        if unexpected:
            parts.append(f"{len(unexpected)} not in {target} ({', '.join(unexpected[:3])}"
                         f"{' ...' if len(unexpected) > 3 else ''})")
        where = f" after the prefix {best!r}" if best else ""
        raise GzpipeError(f"--weights {w.given} ({w.describe()}) does not fit {target}{where}: {'; '.join(parts)}")
    return {k: mine[k] for k in expected}


def _shape(v):
    return v.shape if hasattr(v, "shape") else v


def _meta_shapes(spec, channels: int) -> dict:
    import torch

    from gzpipe.models.build import build_backbone

    with torch.device("meta"):
        net = build_backbone(spec, pretrained=False, channels=channels)
    return {k: v.shape for k, v in net.state_dict().items()}


def check(w: Weights, spec, channels: int = 3) -> None:
    """Every check of ``for_backbone`` against a copy of the backbone built on the ``meta`` device (no memory, no
    weights): for `train` to refuse a bad ``--weights`` before it writes anything."""
    for_backbone(w, _meta_shapes(spec, channels), spec)


def channels_of(w: Weights, spec) -> int | None:
    """The input channels the weights were made for, read off the first convolution's weight (a 1-channel encoder
    whose source does not say so), where the backbone can take other channels; None when it cannot tell."""
    if not spec.takes_channels:
        return None
    shapes = _meta_shapes(spec, 3)
    first = next((k for k, s in shapes.items() if len(s) == 4 and s[1] == 3), None)
    if first is None:
        return None
    state = state_dict(w)
    for prefix in PREFIXES:
        t = state.get(prefix + first)
        if t is not None and len(t.shape) == 4 and t.shape[0] == shapes[first][0]:
            return int(t.shape[1]) if t.shape[1] in (1, 3) else None
    return None


def read_weights(path: Path, spec) -> dict:
    """The raw state dict a source holds for ``spec`` (kept for callers of the old name; new code uses ``locate``
    and ``for_backbone``)."""
    return state_dict(locate(path))
