"""What `gzpipe shard` is asked to do (``ShardConfig``), checked before any work, and which of its settings change
what the shards hold."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gzpipe.catalog import SUM_TOLERANCE, CatalogSource
from gzpipe.errors import CatalogError, GzpipeError
from gzpipe.fileio import check_out_folder
from gzpipe.pixels import DEFAULT_STRETCH, check_stretch
from gzpipe.shard.images import VERIFY_MODES
from gzpipe.shard.splits import assign_splits, in_fraction
from gzpipe.union import sources_of


@dataclass
class ShardConfig:
    catalog: Path | list[Path]  # several: one shard set over their union (gzpipe.union)
    images: Path | None | list  # None: the catalogue says where each image is; a list: one folder per catalogue
    out: Path
    mapping: Path | None = None
    format: str = "auto"
    target: str | None = None  # Hart16's column family (None: debiased); Kaggle and galaxy-datasets hold one kind
    fraction: float = 1.0
    train_fraction: float = 1.0  # keep this share of the train split only (val and test whole): a learning curve
    val: float = 0.1
    test: float = 0.1
    seed: int = 42
    resize: int | None = None
    quality: int = 90
    shard_size: int = 1000
    workers: int = 1
    verify: str = "decode"
    stretch: str = DEFAULT_STRETCH  # deep images (16-bit, float) and FITS to 8 bits: gzpipe.pixels.stretch
    max_rejected: float = 0.1  # share of the inputs; above it the run fails (the manifest is still written)
    all_questions: bool = False  # a catalogue without some of the 10 questions is an error (not masked, with a note)
    sum_tolerance: float = SUM_TOLERANCE  # how far from 1 a reached question's fractions may sum (kinds that do)
    # the catalogues (of those given) whose galaxies are a random draw of the galaxies the models are for: the
    # report leads with the Kaggle metric on them and `train --select kaggle` early-stops on their val galaxies
    random_draw: list | None = None
    force: bool = False  # rebuild a finished folder with other settings (beside it, swapped in when complete)

    def validate(self, check_paths: bool = True) -> None:
        if self.shard_size < 1:
            raise GzpipeError("shard_size must be at least 1")
        if self.resize is not None and not 8 <= self.resize <= 4096:
            raise GzpipeError(f"resize must be between 8 and 4096 px, got {self.resize}")
        if not 1 <= self.quality <= 100:
            raise GzpipeError(f"quality must be 1..100, got {self.quality}")
        check_stretch(self.stretch)
        if not 0 < self.sum_tolerance <= 1:
            raise GzpipeError(f"sum_tolerance must be in (0, 1], got {self.sum_tolerance:g}")
        if self.verify not in VERIFY_MODES:
            raise GzpipeError(f"verify must be one of {', '.join(VERIFY_MODES)}")
        if not 0 <= self.max_rejected <= 1:
            raise GzpipeError(f"max_rejected must be in [0, 1], got {self.max_rejected}")
        if self.workers < 1:
            raise GzpipeError("workers must be at least 1")
        try:
            assign_splits([], self.seed, self.val, self.test)
            in_fraction([], self.seed, self.fraction)
            in_fraction([], self.seed, self.train_fraction)
        except ValueError as e:
            raise GzpipeError(str(e)) from None
        for key in ("val", "test"):
            if getattr(self, key) <= 0:
                raise GzpipeError(f"{key} must be above 0 (got {getattr(self, key):g}): training early-stops and "
                                  "weights its ensembles on the val split and scores every model on the test split")
        check_out_folder(self.out, what="the shard folder")
        self.random_draw_indices()
        sources = self.sources()  # one --images for all catalogues, or one each
        for c in {s.catalog for s in sources}:
            if check_paths and not Path(c).is_file():
                raise GzpipeError(f"catalogue not found: {c}" if not Path(c).exists() else
                                  f"--catalog {c} is a folder; give the catalogue file")
        for images in {s.images for s in sources if s.images is not None}:
            if check_paths and Path(images).exists() and not Path(images).is_dir():
                raise GzpipeError(f"--images {images} is a file; give the folder of the images")
            if check_paths and not Path(images).is_dir():
                raise GzpipeError(f"image folder not found: {images}")

    def random_draw_indices(self) -> list[int]:
        """The positions among the catalogues of those named by ``random_draw`` (a path as given, or its file name)."""
        cats = self.catalogs()
        out = []
        for r in self.random_draw or []:
            hits = [k for k, c in enumerate(cats) if str(c) == str(r) or Path(c).name == Path(str(r)).name]
            if not hits:
                raise GzpipeError(f"--random-draw {r} is not one of the --catalog files ({', '.join(c.name for c in cats)})")
            out += [k for k in hits if k not in out]
        return out

    def catalogs(self) -> list[Path]:
        return [Path(c) for c in self.catalog] if isinstance(self.catalog, (list, tuple)) else [Path(self.catalog)]

    def sources(self) -> list[CatalogSource]:
        """One ``CatalogSource`` per catalogue (``images``: one folder for all, or one per catalogue)."""
        images = list(self.images) if isinstance(self.images, (list, tuple)) else \
            [] if self.images is None else [self.images]
        try:
            return sources_of(self.catalogs(), images, mapping=self.mapping and Path(self.mapping),
                              format=self.format, target=self.target, all_questions=self.all_questions,
                              sum_tolerance=self.sum_tolerance)
        except CatalogError as e:
            raise GzpipeError(str(e)) from None


# ShardConfig keys that change what the shards hold (the rest - workers, max_rejected, force - only how they are
# written); with the catalogue's and mapping's contents and the image folder, what a finished folder is compared on
SETTINGS = ("format", "target", "fraction", "train_fraction", "val", "test", "seed", "resize", "quality", "shard_size",
            "verify", "all_questions", "stretch", "sum_tolerance", "random_draw")
