"""A command retried with a bad option never destroys finished work.

For every stage: a finished run, then the same command with its replace flag (`--force`, `--restart`) and one bad
option. Each must end with one line on stderr (exit 2) and leave the whole folder byte-identical, hidden files and
folders included (no staging folder left behind). Then the re-run contract (``gzpipe.rerun``): a finished run is
skipped or kept with its differences listed; a replacement is built beside the old run and swapped in only when
complete, so a stopped replacement leaves the finished run as it was."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from chaos import ENV, gzpipe, run_ok

from gzpipe.cli import main

CUDA = torch.cuda.is_available()


def tree_state(root: Path) -> dict[str, str]:
    """Every file (sha256) and folder under ``root``, hidden ones included."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "folder" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def finished(tmp_path_factory, synth_release):
    """A finished shard folder and artifacts folder: resnet50, its features, both boosters, two ensembles."""
    root = tmp_path_factory.mktemp("retry")
    shards, art = root / "shards", root / "art"
    run = lambda *a: main([str(x) for x in a])  # noqa: E731 - in-process: no interpreter start per command
    for cmd in (
        ["shard", "--catalog", synth_release / "gz2_hart16.csv", "--mapping", synth_release /
         "gz2_filename_mapping.csv", "--images", synth_release / "images", "--out", shards, "--resize", "40",
         "--shard-size", "8", "--val", "0.2", "--test", "0.2"],
        ["train", "--backbone", "resnet50", "--shards", shards, "--out", art, "--epochs", "1", "--image-size", "32",
         "--batch-size", "4", "--workers", "0", "--device", "cpu", "--warmup-epochs", "1", "--backend", "pil"],
        ["features", "--backbone", "resnet50", "--out", art, "--workers", "0", "--device", "cpu", "--backend", "pil"],
        ["boost", "--engine", "xgboost", "--backbone", "resnet50", "--out", art, "--rounds", "5", "--device", "cpu"],
        ["boost", "--engine", "lightgbm", "--backbone", "resnet50", "--out", art, "--rounds", "5", "--device", "cpu"],
        ["ensemble", "--method", "equal", "--out", art],
        ["ensemble", "--method", "stacked", "--out", art],
    ):
        try:
            run(*cmd)
        except SystemExit as e:
            assert e.code in (0, None), cmd
    return {"SHARDS": shards, "ART": art, "REL": synth_release, "ROOT": root}


SHARD = ("shard --catalog REL/gz2_hart16.csv --mapping REL/gz2_filename_mapping.csv --images REL/images --out SHARDS "
         "--resize 40 --shard-size 8 --val 0.2 --test 0.2")
TRAIN = ("train --backbone resnet50 --shards SHARDS --out ART --epochs 1 --image-size 32 --batch-size 4 --workers 0 "
         "--device cpu --warmup-epochs 1")
BOOST = "boost --backbone resnet50 --out ART --device cpu --force"
FEATS = "features --backbone resnet50 --out ART --workers 0 --device cpu --force"

