"""The boosting engine registry (no heavy import: the CLI lists its names in `--help`). An engine is one module -
``Params`` (its own parameters), ``pick_device(cfg)``, ``train(cfg, params, run_dir, data)`` (``data``: a
``gzpipe.boost.data.FeatureData``, the features through the booster's reduction) and
``load(run_dir, config, metrics)``, optionally ``DEFAULT_OBJECTIVE`` (``l2`` when absent) - and one ``register``
line; nothing else in gzpipe names it."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from gzpipe.errors import GzpipeError


@dataclass(frozen=True)
class Engine:
    name: str
    module: str | object  # import path of the engine module, or a module-like object (tests, plug-ins)

    def impl(self):
        return importlib.import_module(self.module) if isinstance(self.module, str) else self.module


ENGINES: dict[str, Engine] = {}


def register(name: str, module: str | object) -> Engine:
    ENGINES[name] = Engine(name, module)
    return ENGINES[name]


def unregister(name: str) -> None:
    ENGINES.pop(name, None)


register("xgboost", "gzpipe.boost.xgb")
register("lightgbm", "gzpipe.boost.lgbm")


def engine(name: str, option: str = "--engine") -> Engine:
    if name not in ENGINES:
        raise GzpipeError(f"unknown {option} {name!r}; choose one of {', '.join(ENGINES)}")
    return ENGINES[name]
