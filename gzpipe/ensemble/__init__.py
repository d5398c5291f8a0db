"""`gzpipe ensemble --method NAME`: combinations of finished models, weighted from the validation split only and
evaluated on test: the seed's equal / accuracy / inverse_mae means of the backbones (``gzpipe.ensemble.weighted``)
and the per-target `stacked` selection over backbones and boosters (``gzpipe.ensemble.stacked``)."""

from gzpipe.ensemble.methods import METHODS

__all__ = ["METHODS", "EnsembleConfig", "finished_backbones", "load_weights", "run_ensemble", "weights_for"]
_LAZY = ("EnsembleConfig", "check_members", "finished_backbones", "load_weights", "member_predictions",
         "run_ensemble", "weights_for")


def __getattr__(name: str):
    if name in _LAZY:
        from gzpipe.ensemble import weighted

        return getattr(weighted, name)
    raise AttributeError(f"module 'gzpipe.ensemble' has no attribute {name!r}")
