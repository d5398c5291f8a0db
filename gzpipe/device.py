"""One device switch for every stage: ``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` resolved and checked in one place.

``resolve_device`` gives the torch device (``auto`` = the GPU when there is one); ``precision`` gives the autocast
context for it: bf16 (or fp16) autocast on CUDA, nothing on the CPU, where bf16 autocast is 10-50x *slower* than
fp32 on hardware without bf16 units (measured on the 2-core CI machine).
"""

from __future__ import annotations

import contextlib
import re

from gzpipe.errors import GzpipeError

CHOICES = "auto, cpu, cuda or cuda:N"
_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
AMP = ("bf16", "fp16", "off")


def check_device_name(name: str, option: str = "device") -> str:
    """Validate the spelling only (no CUDA needed): for configs checked before any work starts."""
    if not isinstance(name, str) or not _PATTERN.match(name):
        raise GzpipeError(f"{option + ' ' if option else ''}must be {CHOICES}, got {name!r}")
    return name


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return torch.cuda.is_available()


def resolve_device(name: str = "auto", local_rank: int | None = None, option: str = "device"):
    """The torch device for ``name``. Under DDP (``local_rank`` given) a CUDA run uses the rank's own GPU.
    Asking for CUDA where there is none is a one-line error that says what to use instead."""
    import torch

    check_device_name(name, option)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise GzpipeError(f"{option} {name!r} asked for, but no CUDA device is usable here; use cpu (or auto)")
    index = local_rank if local_rank is not None else (torch.device(name).index or 0)
    if index >= torch.cuda.device_count():
        raise GzpipeError(f"{option} {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    dev = torch.device("cuda", index)
    torch.cuda.set_device(dev)
    return dev


def device_kind(name: str = "auto") -> str:
    """``"cuda"`` or ``"cpu"`` for libraries that take a string (XGBoost, LightGBM), resolved like ``resolve_device``."""
    return resolve_device(name).type


def precision(device, amp: str = "bf16"):
    """A context-manager factory: autocast on CUDA (bf16 or fp16), a no-op on the CPU or with ``amp="off"``."""
    import torch

    if amp not in AMP and amp not in (None, False):
        raise GzpipeError(f"amp must be one of {', '.join(AMP)}, got {amp!r}")
    if device.type != "cuda" or amp in ("off", None, False):
        return contextlib.nullcontext
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return lambda: torch.autocast(device_type="cuda", dtype=dtype)
