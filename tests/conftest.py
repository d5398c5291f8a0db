"""Shared fixtures: a tiny synthetic release and its shards, made once per session; the real sample if present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GZPIPE_SHARED", ROOT.parent / "shared"))
SAMPLE = SHARED / "data" / "gz2_sample"
KAGGLE = SHARED / "data" / "kaggle_cosmic_compendium"


def pytest_collection_modifyitems(config, items):
    """Tests that read the real GZ2 images in ../shared carry the `real` marker (`-m "not real"` leaves them out)."""
    for item in items:
        if "real_sample" in getattr(item, "fixturenames", ()) or "real" in item.name:
            item.add_marker(pytest.mark.real)


@pytest.fixture(scope="session")
def synth_release(tmp_path_factory) -> Path:
    from gzpipe.synth import SynthConfig, synth

    out = tmp_path_factory.mktemp("synth")
    synth(SynthConfig(out=out, n=48, seed=1))
    return out


@pytest.fixture(scope="session")
def synth_shards(synth_release, tmp_path_factory) -> Path:
    from gzpipe.shard import ShardConfig, run_shard

    out = tmp_path_factory.mktemp("shards")
    run_shard(ShardConfig(catalog=synth_release / "gz2_hart16.csv", mapping=synth_release / "gz2_filename_mapping.csv",
                          images=synth_release / "images", out=out, shard_size=16, val=0.2, test=0.2))
    return out


@pytest.fixture(scope="session")
def real_sample() -> Path:
    if not (SAMPLE / "labels_manifest_800.csv").exists():
        pytest.skip(f"real GZ2 sample not found at {SAMPLE} (it lives in ../shared, absent on a user's machine)")
    return SAMPLE


def colour_of(i: int) -> tuple[int, int, int]:
    """A distinct, JPEG-robust colour per galaxy index of the marker fixture."""
    return (40 + (i * 37) % 180, 40 + (i * 71) % 180, 40 + (i * 113) % 180)


@pytest.fixture(scope="session")
def marker_shards(tmp_path_factory) -> Path:
    """40 galaxies whose image is a disc of a colour that encodes the id, with a white dot to the right of the
    centre (its position shows rotation and flips); target 0 = index / 100. Shards of 6 samples."""
    import pandas as pd
    from PIL import Image, ImageDraw

    from gzpipe import schema
    from gzpipe.shard import ShardConfig, run_shard

    root = tmp_path_factory.mktemp("marker")
    (root / "images").mkdir()
    rows = []
    for i in range(40):
        im = Image.new("RGB", (128, 128), (0, 0, 0))
        d = ImageDraw.Draw(im)
        d.ellipse((14, 14, 114, 114), fill=colour_of(i))
        d.ellipse((84, 58, 96, 70), fill=(255, 255, 255))  # dot at (+26, 0) from the centre
        im.save(root / "images" / f"{1000 + i}.jpg", quality=95)
        row = {"asset_id": 1000 + i}
        for k, n in enumerate(schema.TARGET_NAMES):
            row[f"{n}_debiased"] = (i / 100.0) if k == 0 else 0.5
        rows.append(row)
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    run_shard(ShardConfig(catalog=root / "labels.csv", images=root / "images", out=root / "shards", shard_size=6,
                          val=0.25, test=0.25))
    return root / "shards"


@pytest.fixture(scope="session")
def train_shards(synth_release, tmp_path_factory) -> Path:
    """The 48 synthetic galaxies stored at 40 px, shards of 8 (so two DDP ranks each get train shards)."""
    from gzpipe.shard import ShardConfig, run_shard

    out = tmp_path_factory.mktemp("train_shards")
    run_shard(ShardConfig(catalog=synth_release / "gz2_hart16.csv", mapping=synth_release / "gz2_filename_mapping.csv",
                          images=synth_release / "images", out=out, shard_size=8, val=0.2, test=0.2, resize=40))
    return out


@pytest.fixture(scope="session")
def chaos_release(tmp_path_factory) -> Path:
    """160 synthetic galaxies (a couple of seconds of `gzpipe shard` work at shard size 8)."""
    from gzpipe.synth import SynthConfig, synth

    out = tmp_path_factory.mktemp("chaos_release")
    synth(SynthConfig(out=out, n=160, seed=3, workers=2))
    return out
