"""Backbones by name. The registry (``register``, ``BACKBONES``, ``resolve_name``) imports no torch, so the CLI
lists names in `--help` quickly; ``create_model`` and ``GZModel`` (``gzpipe.models.build``) load torch when first
used."""

from gzpipe.models.registry import (ALIASES, BACKBONES, BackboneSpec, default_backbones, parse_backbones, register,
                                    resolve_name, unregister)

__all__ = ["ALIASES", "BACKBONES", "BackboneSpec", "default_backbones", "GZModel", "create_model", "load_backbone_weights",
           "parameter_count", "parse_backbones", "register", "resolve_name", "unregister"]
_LAZY = ("GZModel", "create_model", "load_backbone_weights", "parameter_count")


def __getattr__(name: str):
    if name in _LAZY:
        from gzpipe.models import build

        return getattr(build, name)
    raise AttributeError(f"module 'gzpipe.models' has no attribute {name!r}")
