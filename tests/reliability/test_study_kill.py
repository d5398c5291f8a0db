"""The whole study killed (SIGKILL, the process group) at a random point of each of its stages in turn, re-run after
every kill: the same command then finishes, and every model's test metrics equal an uninterrupted study's."""

from __future__ import annotations

import pandas as pd
import pytest

from chaos import assert_no_half_written_files, gzpipe, kill_in_every_stage, run_ok, stage_times, temporaries

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
# What the study leaves at the end of each stage, in the order it runs them.
MARKS = ["shards/manifest.json", "resnet50/checkpoints/*", "resnet50/training_complete.txt",
         "resnet50/features/meta.json", "xgboost_resnet50/boost_complete.txt", "lightgbm_resnet50/boost_complete.txt",
         "ensemble_equal/ensemble_complete.txt", "ensemble_inverse_mae/ensemble_complete.txt",
         "model_comparison/report.html"]


@pytest.mark.slow
def test_study_killed_anywhere_finishes_with_the_same_results(tmp_path):
    def study(out):
        cfg = tmp_path / f"{out.name}.yaml"
        cfg.write_text(CONFIG.format(out=out))
        return gzpipe("study", "--config", cfg)

    ref, out = tmp_path / "ref", tmp_path / "run"
    ends = stage_times(study(ref), ref, MARKS)
    assert ends == sorted(ends), f"the stages ended out of the expected order: {ends}"
    log = kill_in_every_stage(study(out), out, MARKS, ends, after_each=lambda: assert_no_half_written_files(out))
    assert len(log.kills) >= len(MARKS) - 2, log
    run_ok(study(out))
    cols = ["name", "kind", "accuracy", "mae", "rmse"]
    a = pd.read_csv(ref / "model_comparison/comparison_table.csv")[cols].sort_values("name").reset_index(drop=True)
    b = pd.read_csv(out / "model_comparison/comparison_table.csv")[cols].sort_values("name").reset_index(drop=True)
    assert len(a) == 5
    pd.testing.assert_frame_equal(a, b, atol=1e-6, rtol=0)
    assert not temporaries(out)
