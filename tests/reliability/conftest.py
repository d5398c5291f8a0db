"""Fixtures of the reliability suite: a synthetic release big enough that a stage has real work to interrupt."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def chaos_release(tmp_path_factory) -> Path:
    """160 synthetic galaxies (a couple of seconds of `gzpipe shard` work at shard size 8)."""
    from gzpipe.synth import SynthConfig, synth

    out = tmp_path_factory.mktemp("chaos_release")
    synth(SynthConfig(out=out, n=160, seed=3, workers=2))
    return out
