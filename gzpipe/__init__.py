"""gzpipe: Galaxy Zoo catalogues and cutouts -> trained morphology models, compared; from the shell or Python.

    import gzpipe
    model = gzpipe.load_model("artifacts/ensemble_stacked")   # any finished run or export
    df = model.predict(["galaxy.jpg", pil_image, array])        # one row per image: the 30 GZ2 vote fractions
    gzpipe.read_comparison("artifacts")                        # the study's comparison table
    gzpipe.study("demo"), gzpipe.shard(catalog, images, out)   # the CLI's commands, as functions

The names are imported on first use (``gzpipe.api``), so `gzpipe --help` stays quick.
"""

__version__ = "0.2.0"

_API = ("Model", "load_model", "read_comparison", "shard", "study", "TARGETS", "KAGGLE_COLUMNS")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from gzpipe import api

        return getattr(api, name)
    raise AttributeError(f"module 'gzpipe' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
