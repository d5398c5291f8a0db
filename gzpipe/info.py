"""`gzpipe info`: what this machine offers gzpipe (library versions, CUDA, DALI, CPUs)."""

from __future__ import annotations

import importlib
import os
import platform


def _version(mod: str) -> str:
    try:
        return getattr(importlib.import_module(mod), "__version__", "installed")
    except Exception as e:  # noqa: BLE001 - report any import failure as text
        return f"not importable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"


def dali_usable() -> tuple[bool, str]:
    """Can a DALI pipeline run here? Builds and runs a one-operator CPU pipeline to find out."""
    try:
        from nvidia.dali import fn, pipeline_def, types  # noqa: F401

        @pipeline_def(batch_size=1, num_threads=1, device_id=None)
        def _p():
            return fn.constant(idata=[1], dtype=types.INT32)

        p = _p()
        p.build()
        p.run()
        return True, "CPU pipelines run" + (" (GPU too)" if cuda_usable()[0] else "")
    except Exception as e:  # noqa: BLE001
        return False, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def cuda_usable() -> tuple[bool, str]:
    import torch

    if not torch.cuda.is_available():
        return False, "no CUDA device"
    return True, f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def available_memory() -> int:
    """Bytes of memory available to new work (``MemAvailable`` on Linux; physical memory elsewhere)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def collect() -> dict[str, str]:
    from gzpipe import __version__

    cuda_ok, cuda_msg = cuda_usable()
    dali_ok, dali_msg = dali_usable()
    return {
        "gzpipe": __version__,
        "python": platform.python_version(),
        "torch": _version("torch"),
        "torchvision": _version("torchvision"),
        "DALI": _version("nvidia.dali"),
        "webdataset": _version("webdataset"),
        "xgboost": _version("xgboost"),
        "lightgbm": _version("lightgbm"),
        "CUDA": ("yes: " if cuda_ok else "no: ") + cuda_msg,
        "DALI usable": ("yes: " if dali_ok else "no: ") + dali_msg,
        "CPUs": str(cpu_count()),
    }
