"""benchmarks/pool_splits.py: a change judged on the random-draw test galaxies of several splits, pooled."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import SHARED
from gzpipe import schema
from gzpipe.labels import split_labels
from gzpipe.shard import ShardConfig, run_shard

ROOT = Path(__file__).resolve().parent.parent
FULL = SHARED / "data" / "kaggle_full_labels"


def _pool(*pairs) -> list[dict]:
    cmd = [sys.executable, str(ROOT / "benchmarks/pool_splits.py")]
    for p in pairs:
        cmd += ["--pair", *map(str, p)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def test_pooling_two_splits_finds_the_better_predictions_and_no_difference_between_equal_ones(tmp_path):
    if not (FULL / "labels_kaggle_37col_2000.csv").exists():
        pytest.skip(f"the random Kaggle draw is not at {FULL} (it lives in ../shared, absent on a user's machine)")
    cat = tmp_path / "random.csv"
    pd.read_csv(FULL / "labels_kaggle_37col_2000.csv", dtype={"GalaxyID": str}).head(160).to_csv(cat, index=False)
    rng = np.random.default_rng(0)
    names = list(schema.TARGET_NAMES)
    pairs = []
    for seed in (1, 2):  # two split seeds: other galaxies in test
        shards = tmp_path / f"s{seed}"
        run_shard(ShardConfig(catalog=[cat], images=[FULL / "images"], out=shards, seed=seed, resize=16,
                              val=0.2, test=0.3, shard_size=100, random_draw=[cat.name]))
        lab = split_labels(shards, "test")
        truth = lab[names].fillna(0).to_numpy()
        for name, noise in (("base", 0.12), ("new", 0.04)):
            p = np.clip(truth + rng.normal(0, noise, truth.shape), 0, 1)
            pd.DataFrame(p, columns=names).assign(id=lab.index).to_parquet(tmp_path / f"{name}{seed}.parquet")
        pairs.append((shards, tmp_path / f"base{seed}.parquet", tmp_path / f"new{seed}.parquet"))
    rows = _pool(*pairs)
    assert len(rows) == 3 and rows[-1]["pooled"] and rows[-1]["splits"] == 2
    assert {r["shards"] for r in rows[:2]} == {str(p[0].resolve()) for p in pairs}
    for r in rows[:2]:
        assert r["galaxies"] > 20 and r["new_rmse"] < r["base_rmse"] and r["difference"][2] < 0
    assert rows[-1]["difference"][2] < 0 and rows[-1]["beyond_chance"]
    # the same predictions on both sides: no difference, not beyond chance
    same = _pool(*[(s, b, b) for s, b, _ in pairs])[-1]
    assert same["difference"] == [0, 0, 0] and not same["beyond_chance"]
