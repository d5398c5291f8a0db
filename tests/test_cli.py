import subprocess
import sys

import pytest
from typer.testing import CliRunner

from gzpipe.cli import app

runner = CliRunner()


@pytest.mark.parametrize("cmd", [[], ["info"], ["synth"], ["shard"], ["demo"], ["bench"], ["bench", "loader"],
                                 ["bench", "train"], ["train"], ["features"], ["boost"], ["ensemble"], ["report"],
                                 ["study"]])
def test_help_explains(cmd):
    r = runner.invoke(app, [*cmd, "--help"])
    assert r.exit_code == 0 and "Usage" in r.output and len(r.output) > 120


def test_boost_param_help_names_every_builtin_engine_key():
    import dataclasses
    import re

    from gzpipe.boost.registry import engine

    text = " ".join(runner.invoke(app, ["boost", "--help"], terminal_width=200).output.split())
    for name in ("lightgbm", "xgboost"):
        for f in dataclasses.fields(engine(name).impl().Params):
            assert re.search(rf"\b{f.name}\b", text), f"--param help does not name {name}'s {f.name}"


def test_info_reports_versions_cuda_dali_cpus():
    r = runner.invoke(app, ["info"])
    assert r.exit_code == 0
    for key in ("torch", "torchvision", "DALI", "xgboost", "lightgbm", "CUDA", "DALI usable", "CPUs"):
        assert key in r.output


def _run(*args):
    return subprocess.run([sys.executable, "-m", "gzpipe", *args], capture_output=True, text=True)


def test_bad_input_is_one_line_without_traceback(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    r = _run("shard", "--catalog", str(tmp_path / "empty.csv"), "--images", str(tmp_path), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "empty" in r.stderr
    r = _run("shard", "--catalog", str(tmp_path / "nope.csv"), "--images", str(tmp_path), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "catalogue not found" in r.stderr and "Traceback" not in r.stderr


def test_synth_then_shard_end_to_end(tmp_path):
    r = _run("synth", str(tmp_path / "s"), "--n", "12", "--seed", "5")
    assert r.returncode == 0, r.stderr
    r = _run("shard", "--catalog", str(tmp_path / "s/gz2_hart16.csv"), "--mapping", str(tmp_path / "s/gz2_filename_mapping.csv"),
             "--images", str(tmp_path / "s/images"), "--out", str(tmp_path / "sh"), "--workers", "2", "--shard-size", "4")
    assert r.returncode == 0, r.stderr
    assert "12 written, 0 rejected of 12 inputs" in r.stdout
    assert (tmp_path / "sh/manifest.json").exists() and list((tmp_path / "sh").glob("train-*.idx"))


def test_train_option_choices_are_the_configs_own(tmp_path):
    """The CLI spells `--loss`, `--select` and `--head` choices as Literals (importing the training config would
    import torch for every `gzpipe --help`); they must stay the values the config accepts."""
    import re

    from gzpipe.models.heads import HEADS
    from gzpipe.train.config import LOSSES, SELECT

    for option, values in (("--loss", LOSSES), ("--select", SELECT), ("--head", tuple(HEADS))):
        r = runner.invoke(app, ["train", "--shards", str(tmp_path), option, "no-such-choice"], terminal_width=300)
        assert r.exit_code == 2, r.output
        listed = re.findall(r"'([^']+)'", " ".join(r.output.split()).split("is not one of", 1)[1])
        assert tuple(listed) == values, (option, r.output)
