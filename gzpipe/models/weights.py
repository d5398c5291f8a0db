"""Reading a backbone's weights from what people share: a torch state dict (``.pth`` / ``.pt`` / ``.bin``), a
``.safetensors`` file, a Hugging Face folder (``model.safetensors`` or ``pytorch_model.bin`` beside a ``config.json``
naming the ``architecture``, as timm and Zoobot publish them) or a ``gzpipe export`` folder. Every format is read
without running code (safetensors; torch with ``weights_only=True``); the architecture a folder names is checked
against the backbone before a single tensor is loaded."""

from __future__ import annotations

import json
from pathlib import Path

from gzpipe.errors import GzpipeError

EXPORT_FORMAT = "gzpipe-export"  # config.json's "format" in a `gzpipe export` folder
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def read_folder_config(folder: Path) -> dict:
    p = folder / "config.json"
    if not p.exists():
        return {}
    try:
        cfg = json.loads(p.read_text())
    except ValueError as e:
        raise GzpipeError(f"{p} is not valid JSON ({e})") from None
    return cfg if isinstance(cfg, dict) else {}


def _load_file(path: Path) -> dict:
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise GzpipeError("reading .safetensors needs the safetensors package (`pip install safetensors`)") from None
        try:
            return load_file(str(path))
        except Exception as e:  # noqa: BLE001 - a damaged or foreign file gets the same advice
            raise GzpipeError(f"cannot read --weights {path} as safetensors ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:160] if str(e) else ''})") from None
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same advice
        raise GzpipeError(f"cannot read --weights {path} as a torch state dict ({type(e).__name__}: {e})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise GzpipeError(f"--weights {path} holds a {type(state).__name__}, not a state dict of tensors")
    return state


def read_weights(path: Path, spec) -> dict:
    """The state dict in ``path`` for the backbone ``spec``; a folder's named architecture must be the backbone's
    (the one-line error names both)."""
    path = Path(path)
    if not path.exists():
        raise GzpipeError(f"--weights file not found: {path}")
    if not path.is_dir():
        return _load_file(path)
    cfg = read_folder_config(path)
    files = [path / f for f in WEIGHT_FILES if (path / f).exists()]
    if not files:
        raise GzpipeError(f"--weights {path} is a folder without {' or '.join(WEIGHT_FILES)}; give the weights file "
                          "or a Hugging Face / `gzpipe export` folder")
    if cfg.get("format") == EXPORT_FORMAT:  # a finished gzpipe model: its backbone's part
        if cfg.get("architecture") != spec.name:
            raise GzpipeError(f"--weights {path} is a gzpipe {cfg.get('architecture')} model, not {spec.name}; "
                              f"use --backbone {cfg.get('architecture')}")
        state = _load_file(files[0])
        return {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    arch = cfg.get("architecture")
    want = spec.weights_architecture or spec.torchvision_name or spec.name
    if arch and arch != want:
        raise GzpipeError(f"--weights {path} holds a {arch} (its config.json), not the {want} of --backbone "
                          f"{spec.name}; a Hugging Face folder of timm weights trains with --backbone timm:{arch}")
    return _load_file(files[0])