# (command with the replace flag and a bad option, the folder it must leave as it was, what the line names)
CASES = [
    (f"{SHARD} --force --images ROOT/nope", "SHARDS", "nope"),
    (f"{SHARD} --force --val 0.6 --test 0.6", "SHARDS", "val"),
    (f"{SHARD} --force --format kaggle", "SHARDS", "--format kaggle needs a 'GalaxyID' column"),
    (f"{SHARD} --force --catalog ROOT/missing.csv", "SHARDS", "missing.csv"),
    (f"{SHARD} --force --out ROOT/file.txt", "SHARDS", "file.txt"),
    (f"{TRAIN} --restart --weights ROOT/nonexist.pth", "ART", "nonexist.pth"),
    (f"{TRAIN} --restart --batch-size 1000", "ART", "--batch-size"),
    (f"{TRAIN} --restart --head softmax --loss bce --lr -1", "ART", "--lr"),
    *([] if CUDA else [(f"{TRAIN} --restart --backend nvjpeg", "ART", "nvjpeg"),
                       (f"{TRAIN} --restart --device cuda", "ART", "cuda")]),
    (f"{FEATS} --shards ROOT/nope", "ART", "nope"),
    *([] if CUDA else [(f"{FEATS} --backend nvjpeg", "ART", "nvjpeg")]),
    (f"{FEATS} --out ROOT/file.txt", "ART", "file.txt"),
    (f"{BOOST} --engine xgboost --pca 5000", "ART", "--pca 5000"),
    (f"{BOOST} --engine xgboost --dask-scheduler banana", "ART", "tcp://HOST:PORT"),
    (f"{BOOST} --engine lightgbm --param seed=abc", "ART", "--param seed must be an integer"),
    (f"{BOOST} --engine lightgbm --param threads=x", "ART", "--param threads must be an integer"),
    (f"{BOOST} --engine xgboost --param pca_fit_rows=many", "ART", "--param pca_fit_rows must be an integer"),
    (f"{BOOST} --engine lightgbm --param rounds=3", "ART", "--rounds"),
    (f"{BOOST} --engine lightgbm --num-leaves 200000", "ART", "--num-leaves"),
    (f"{BOOST} --engine xgboost --max-bin 100000", "ART", "--max-bin"),
    (f"{BOOST} --engine xgboost --out ROOT/file.txt", "ART", "file.txt"),
    *([] if CUDA else [(f"{BOOST} --engine xgboost --device cuda", "ART", "cuda")]),
    ("ensemble --method equal --out ART --force --backbones resnet5", "ART", "resnet5"),
    ("ensemble --method equal --out ART --force --backbones convnext_base", "ART", "convnext_base is not trained"),
    ("ensemble --method stacked --out ART --force --members resnet50", "ART", "at least 2"),
    ("ensemble --method stacked --out ART --force --members nosuch,resnet50", "ART", "nosuch"),
    ("ensemble --method equal --out ROOT/file.txt --force", "ART", "file.txt"),
    ("predict REL/images --model ART/resnet50 --out ART/resnet50/val_predictions.parquet --tta 99", "ART", "tta"),
    ("study --out ART --force all --config ROOT/bad.yaml", "ART", "epochs"),
    ("study --out ART --force banana", "ART", "banana"),
    ("study --out ROOT/file.txt --restart", "ART", "file.txt"),
]


@pytest.mark.parametrize("line,folder,mentions", CASES, ids=[c[0].split(" --")[0] + " " + c[0].split()[-2] + " " +
                                                             c[0].split()[-1] for c in CASES])
def test_a_retry_with_a_bad_option_leaves_the_finished_run_byte_identical(finished, capsys, line, folder, mentions):
    root = finished["ROOT"]
    (root / "file.txt").write_text("a file\n")
    (root / "bad.yaml").write_text("train:\n  epochs: 0\n")
    before = tree_state(finished[folder])
    argv = []
    for tok in line.split():
        for key in ("SHARDS", "ART", "REL", "ROOT"):
            tok = tok.replace(key, str(finished[key])) if tok.startswith(key) else tok
        argv.append(tok)
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2, err
    assert err.startswith("error:") and err.count("\n") == 0 and "Traceback" not in err, err
    assert mentions in err, err
    assert tree_state(finished[folder]) == before  # nothing removed, nothing added, not a byte changed
    assert not [p for p in finished[folder].parent.iterdir() if p.name.endswith(".replacing")]


# ---- the re-run contract ------------------------------------------------------------------------------------

def _main(argv, capsys) -> str:
    try:
        main([str(a) for a in argv])
    except SystemExit as e:
        assert e.code in (0, None), capsys.readouterr().err
    return capsys.readouterr().out


