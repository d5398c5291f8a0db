"""gzpipe from Python: the functions the CLI's commands call, for a notebook.

    import gzpipe
    model = gzpipe.load_model("artifacts/ensemble_stacked")      # any finished run or export
    df = model.predict(["galaxy1.jpg", pil_image, array], cumulative=True)   # a DataFrame, one row per image
    table = gzpipe.read_comparison("artifacts")                   # the study's comparison table

Modelled on timm's ``create_model`` (a model by name or folder) and Zoobot's ``predict_on_catalog`` (a catalogue in,
a DataFrame out). ``Model.predict`` runs the same code as ``gzpipe predict`` (``gzpipe.predict``'s parts, loaders
and preprocessing): an image given in memory is handed to the loaders as the lossless PNG of its pixels, so a PIL
image, an array and the file they came from predict alike.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from gzpipe import schema
from gzpipe.errors import GzpipeError

__all__ = ["Model", "load_model", "read_comparison", "shard", "study", "TARGETS", "KAGGLE_COLUMNS"]

TARGETS = list(schema.TARGET_NAMES)  # the 30 columns of every prediction, in order
KAGGLE_COLUMNS = list(schema.KAGGLE_COLUMNS)  # the cumulative columns predict(cumulative=True) adds


@dataclass
class Model:
    """A finished gzpipe model (a backbone, a booster through its backbone's features, or an ensemble), loaded
    once; ``predict`` as often as wanted. Made by ``load_model``."""

    path: Path
    predictor: Any  # gzpipe.predict.model.Predictor
    device: Any

    @property
    def name(self) -> str:
        return self.predictor.name

    @property
    def kind(self) -> str:
        """backbone, booster, ensemble or export (a shared model)."""
        return self.predictor.kind

    @property
    def questions(self) -> list[str]:
        """The questions the model had training labels for (the others are predicted empty, NaN)."""
        left = set(self.predictor.untrained())
        return [t for t in schema.TASK_SLICES if t not in left]

    @property
    def members(self) -> list[str]:
        return [m.name for m in self.predictor.members]

    def __repr__(self) -> str:
        return (f"gzpipe.Model({self.name!r}, kind={self.kind!r}, members={len(self.members)}, "
                f"questions={len(self.questions)} of 10, device={str(self.device)!r})")

    def predict(self, images, *, cumulative: bool = False, tta: int = 1, tta_kind: str = "dihedral",
                batch_size: int = 32, workers: int = 0, backend: str = "auto", spread: bool | None = None,
                catalogue: str | None = None, ids: list[str] | None = None, id_column: str | None = None,
                path_column: str | None = None, images_folder: str | Path | None = None) -> pd.DataFrame:
        """Predict the 30 GZ2 vote fractions of ``images``: one path or a list of them (image files, FITS, folders,
        tar files, shard folders, catalogue files), PIL images, H x W x 3 uint8 arrays (or H x W, or 16-bit / float
        ones, scaled as `shard` scales them), or a pandas DataFrame catalogue (an id column and an image-path
        column, or a column holding the images; relative paths from ``images_folder``).

        Returns a DataFrame, one row per image in the order given: ``id`` (the file's stem, the catalogue's id, or
        the position of an in-memory image unless ``ids`` are given), ``path``, ``error`` (why an image could not be
        used; its fractions are NaN), the 30 fractions under their GZ2 answer names (``gzpipe.TARGETS``; NaN for a
        question the model never had labels for), with ``cumulative`` Kaggle's 37 cumulative columns, and for an
        ensemble (``spread``, on by default there) each target's spread across its members (``<target>_spread``).
        ``tta`` averages that many views (``tta_kind``: dihedral, angles or rotate: see ``gzpipe.loaders.tta``);
        ``catalogue`` picks whose labels a model trained on several catalogues predicts (``gzpipe predict
        --catalogue``)."""
        from gzpipe.predict import PredictConfig, _run_part, _validate
        from gzpipe.predict.parts import plan_parts
        from gzpipe.progress import progress_bar

        items, shard_folders = _items(images, ids, id_column, path_column, images_folder)
        cfg = PredictConfig(model=str(self.path), inputs=[], tta=tta, tta_kind=tta_kind, cumulative=cumulative,
                            batch_size=batch_size, workers=workers, backend=backend, catalogue=catalogue,
                            spread=(len(self.members) > 1) if spread is None else spread)
        _validate(cfg)
        self.predictor.use_catalogue(catalogue)
        parts = plan_parts(items, shard_folders, part_size=max(1, len(items)) or 1)
        tables = []
        with progress_bar(f"predict {self.name}", total=sum(p.rows for p in parts), unit="img") as bar:
            for part in parts:
                tables.append(_run_part(part, self.predictor, cfg, bar).to_pandas())
        df = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["id", "path", "error", *TARGETS])
        df["error"] = df["error"].fillna("")
        return df


def load_model(path: str | Path, *, device: str = "auto", catalogue: str | None = None) -> Model:
    """Any finished model: a backbone, booster or ensemble run folder (``artifacts/resnet50``,
    ``artifacts/lightgbm_resnet50``, ``artifacts/ensemble_stacked``) or a ``gzpipe export`` folder of any of them.
    ``device``: auto (the GPU when there is one), cpu, cuda or cuda:N. An out-of-date or unfinished model is a
    one-line error saying what to run."""
    from gzpipe import runs
    from gzpipe.device import check_device_name, resolve_device
    from gzpipe.predict.model import load_predictor

    check_device_name(device)
    p = Path(path)
    runs.model_kind(p)
    dev = resolve_device(device)
    predictor = load_predictor(p, dev)
    predictor.use_catalogue(catalogue)
    return Model(p, predictor, dev)


def read_comparison(out: str | Path = "artifacts") -> pd.DataFrame:
    """The study's comparison table (``<out>/model_comparison/comparison_table.csv``, as `gzpipe report` wrote it:
    one row per model, sorted as the report's figures), or, before a report, the same rows gathered from the
    finished runs."""
    from gzpipe.report.collect import collect

    f = Path(out) / "model_comparison" / "comparison_table.csv"
    if f.exists():
        return pd.read_csv(f)
    table, _, _ = collect(Path(out))
    if table.empty:
        raise GzpipeError(f"no finished model in {out}; run `gzpipe study` (or gzpipe.study()) first")
    return table.sort_values("mae").reset_index(drop=True)


def shard(catalog: str | Path | list, images: str | Path | list | None = None, out: str | Path = "shards",
          **options) -> dict:
    """`gzpipe shard`: catalogue(s) and images -> WebDataset shards; returns the manifest. ``options`` are
    ``gzpipe shard``'s, by their Python names (``resize=128``, ``target="weighted_fraction"``, ``stretch="asinh"``,
    ``workers=2`` ...: ``gzpipe.shard.ShardConfig``)."""
    from gzpipe.shard import ShardConfig, run_shard

    many = isinstance(catalog, (list, tuple))
    cfg = ShardConfig(catalog=[Path(c) for c in catalog] if many else Path(catalog),
                      images=([Path(i) for i in images] if isinstance(images, (list, tuple)) else
                              Path(images) if images is not None else None), out=Path(out), **options)
    return run_shard(cfg)


def study(preset: str | None = "demo", *, config: str | Path | None = None, out: str | None = None,
          force: Iterable[str] | str | None = None, **overrides) -> pd.DataFrame:
    """`gzpipe study`: the whole comparison, resumable; returns its comparison table (``read_comparison``).
    ``overrides`` are a study config's sections (``backbones=["resnet50"]``, ``train={"epochs": 2}``,
    ``engines=["lightgbm"]``, ``methods=["equal"]``, ``data={...}``), applied over the preset and ``config``."""
    from gzpipe.study import parse_stages, resolve_study, run_study

    cfg = resolve_study(preset, config, out, overrides=overrides)
    run_study(cfg, parse_stages(",".join(force) if isinstance(force, (list, tuple, set)) else force))
    return read_comparison(cfg.out)


# ---- what predict() takes --------------------------------------------------------------------------------------

def _items(images, ids, id_column, path_column, base) -> tuple[list, list[Path]]:
    """Every input as predict's items (in-memory images as the PNG of their pixels) and shard folders."""
    from gzpipe.predict.inputs import Inputs, Item, collect_inputs, frame_items

    if isinstance(images, pd.DataFrame):
        where = "the DataFrame"
        return frame_items(images, Path(base) if base else Path.cwd(), id_column, path_column, where), []
    if isinstance(images, (str, Path)) or not isinstance(images, (list, tuple)):
        images = [images]
    found = Inputs()
    for k, x in enumerate(images):
        if isinstance(x, (str, Path)):
            got = collect_inputs([x], Path(base) if base else None, id_column, path_column)
            found.items += got.items
            found.shard_folders += got.shard_folders
        else:
            found.items.append(Item(str(k), f"<image {k}>", _encoded(x, k)))
    if ids is not None:
        if len(ids) != len(found.items):
            raise GzpipeError(f"ids: {len(ids)} given for {len(found.items)} images")
        found.items = [replace(it, id=str(i)) for it, i in zip(found.items, ids)]
    return found.items, found.shard_folders


