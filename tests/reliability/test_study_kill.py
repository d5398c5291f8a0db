"""The whole study killed (SIGKILL, the process group) at random points, several times over: re-running the same
command finishes, and every model's test metrics equal an uninterrupted study's."""

from __future__ import annotations

import pandas as pd
import pytest

from chaos import assert_no_half_written_files, gzpipe, kill_at_random_points, run_ok, temporaries, timed_run

CONFIG = """\
preset: demo
data: {{synth: {{n: 80, seed: 4}}}}
shard: {{resize: 40, shard_size: 8, val: 0.2, test: 0.2, workers: 2}}
train: {{image_size: 32, epochs: 4, batch_size: 8, workers: 1, backend: pil, device: cpu, checkpoint_minutes: 0}}
boost: {{rounds: 80, early_stopping: 80}}
backbones: [resnet50]
engines: [xgboost, lightgbm]
methods: [equal, inverse_mae]
out: {out}
"""


@pytest.mark.slow
def test_study_killed_anywhere_finishes_with_the_same_results(tmp_path):
    def study(out):
        cfg = tmp_path / f"{out.name}.yaml"
        cfg.write_text(CONFIG.format(out=out))
        return gzpipe("study", "--config", cfg)

    ref, out = tmp_path / "ref", tmp_path / "run"
    timing = timed_run(study(ref))
    log = kill_at_random_points(study(out), timing, kills=6, after_each=lambda: assert_no_half_written_files(out))
    assert len(log.kills) >= 3
    run_ok(study(out))
    cols = ["name", "kind", "accuracy", "mae", "rmse"]
    a = pd.read_csv(ref / "model_comparison/comparison_table.csv")[cols].sort_values("name").reset_index(drop=True)
    b = pd.read_csv(out / "model_comparison/comparison_table.csv")[cols].sort_values("name").reset_index(drop=True)
    assert len(a) == 5
    pd.testing.assert_frame_equal(a, b, atol=1e-6, rtol=0)
    assert not temporaries(out)
