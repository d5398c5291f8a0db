"""`gzpipe boost --engine NAME --backbone NAME`: gradient-boosted trees on a backbone's cached penultimate
features, predicting the 30 targets; early-stopped on val, evaluated on test, predictions clipped to [0, 1]. Masked
targets are handled per target (they add neither gradient nor hessian), never by dropping rows.

Engines are plug-ins: an engine is one module (``Params``, ``pick_device``, ``train``, ``load``) and one
``register`` line; nothing else names it. ``predict``, ``ensemble`` and ``report`` read the engine from the run's
``config.json``. Output ``<out>/<engine>_<backbone>/`` (see ``gzpipe.runs``): the model(s) in the engine's own
format (never pickle), ``config.json``, ``metrics.json``, ``{val,test}_predictions.parquet``, ``inputs.json`` and
the completion marker, written last. A finished booster is skipped unless ``force``; one whose features or
checkpoint changed since it was trained is refused (``force`` retrains it).
"""

from gzpipe.boost.registry import ENGINES, Engine, engine, register, unregister

__all__ = ["ENGINES", "BoostConfig", "Engine", "TrainedBooster", "engine", "engine_params", "load_booster", "register",
           "run_boost", "split_boost_section", "unregister", "validate"]
_LAZY = ("BoostConfig", "TrainedBooster", "COMMON_KEYS", "engine_params", "load_booster", "run_boost",
         "split_boost_section", "validate")


def __getattr__(name: str):  # the stage (pandas, pyarrow, torch) loads when first used, not for `--help`
    if name in _LAZY:
        from gzpipe.boost import stage

        return getattr(stage, name)
    raise AttributeError(f"module 'gzpipe.boost' has no attribute {name!r}")