def _encoded(x, k: int) -> bytes:
    """An in-memory image as lossless file bytes the loaders read as they read files: PNG for 8- and 16-bit
    integers, TIFF for floats (OpenCV writes both)."""
    from PIL import Image

    if isinstance(x, Image.Image):
        buf = io.BytesIO()
        (x if x.mode in ("RGB", "L", "I;16", "RGBA", "LA", "P", "I", "F") else x.convert("RGB")).save(
            buf, format="TIFF" if x.mode in ("I", "F") else "PNG")
        return buf.getvalue()
    try:
        import torch

        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    a = np.asarray(x)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[2] not in (1, 3):
        raise GzpipeError(f"image {k} is {a.shape[0]} x {a.shape[1]} x {a.shape[2]}: give H x W x 3 (channels last), "
                          "not channels first (a torch tensor's layout; .permute(1, 2, 0) it)")
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3, 4)):
        raise GzpipeError(f"image {k} has shape {a.shape}: give H x W x 3 (RGB), H x W (grey) or a PIL image")
    import cv2

    if a.dtype == np.uint8 or a.dtype == np.uint16:
        bgr = a[..., ::-1] if a.ndim == 3 and a.shape[2] >= 3 else a
        ok, buf = cv2.imencode(".png", np.ascontiguousarray(bgr))
    elif np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer):
        f = a.astype(np.float32)
        ok, buf = cv2.imencode(".tiff", np.ascontiguousarray(f[..., ::-1] if f.ndim == 3 and f.shape[2] >= 3 else f))
    else:
        raise GzpipeError(f"image {k} is an array of {a.dtype}; give numbers (uint8, uint16 or float)")
    if not ok:
        raise GzpipeError(f"image {k} ({a.shape}, {a.dtype}) could not be encoded")
    return buf.tobytes()
