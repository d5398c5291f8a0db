"""Shared fixtures: a tiny synthetic release and its shards, made once per session; the real sample if present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GZPIPE_SHARED", ROOT.parent / "shared"))
SAMPLE = SHARED / "data" / "gz2_sample"
KAGGLE = SHARED / "data" / "kaggle_cosmic_compendium"


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