def test_every_stage_skips_a_finished_run_and_keeps_one_with_other_settings(finished, capsys):
    art, shards, rel = finished["ART"], finished["SHARDS"], finished["REL"]
    before = tree_state(art)
    shard = [*SHARD.replace("REL", str(rel)).replace("SHARDS", str(shards)).split()]
    cases = [
        (shard, "shards: finished with these settings in", "7 of 7 shards reused (sha256 checked), 0 written"),
        (shard + ["--resize", "48"], "a finished run with other settings is in", "(resize 40 -> 48); kept and skipped: "
                                                                               "--force replaces it"),
        (TRAIN.replace("SHARDS", str(shards)).replace("ART", str(art)).split(),
         "resnet50: finished with these settings in", "skipped (--restart replaces it"),
        (TRAIN.replace("SHARDS", str(shards)).replace("ART", str(art)).split() + ["--epochs", "2"],
         "other settings", "(epochs 1 -> 2); kept and skipped: --restart replaces it"),
        (FEATS.replace("ART", str(art)).replace(" --force", "").split(), "resnet50 features: finished with these "
                                                                          "settings", "skipped (--force replaces it)"),
        (FEATS.replace("ART", str(art)).replace(" --force", "").split() + ["--dtype", "float32"], "other settings",
         "(dtype float16 -> float32); kept and skipped"),
        (BOOST.replace("ART", str(art)).replace(" --force", "").split() + ["--engine", "xgboost", "--rounds", "5"],
         "xgboost_resnet50: finished with these settings", "skipped (--force replaces it)"),
        (BOOST.replace("ART", str(art)).replace(" --force", "").split() + ["--engine", "xgboost", "--rounds", "3"],
         "other settings", "(rounds 5 -> 3); kept and skipped: --force replaces it"),
        (["ensemble", "--method", "equal", "--out", art], "ensemble_equal: finished with these settings",
         "skipped (--force replaces it)"),
        (["ensemble", "--method", "stacked", "--out", art, "--members", "resnet50,xgboost_resnet50"],
         "other settings", "(members lightgbm_resnet50, resnet50, xgboost_resnet50 -> resnet50, xgboost_resnet50); "
                           "kept and skipped"),
    ]
    for argv, *expected in cases:
        out = _main(argv, capsys)
        for text in expected:
            assert text in out, (argv, out)
    assert tree_state(art) == before


def test_shard_says_how_many_shards_it_reused(finished, tmp_path, capsys):
    shards = tmp_path / "s"
    shutil.copytree(finished["SHARDS"], shards)
    argv = SHARD.replace("REL", str(finished["REL"])).replace("SHARDS", str(shards)).split()
    manifest = (shards / "manifest.json").read_bytes()
    (shards / "train-000001.tar").unlink()
    out = _main(argv + ["--workers", "2"], capsys)  # another worker count: the same settings
    assert "6 of 7 shards reused (sha256 checked), 1 written" in out and "48 stored" in out, out
    assert (shards / "manifest.json").read_bytes() == manifest  # so no model trained on them goes out of date
    (shards / "manifest.json").unlink()  # as if the run had been killed before its manifest
    out = _main(argv, capsys)
    assert "shards: resuming the interrupted run" in out and "7 of 7 shards reused" in out, out


def test_a_failed_first_shard_leaves_no_folder(finished, tmp_path, capsys):
    for bad in (["--catalog", tmp_path / "missing.csv"], ["--format", "kaggle"]):
        argv = SHARD.replace("REL", str(finished["REL"])).replace("SHARDS", str(tmp_path / "new")).split()
        with pytest.raises(SystemExit) as e:
            main([str(a) for a in argv + bad])
        assert e.value.code == 2
        assert not (tmp_path / "new").exists()
    capsys.readouterr()


def test_force_replaces_beside_and_swaps_in_when_complete(finished, tmp_path, capsys):
    art = tmp_path / "art"
    shutil.copytree(finished["ART"], art)
    old = json.loads((art / "xgboost_resnet50" / "metrics.json").read_text())
    out = _main(BOOST.replace("ART", str(art)).split() + ["--engine", "xgboost", "--rounds", "3"], capsys)
    assert "building the replacement in" in out and ".xgboost_resnet50.replacing" in out
    new = json.loads((art / "xgboost_resnet50" / "metrics.json").read_text())
    assert new["rounds_trained"] == 3 and old["rounds_trained"] == 5
    assert not list(art.glob(".*replacing")) and not list(art.glob(".*replaced"))
    with pytest.raises(SystemExit):  # the stacked ensemble read the old booster: never reused without a word
        main(["ensemble", "--method", "stacked", "--out", str(art)])
    assert "ensemble_stacked is out of date: xgboost_resnet50" in capsys.readouterr().err


