"""The loader backend registry (no torch import: the CLI lists its names in `--help` without loading torch).

A backend is a module with ``build(shards, **options)`` returning a function of the epoch that yields ``Batch``es,
registered with its place in ``auto``'s order and its own availability check. The options: ``image_size``,
``batch_size``, ``train``, ``device``, ``workers``, ``seed``, ``rank``, ``shuffle_buffer``, ``crop`` (the share of the
image side the model sees: ``gzpipe.loaders.presets.preset_for(train, crop)`` gives the augmentation preset), and
``world`` for a backend that ``reads_shards_itself``."""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import Callable

from gzpipe.errors import GzpipeError


@dataclass(frozen=True)
class Backend:
    """A loader backend: ``module.build(shards, **options)`` returns a function of the epoch yielding ``Batch``es.

    ``auto`` picks, for the device at hand, the available backend with the lowest ``priority`` among those whose
    ``auto_on`` names that device type. ``available()`` says whether it can run here, and why not."""

    name: str
    module: str  # import path of the module with build(...)
    priority: int  # auto's order: lower is tried first
    auto_on: tuple[str, ...]  # device types ("cuda", "cpu") on which auto may pick it
    needs_cuda: bool = False
    reads_shards_itself: bool = False  # True: the backend splits by rank itself (DALI's shard_id / num_shards)
    reads_units: bool = True  # False: it reads tar shards only, not other units (predict's chunks of image files)
    available: Callable[[], tuple[bool, str]] = lambda: (True, "")
    install_hint: str = ""


BACKENDS: dict[str, Backend] = {}


def register(b: Backend) -> Backend:
    BACKENDS[b.name] = b
    return b


def unregister(name: str) -> None:
    BACKENDS.pop(name, None)


@functools.lru_cache(maxsize=1)
def _dali_available() -> tuple[bool, str]:
    """DALI imports and decodes a JPEG here (once per process: it imports nvidia.dali and runs a one-image
    pipeline, ~1 s)."""
    try:
        importlib.import_module("nvidia.dali")
    except Exception as e:  # noqa: BLE001 - any failure means "not usable here"
        return False, f"nvidia.dali does not import ({type(e).__name__})"
    from gzpipe.loaders.dali import decodes_here

    return decodes_here()


def _cuda_available() -> tuple[bool, str]:
    from gzpipe.device import cuda_available

    return (True, "") if cuda_available() else (False, "no CUDA device")


@functools.lru_cache(maxsize=1)
def _nvjpeg_available() -> tuple[bool, str]:
    """CUDA is there and torchvision's GPU decoder decodes a JPEG (a torchvision built without nvJPEG, or one whose
    nvJPEG does not load, passed the CUDA check and failed on its first batch)."""
    ok, why = _cuda_available()
    if not ok:
        return ok, why
    from gzpipe.loaders.nvjpeg import decodes_here

    return decodes_here()


# DALI's CPU-only pipeline is slower than `pil` on a CPU (benchmarks/RESULTS.md), so auto picks it on GPUs only.
register(Backend("dali", "gzpipe.loaders.dali", priority=0, auto_on=("cuda",), reads_shards_itself=True,
                 reads_units=False,
                 available=_dali_available, install_hint="pip install nvidia-dali-cuda130"))
register(Backend("nvjpeg", "gzpipe.loaders.nvjpeg", priority=1, auto_on=("cuda",), needs_cuda=True,
                 available=_nvjpeg_available))
register(Backend("pil", "gzpipe.loaders.pil", priority=2, auto_on=("cuda", "cpu")))


def check_backend_name(name: str, option: str = "--backend") -> str:
    """Validate the spelling only (for configs checked before any work)."""
    if name != "auto" and name not in BACKENDS:
        raise GzpipeError(f"unknown loader backend {name!r}; choose one of auto, {', '.join(BACKENDS)}")
    return name


def resolve_backend(name: str, device, units: bool = False) -> str:
    """The backend to use: ``name``, checked; or, for ``auto``, the first available in priority order. With
    ``units``, only backends that read other units than shards (``reads_units``)."""
    check_backend_name(name)
    if name == "auto":
        for b in sorted(BACKENDS.values(), key=lambda b: b.priority):
            if (device.type in b.auto_on and (not b.needs_cuda or device.type == "cuda") and (b.reads_units or not units)
                    and b.available()[0]):
                return b.name
        raise GzpipeError(f"no loader backend can run on {device.type} here; choose one of {', '.join(BACKENDS)}")
    b = BACKENDS[name]
    if units and not b.reads_units:
        usable = [o.name for o in BACKENDS.values() if o.reads_units]
        raise GzpipeError(f"the {name} loader backend reads shard folders only; for image files use "
                          f"{' or '.join(usable)} (or auto)")
    if b.needs_cuda and device.type != "cuda":
        usable = [o.name for o in BACKENDS.values() if not o.needs_cuda]
        raise GzpipeError(f"the {name} loader backend needs a CUDA device; on the CPU use {' or '.join(usable)}")
    ok, why = b.available()
    if not ok:
        raise GzpipeError(f"the {name} loader backend is not usable here ({why})"
                          + (f"; {b.install_hint}" if b.install_hint else ""))
    return name
