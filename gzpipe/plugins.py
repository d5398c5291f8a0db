"""Plug-ins: modules that register more backbones, loader backends, boosting engines or ensemble methods.

A plug-in is a module whose import calls ``gzpipe.models.register``, ``gzpipe.loaders.register`` or
``gzpipe.boost.register``. The `gzpipe` command imports the plug-ins it is told about before it reads its options,
so their names are valid everywhere (``--backbone``, a study's ``backbones:``, ``--engine``, ``--backend``):

* installed packages that declare an entry point in the group ``gzpipe.plugins``;
* modules named in ``GZPIPE_PLUGINS`` (comma-separated import paths, e.g. ``mylab.gz_backbones``).
"""

from __future__ import annotations

import importlib
import os

from gzpipe.errors import GzpipeError

ENTRY_POINT_GROUP = "gzpipe.plugins"


def load_plugins() -> list[str]:
    """Import every plug-in; returns their names. A plug-in that fails to import is a one-line error."""
    loaded = []
    for name in [m.strip() for m in os.environ.get("GZPIPE_PLUGINS", "").split(",") if m.strip()]:
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - any failure of a user's module gets the same advice
            raise GzpipeError(f"GZPIPE_PLUGINS: cannot import {name} ({type(e).__name__}: {e})") from None
        loaded.append(name)
    try:
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                ep.load()
            except Exception as e:  # noqa: BLE001
                raise GzpipeError(f"plug-in {ep.name} ({ep.value}) failed to load ({type(e).__name__}: {e})") from None
            loaded.append(ep.name)
    except ImportError:  # pragma: no cover - Python without importlib.metadata
        pass
    return loaded