def _stop_during(cmd: list[str], started, sig=signal.SIGTERM, timeout=300) -> subprocess.CompletedProcess:
    """Run ``cmd``, send ``sig`` once ``started()`` is true, return the finished process."""
    import time

    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                         start_new_session=True)
    t0 = time.time()
    while not started() and p.poll() is None:
        assert time.time() - t0 < timeout
        time.sleep(0.01)
    if p.poll() is None:
        os.killpg(p.pid, sig)
    out, err = p.communicate(timeout=timeout)
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def test_a_stopped_restart_leaves_the_finished_run_and_the_same_command_continues_it(finished, tmp_path):
    art = tmp_path / "art"
    shutil.copytree(finished["ART"], art)
    before = tree_state(art / "resnet50")
    cmd = gzpipe(*TRAIN.replace("SHARDS", str(finished["SHARDS"])).replace("ART", str(art)).split(), "--epochs", "2",
                 "--restart", "--checkpoint-minutes", "0")
    staged = art / ".resnet50.replacing"
    r = _stop_during(cmd, lambda: (staged / "checkpoints" / "latest_checkpoint.pth").exists())
    assert r.returncode == 143, r.stderr
    assert "the finished run in" in r.stderr and "is unchanged" in r.stderr, r.stderr
    assert tree_state(art / "resnet50") == before  # the finished run is exactly as it was
    assert staged.is_dir()
    plain = run_ok(gzpipe(*TRAIN.replace("SHARDS", str(finished["SHARDS"])).replace("ART", str(art)).split()))
    assert "an interrupted --restart is in" in plain.stdout and tree_state(art / "resnet50") == before
    r = run_ok(cmd)
    assert "resuming the interrupted run" in r.stdout and "(replaced)" in r.stdout, r.stdout
    m = json.loads((art / "resnet50" / "metrics.json").read_text())
    assert m["epochs_run"] == 2 and not staged.exists()
    assert not (art / "resnet50" / "features").exists()  # the old model's features went with it


def test_a_stopped_force_leaves_the_finished_booster_and_no_staging(finished, tmp_path):
    art = tmp_path / "art"
    shutil.copytree(finished["ART"], art)
    before = tree_state(art)
    cmd = gzpipe(*BOOST.replace("ART", str(art)).split(), "--engine", "lightgbm", "--rounds", "400",
                 "--early-stopping", "400", "--learning-rate", "0.001")
    r = _stop_during(cmd, lambda: (art / ".lightgbm_resnet50.replacing").exists())
    assert r.returncode in (143, 0), r.stderr
    if r.returncode == 143:
        assert tree_state(art) == before


def test_a_swap_cut_short_is_finished_on_the_next_start(tmp_path):
    from gzpipe.fileio import finish_swap, staging_dir, swap_in

    final, staged = tmp_path / "run", staging_dir(tmp_path / "run")
    final.mkdir()
    (final / "old").write_text("old")
    staged.mkdir()
    (staged / "new").write_text("new")
    os.rename(final, tmp_path / ".run.replaced")  # killed between the two renames
    finish_swap(final)
    assert (final / "new").exists() and not (tmp_path / ".run.replaced").exists() and not staged.exists()
    (tmp_path / ".run.replaced").mkdir()  # killed after the swap, before the old one was removed
    finish_swap(final)
    assert (final / "new").exists() and not (tmp_path / ".run.replaced").exists()
    os.rename(final, tmp_path / ".run.replaced")  # no staged folder: the old one goes back
    finish_swap(final)
    assert (final / "new").exists()
    staged.mkdir()
    (staged / "newer").write_text("x")
    swap_in(staged, final)
    assert sorted(p.name for p in final.iterdir()) == ["newer"] and not staged.exists()


# ---- messages, bounds and exit codes -------------------------------------------------------------------------

def test_interrupted_as_it_finished_reads_as_one_sentence(capsys):
    from gzpipe.exits import _interrupted

    _interrupted("SIGINT", finished=True)
    _interrupted("SIGTERM")
    err = capsys.readouterr().err
    assert "interrupted by SIGINT as it finished: outputs are complete; re-run" in err
    assert "interrupted by SIGTERM: finished outputs are kept" in err


def test_lightgbm_asks_for_no_more_leaves_than_the_rows_fill_and_caps_its_histograms(monkeypatch, capsys):
    from gzpipe.boost import BoostConfig, lgbm, xgb

    cfg = BoostConfig(engine="lightgbm", backbone="resnet50", max_bin=64)
    monkeypatch.setattr("gzpipe.info.available_memory", lambda: 64 << 30)
    assert lgbm._memory_bounds(cfg, lgbm.Params(num_leaves=100000), 95, 2048) == {"num_leaves": 19}
    assert "fill at most 19 leaves" in capsys.readouterr().out
    assert lgbm._memory_bounds(cfg, lgbm.Params(), 190_000, 2048) == {}  # the defaults at GZ2's size: untouched
    # 30,000 leaves x 2,048 features x 65 bins x 16 bytes = 64 GB: the pool is held to a quarter of the memory
    bounds = lgbm._memory_bounds(cfg, lgbm.Params(num_leaves=30_000), 190_000, 2048)
    assert bounds == {"histogram_pool_size": 16 * 1024.0}
    monkeypatch.setattr("gzpipe.info.available_memory", lambda: 1 << 30)
    assert xgb._cache_bound(2048, 64) == {"max_cached_hist_node": 126}  # 256 MB / 2 MiB a node
    monkeypatch.setattr("gzpipe.info.available_memory", lambda: 1 << 40)
    assert xgb._cache_bound(2048, 64) == {}  # XGBoost's own 65,536 nodes fit


