"""Every numeric option given an impossible value, unknown names, and files where folders are expected (and
back): one readable line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import pytest

from gzpipe.cli import main


@pytest.fixture(scope="module")
def paths(tmp_path_factory, synth_shards, synth_release):
    d = tmp_path_factory.mktemp("opts")
    (d / "file.txt").write_text("a file\n")
    (d / "folder").mkdir()
    return {"FILE": str(d / "file.txt"), "DIR": str(d / "folder"), "SHARDS": str(synth_shards),
            "CAT": str(synth_release / "gz2_hart16.csv"), "MAP": str(synth_release / "gz2_filename_mapping.csv"),
            "IMG": str(synth_release / "images"), "OUT": str(d / "out")}


SHARD = "shard --catalog CAT --mapping MAP --images IMG --out OUT"
TRAIN = "train --backbone resnet50 --shards SHARDS --out OUT --device cpu"
CASES = [
    ("synth OUT --n 0", "--n"), ("synth OUT --n -3", "--n"), ("synth OUT --quality 0", "--quality"),
    ("synth OUT --workers 0", "--workers"), ("synth FILE --n 2", "FILE"),
    (f"{SHARD} --fraction -0.1", "fraction"), (f"{SHARD} --fraction 1.5", "fraction"), (f"{SHARD} --val -0.1", "val"),
    (f"{SHARD} --val 0.6 --test 0.6", "val"), (f"{SHARD} --shard-size 0", "--shard-size"), (f"{SHARD} --resize 0", "--resize"),
    (f"{SHARD} --quality 101", "--quality"), (f"{SHARD} --workers 0", "--workers"), (f"{SHARD} --fraction abc", "--fraction"),
    ("shard --catalog CAT --mapping MAP --images FILE --out OUT", "FILE"),
    ("shard --catalog CAT --mapping MAP --images IMG --out FILE", "FILE"),
    ("shard --catalog DIR --images IMG --out OUT", "DIR"),
    (f"{TRAIN} --batch-size 0", "--batch-size"), (f"{TRAIN} --epochs 0", "--epochs"), (f"{TRAIN} --lr -1", "--lr"),
    (f"{TRAIN} --image-size 8", "--image-size"), (f"{TRAIN} --workers -1", "--workers"), (f"{TRAIN} --amp fp8", "--amp"),
    (f"{TRAIN} --checkpoint-minutes -1", "--checkpoint-minutes"), (f"{TRAIN} --stop-after 0", "--stop-after"),
    (f"{TRAIN} --patience 0", "--patience"), (f"{TRAIN} --weight-decay -1", "--weight-decay"),
    (f"{TRAIN} --warmup-epochs -1", "--warmup-epochs"), ("train --backbone foo --shards SHARDS", "foo"),
    ("train --backbone resnet50 --shards FILE --device cpu", "FILE"), (f"{TRAIN} --device tpu", "--device"),
    (f"{TRAIN} --backend turbo", "turbo"), (f"{TRAIN} --weights FILE", "FILE"),
    ("train --backbone resnet50 --shards SHARDS --out FILE --device cpu --epochs 1", "FILE"),
    ("features --backbone resnet50 --out DIR --batch-size 0", "--batch-size"),
    ("features --backbone resnet50 --out DIR --dtype int8", "--dtype"), ("features --backbone foo --out DIR", "foo"),
    ("features --backbone resnet50 --out DIR --workers -1", "--workers"),
    ("features --backbone resnet50 --out DIR", "train"),
    ("boost --engine foo --backbone resnet50 --out DIR", "foo"),
    ("boost --engine xgboost --backbone resnet50 --out DIR --rounds 0", "--rounds"),
    ("boost --engine xgboost --backbone resnet50 --out DIR --learning-rate 0", "--learning-rate"),
    ("boost --engine xgboost --backbone resnet50 --out DIR --colsample 1.5", "--colsample"),
    ("boost --engine xgboost --backbone resnet50 --out DIR --max-depth 0", "--max-depth"),
    ("boost --engine lightgbm --backbone resnet50 --out DIR --num-leaves 1", "--num-leaves"),
    ("boost --engine xgboost --backbone resnet50 --out DIR --max-bin 1", "--max-bin"),
    ("boost --engine xgboost --backbone resnet50 --out DIR --early-stopping 0", "--early-stopping"),
    ("boost --engine xgboost --backbone resnet50 --out DIR --multi-strategy both", "--multi-strategy"),
    ("boost --engine xgboost --backbone resnet50 --out DIR --device tpu", "--device"),
    ("ensemble --method foo --out DIR", "foo"), ("ensemble --method equal --out DIR", "train"),
    ("report --out DIR", "DIR"), ("report --out FILE", "FILE"),
    ("predict IMG --model DIR", "DIR"), ("predict IMG --model FILE", "FILE"),
    ("predict IMG --model DIR --tta 0", "--tta"), ("predict IMG --model DIR --batch-size 0", "--batch-size"),
    ("predict IMG --model DIR --workers -1", "--workers"),
    ("study --preset foo", "foo"), ("study --config FILE", "FILE"), ("study --config DIR/missing.yaml", "missing"),
    ("verify FILE", "FILE"), ("verify DIR", "DIR"),
    ("download --what foo --dest OUT", "foo"), ("download --dest FILE --what labels", "FILE"),
    ("download --timeout 0 --dest OUT", "--timeout"),
    ("bench loader --shards SHARDS --passes 0", "--passes"), ("bench loader --shards SHARDS --batch-size 0", "--batch-size"),
    ("bench loader --shards SHARDS --image-size 0", "--image-size"),
    ("bench train --backbone resnet50 --steps 0", "--steps"), ("bench train --backbone resnet50 --batch-size 0", "--batch-size"),
    ("nosuchcommand", "nosuchcommand"), ("shard --bogus 1", "--bogus"),
]


@pytest.mark.parametrize("line,mentions", CASES, ids=[c[0] for c in CASES])
def test_bad_value_is_one_line_and_a_nonzero_exit(paths, capsys, line, mentions):
    argv = [paths.get(tok, tok) for tok in line.split()]
    argv = [a.replace("DIR/", paths["DIR"] + "/") for a in argv]
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code not in (0, None), err
    assert "Traceback" not in err and err.count("\n") == 0, err
    assert err.startswith("error:"), err
    assert paths.get(mentions, mentions).split("/")[-1] in err, err
