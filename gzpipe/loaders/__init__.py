"""Loaders: one batch contract (``Batch``), three backends registered by name.

``create_loader(shards, split, backend="auto"|"dali"|"nvjpeg"|"pil", image_size, batch_size, train, ...)``
returns a ``Loader``; iterating it yields one epoch of ``Batch`` es. Backends are a registry (``register``): each
declares its own availability and its place in ``auto``'s order (today DALI on a GPU when it imports, else nvJPEG
on a GPU, else PIL). Heavy imports (DALI) happen inside the backend that needs them.
"""

from gzpipe.loaders.registry import BACKENDS, Backend, check_backend_name, register, resolve_backend, unregister

__all__ = ["BACKENDS", "Backend", "Batch", "Loader", "Units", "check_backend_name", "create_loader", "create_unit_loader",
           "register", "resolve_backend", "unregister"]
_LAZY = {"Batch": "gzpipe.loaders.contract", "Loader": "gzpipe.loaders.create", "Units": "gzpipe.loaders.create",
         "create_loader": "gzpipe.loaders.create", "create_unit_loader": "gzpipe.loaders.create"}


def __getattr__(name: str):  # torch loads only when a loader is built, not for a name check in `--help`
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gzpipe.loaders' has no attribute {name!r}")