@pytest.fixture
def wide_fakenet(tmp_path):
    """A registered 512-feature backbone and its features (the boosters read only those)."""
    import sys

    import numpy as np

    from gzpipe.models import BackboneSpec, register, unregister

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from test_study import _fake_features

    register(BackboneSpec("fakenet", None, "fc", 512, build=lambda: None))
    _fake_features(tmp_path, np.random.default_rng(0), width=512)
    yield tmp_path
    unregister("fakenet")


def test_lightgbm_with_100000_leaves_on_160_rows_stays_small(wide_fakenet, capsys):
    """The case that was killed by the kernel at 18 GB (here 100,000 leaves' histograms of 512 features would ask
    for ~53 GB): the same trees, in a fraction of the memory."""
    import resource

    from gzpipe.boost import BoostConfig, run_boost

    cfg = dict(engine="lightgbm", backbone="fakenet", out=str(wide_fakenet), rounds=3, device="cpu")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    big = run_boost(BoostConfig(**cfg, params={"num_leaves": 100000}))
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) < 2 << 20  # KB: under 2 GB more
    assert "asking LightGBM for 32, not 100000" in capsys.readouterr().out  # 160 train rows / 5 a leaf
    small = run_boost(BoostConfig(**cfg, params={"num_leaves": 32}, force=True))
    assert big["test"]["mae"] == pytest.approx(small["test"]["mae"], abs=1e-9)


