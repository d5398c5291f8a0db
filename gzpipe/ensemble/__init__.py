"""`gzpipe ensemble --method NAME`: combinations of finished models, weighted from the validation split only and
evaluated on test: the seed's equal / accuracy / inverse_mae means of the backbones (``gzpipe.ensemble.weighted``)
and the per-target `stacked` selection over backbones and boosters (``gzpipe.ensemble.stacked``). Both read their
members through ``gzpipe.ensemble.members``; ``gzpipe.ensemble.stage`` runs one and writes its folder (imports go
one way: stage -> methods -> members)."""

from gzpipe.ensemble.methods import METHODS

__all__ = ["METHODS", "EnsembleConfig", "finished_backbones", "load_weights", "run_ensemble", "weights_for"]
_LAZY = {"EnsembleConfig": "stage", "run_ensemble": "stage", "load_weights": "stage", "weights_for": "weighted",
         "check_members": "members", "finished_backbones": "members", "member_predictions": "members"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"gzpipe.ensemble.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'gzpipe.ensemble' has no attribute {name!r}")