def test_predict_that_predicted_nothing_exits_2(finished, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(3):
        (bad / f"{i}.jpg").write_bytes(b"not a jpeg" * (i + 1))
    out = tmp_path / "p.csv"
    with pytest.raises(SystemExit) as e:
        main(["predict", str(bad), "--model", str(finished["ART"] / "resnet50"), "--out", str(out), "--workers", "0",
              "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.count("\n") == 0, err
    assert "no image could be predicted: all 3 input(s) were unreadable" in err and str(out) in err
    assert out.exists()  # written, for its error column


def _help(command: str, capsys) -> str:
    try:
        main([command, "--help"])
    except SystemExit as e:
        assert e.code in (0, None)
    return " ".join(capsys.readouterr().out.split())


def test_help_ranges_say_what_the_checks_enforce(capsys):
    text = _help("shard", capsys)
    assert "0 < F < 1 (val + test below 1)" in text and "0 < F <= 1" in text
    assert "0.0<=x<=1.0" not in text.split("--max-rejected")[0]  # the old, wrong range of --val / --test / --fraction
    for args, says in ((["--val", "0", "--test", "0.1"], "--val"), (["--test", "1"], "--test"),
                       (["--fraction", "0"], "--fraction")):
        with pytest.raises(SystemExit) as e:
            main(["shard", "--catalog", "c.csv", "--images", ".", "--out", "o", *args])
        err = capsys.readouterr().err
        assert e.value.code == 2 and says in err and "must be 0 <" in err, err
    text = _help("boost", capsys)
    assert "2<=x<=131072" in text and "rows / min_data_in_leaf" in text and "1<=x<=64" in text


def test_study_config_errors_name_the_file_the_section_and_the_line(tmp_path, capsys):
    cases = {"train:\n  epochs: 0\n": "bad.yaml train: epochs must be at least 1, got 0",
             "shard:\n  val: 0\n": "bad.yaml shard: val must be above 0",
             "boost:\n  rounds: 0\n": "bad.yaml boost: rounds must be at least 1",
             "train:\n  epochs: 1\n  lr: [1\n": "bad.yaml is not valid YAML at line 4, column 1",
             "train:\n  epochs: 1\n batch_size: 2\n": "bad.yaml is not valid YAML at line 3"}
    for text, says in cases.items():
        (tmp_path / "bad.yaml").write_text(text)
        with pytest.raises(SystemExit) as e:
            main(["study", "--config", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and says in err and err.count("\n") == 0, (text, err)
        assert not (tmp_path / "o").exists()


def test_the_rebuild_command_works_from_any_folder(finished, tmp_path, monkeypatch):
    from gzpipe.shard.verify import rebuild_command

    monkeypatch.chdir(tmp_path)
    cmd = rebuild_command(finished["SHARDS"])
    for flag in ("--catalog", "--images", "--mapping", "--out"):
        assert Path(cmd.split(flag + " ")[1].split()[0]).is_absolute(), cmd
        assert Path(cmd.split(flag + " ")[1].split()[0]).exists(), cmd


def test_the_report_says_what_it_stands_on(finished, tmp_path, capsys):
    import pandas as pd

    art = tmp_path / "art"
    shutil.copytree(finished["ART"], art)
    out = _main(["report", "--out", art], capsys)
    assert "report:" in out
    table = pd.read_csv(art / "model_comparison" / "comparison_table.csv").set_index("name")
    val = json.loads((art / "ensemble_equal" / "metrics.json").read_text())["val"]["galaxies"]
    assert table.loc["ensemble_equal", "val_galaxies"] == val and table["test_galaxies"].nunique() == 1
    assert table.loc["ensemble_equal", "members"] == "1 (resnet50)"
    assert table.loc["ensemble_stacked", "members"] == "3: 1 deep + 1 lightgbm + 1 xgboost"
    assert table.loc["ensemble_stacked", "trees"] > 0  # its boosters' trees, beside its backbones' parameters
    page = (art / "model_comparison" / "report.html").read_text()
    n_test = int(table["test_galaxies"].iloc[0])
    assert f"on the test split ({n_test} galaxies)" in page and f"validation split only ({val} galaxies" in page
    assert "ensemble_equal: one member only, so that model itself" in page


def test_an_unreachable_dask_scheduler_is_one_line_naming_it(finished, tmp_path, capsys, monkeypatch):
    import socket

    from gzpipe.boost import stage

    monkeypatch.setattr(stage, "SCHEDULER_TIMEOUT_S", 2)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    art = finished["ART"]
    before = tree_state(art)
    with pytest.raises(SystemExit) as e:
        main([*BOOST.replace("ART", str(art)).split(), "--engine", "xgboost", "--dask-scheduler",
              f"tcp://127.0.0.1:{port}"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.count("\n") == 0 and "Traceback" not in err, err
    assert f"no Dask scheduler answered at tcp://127.0.0.1:{port} within 2 s" in err
    assert tree_state(art) == before


def test_the_ensemble_methods_depend_one_way():
    """stage -> weighted, stacked -> members: neither method imports the other, nor the stage."""
    import ast

    import gzpipe.ensemble as pkg

    folder = Path(pkg.__file__).parent
    for name, forbidden in (("weighted", {"stacked", "stage"}), ("stacked", {"weighted", "stage"}),
                            ("members", {"weighted", "stacked", "stage"})):
        tree = ast.parse((folder / f"{name}.py").read_text())
        imported = {a.name.rsplit(".", 1)[-1] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module.rsplit(".", 1)[-1] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                     and n.module == "gzpipe.ensemble" for a in n.names}
        assert not imported & forbidden, (name, imported & forbidden)


def test_the_baseline_is_named_in_the_legend_not_written_across_the_bars(tmp_path, monkeypatch):
    import pandas as pd

    from gzpipe.report import figures

    table = pd.DataFrame({"name": ["a", "b", "ensemble_equal"], "kind": ["deep", "xgboost", "ensemble"],
                          "mae": [0.20, 0.26, 0.21], "accuracy": [0.80, 0.77, 0.79], "test_galaxies": [50, 50, 50],
                          "members": [None, None, "1 (a)"]})
    saved = {}
    monkeypatch.setattr(figures, "_save", lambda fig, path: saved.setdefault("fig", fig))
    figures.metric_bars(table, tmp_path / "m.png", {"mae": 0.25, "accuracy": 0.78})
    fig = saved["fig"]
    texts = [t for ax in fig.axes for t in ax.texts]
    assert texts and all("baseline" not in t.get_text() for t in texts)  # no label lying on the dashed line
    assert all(t.get_bbox_patch() is not None for t in texts)  # values on a white box: the line passes behind
    legend = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("train-mean baseline (MAE 0.250") for t in legend)
    assert "ensemble_equal (one member)" in [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert "(50 galaxies)" in fig._suptitle.get_text()
