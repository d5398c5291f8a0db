"""The field's artefacts, both ways (issue 41), made and read with the field's own code: timm's ``save_for_hf`` and
``local-dir:`` loader, Zoobot 2.9's encoder builder and Lightning modules saved by Lightning's own
``save_checkpoint``, galaxy-datasets 0.0.25's ``label_metadata`` column names, Hugging Face ``datasets``' parquet
writer. Nothing downloads: networks are built without weights. Zoobot, galaxy-datasets and Lightning are test
dependencies installed without their own dependencies (``make setup``: galaxy-datasets asks for torchaudio, which has
no build for this torch); each test that needs one skips with the reason where it is absent."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from gzpipe import schema
from gzpipe.cli import main
from gzpipe.errors import GzpipeError

timm = pytest.importorskip("timm", reason="timm is not installed")
safetensors_torch = pytest.importorskip("safetensors.torch", reason="safetensors is not installed")
ARCH = "resnet10t"  # a small timm architecture: seconds to train an epoch at 32 px


def _run(argv, capsys) -> str:
    try:
        main([str(a) for a in argv])
    except SystemExit as e:
        assert e.code in (0, None), capsys.readouterr().err
    return capsys.readouterr().out


def _fails(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    assert e.value.code == 2
    return capsys.readouterr().err


def _zoobot():
    return pytest.importorskip("zoobot.pytorch.estimators.define_model",
                               reason="zoobot is not installed (make setup installs it without its dependencies)")


def _train(shards, out, capsys, *extra) -> str:
    return _run(["train", "--shards", shards, "--out", out, "--image-size", "32", "--batch-size", "8", "--epochs",
                 "1", "--workers", "0", "--device", "cpu", "--backend", "pil", "--warmup-epochs", "1", *extra], capsys)


def _encoder_state(run_dir: Path) -> dict:
    from gzpipe.runs import load_trained

    return {k: v.clone() for k, v in load_trained(run_dir, "cpu").model.backbone.state_dict().items()}


# ---- 1. weights in, as the field writes them -----------------------------------------------------------------

def test_every_folder_the_field_writes_trains_through_weights(train_shards, tmp_path, capsys):
    """Each of these ended with 'Is a directory ... a path given as a file is a folder' after the model was built,
    leaving config.json in the run folder. Now each trains, the architecture read from the folder (no --backbone),
    and the run records the digests of the folder's files."""
    enc = timm.create_model(ARCH, pretrained=False, num_classes=0)
    torch.nn.init.normal_(enc.conv1[0].weight)  # recognisable weights
    hf = tmp_path / "timm-folder"
    timm.models.save_for_hf(enc, str(hf), safe_serialization="both")  # config.json + model.safetensors + .bin
    # a hub cache entry as huggingface_hub lays it out: snapshots/<revision>/ of links into blobs/
    cache = tmp_path / f"models--someone--zoobot-encoder-{ARCH}"
    (cache / "blobs").mkdir(parents=True)
    snap = cache / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    for f in hf.iterdir():
        (cache / "blobs" / f"sha-{f.name}").write_bytes(f.read_bytes())
        os.symlink(Path("..", "..", "blobs", f"sha-{f.name}"), snap / f.name)
    want = enc.conv1[0].weight.detach()
    for name, source in (("hf", hf), ("snapshot", snap), ("cache", cache)):
        out = tmp_path / f"art-{name}"
        printed = _train(train_shards, out, capsys, "--weights", source)
        assert f"timm:{ARCH}: 1 epochs" in printed and f"from {source}" in printed
        run = out / f"timm:{ARCH}"
        from gzpipe.models import create_model

        assert torch.equal(create_model(f"timm:{ARCH}", weights=source).backbone.conv1[0].weight, want), name
        inputs = json.loads((run / "inputs.json").read_text())
        assert {"weights:model.safetensors", "weights:config.json"} <= set(inputs), inputs
    # a gzpipe run folder and a gzpipe export as --weights: the encoder they hold
    run = tmp_path / "art-hf" / f"timm:{ARCH}"
    exp = tmp_path / "export"
    _run(["export", "--model", run, "--out", exp], capsys)
    trained = _encoder_state(run)
    for name, source in (("run", run), ("export", exp)):
        from gzpipe.models import create_model

        m = create_model(f"timm:{ARCH}", weights=source)
        assert all(torch.equal(m.backbone.state_dict()[k], v) for k, v in trained.items()), name
        printed = _train(train_shards, tmp_path / f"again-{name}", capsys, "--weights", source)
        assert f"timm:{ARCH}: 1 epochs" in printed


def test_bad_weights_are_refused_before_anything_is_written(train_shards, tmp_path, capsys):
    other = timm.create_model("resnet14t", pretrained=False, num_classes=0)
    timm.models.save_for_hf(other, str(tmp_path / "r14"), safe_serialization=True)
    out = tmp_path / "art"
    err = _fails(["train", "--backbone", f"timm:{ARCH}", "--shards", train_shards, "--out", out, "--weights",
                  tmp_path / "r14"], capsys)
    assert f"holds a timm:resnet14t (a Hugging Face folder), not timm:{ARCH}; leave --backbone out" in err
    wrong = tmp_path / "w.safetensors"
    safetensors_torch.save_file(other.state_dict(), str(wrong))
    err = _fails(["train", "--backbone", f"timm:{ARCH}", "--shards", train_shards, "--out", out, "--weights", wrong],
                 capsys)
    assert f"does not fit timm:{ARCH}: " in err and "of another shape" in err
    err = _fails(["train", "--shards", train_shards, "--out", out, "--weights", wrong], capsys)
    assert "--backbone is needed: --weights" in err and "does not name its architecture" in err
    err = _fails(["train", "--shards", train_shards, "--out", out, "--weights", tmp_path / "nope"], capsys)
    assert "--weights not found" in err
    assert not out.exists()  # nothing written for any of them


def test_zoobots_lightning_checkpoints_train(train_shards, tmp_path, capsys):
    """FinetuneableZoobotTree's .ckpt was refused with a 6-line coloured message (an unpicklable Schema); ZoobotTree's
    last.ckpt with '144 missing keys' (its keys start with encoder.). Both are Lightning's own save_checkpoint of
    Zoobot's own modules; gzpipe reads their encoder tensors without running the pickled classes."""
    define_model = _zoobot()
    L = pytest.importorskip("lightning", reason="lightning is not installed")
    from zoobot.pytorch.training.finetune import FinetuneableZoobotTree
    from zoobot.shared import schemas

    def save(module, path):
        trainer = L.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu", max_steps=0,
                            enable_progress_bar=False, enable_model_summary=False)
        trainer.strategy.connect(module)
        trainer.save_checkpoint(path)

    schema_ = schemas.gz2_ortho_schema
    ft = FinetuneableZoobotTree(encoder=define_model.get_pytorch_encoder(ARCH, channels=3), schema=schema_)
    save(ft, tmp_path / "finetuned.ckpt")
    tree = define_model.ZoobotTree(output_dim=len(schema_.label_cols),
                                   question_answer_pairs=schema_.question_answer_pairs,
                                   dependencies=schema_.dependencies, architecture_name=ARCH, channels=3)
    save(tree, tmp_path / "last.ckpt")
    from gzpipe.models import create_model

    for ckpt, module in (("finetuned.ckpt", ft), ("last.ckpt", tree)):
        m = create_model(f"timm:{ARCH}", weights=tmp_path / ckpt)
        theirs = module.encoder.state_dict()
        assert all(torch.equal(m.backbone.state_dict()[k], v) for k, v in theirs.items()), ckpt
    # ZoobotTree names its architecture: --backbone may be left out
    printed = _train(train_shards, tmp_path / "art", capsys, "--weights", tmp_path / "last.ckpt")
    assert f"timm:{ARCH}: 1 epochs" in printed


def test_a_greyscale_encoder_trains_and_predicts_on_one_channel(train_shards, synth_release, tmp_path, capsys):
    """Zoobot's greyscale encoders (in_chans=1, for Euclid) could not be used at all. Zoobot's own builder makes one,
    timm's save_for_hf writes it; gzpipe trains it on the luma of each picture, records one channel, and predict,
    the export and timm's loader honour it."""
    define_model = _zoobot()
    enc = define_model.get_pytorch_encoder(ARCH, channels=1)
    timm.models.save_for_hf(enc, str(tmp_path / "grey"), safe_serialization=True)
    out = tmp_path / "art"
    _train(train_shards, out, capsys, "--weights", tmp_path / "grey")
    run = out / f"timm:{ARCH}"
    assert json.loads((run / "config.json").read_text())["channels"] == 1
    from gzpipe.loaders import create_loader

    b = next(iter(create_loader(train_shards, "val", "pil", 32, 4, device="cpu", workers=0, channels=1)))
    assert b.images.shape[1] == 1  # the loader delivers one channel
    exp = tmp_path / "export"
    _run(["export", "--model", run, "--out", exp], capsys)
    m = timm.create_model(f"local-dir:{exp}", pretrained=True, num_classes=0)
    assert m.conv1[0].weight.shape[1] == 1
    preds = []
    for model in (run, exp):
        p = tmp_path / f"p{len(preds)}.csv"
        _run(["predict", synth_release / "images", "--model", model, "--out", p, "--device", "cpu", "--workers", "0"],
             capsys)
        preds.append(pd.read_csv(p).set_index("id")[list(schema.TARGET_NAMES)])
    assert np.allclose(preds[0].to_numpy(), preds[1].loc[preds[0].index].to_numpy(), atol=1e-6)
    err = _fails(["train", "--backbone", "resnet50", "--shards", train_shards, "--out", tmp_path / "x", "--channels",
                  "1"], capsys)
    assert "resnet50 is built for RGB images; a 1-channel (greyscale) input needs a timm architecture" in err


# ---- 2. exports the field reads -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def timm_run(train_shards, tmp_path_factory) -> Path:
    from gzpipe.train.config import resolve
    from gzpipe.train.run import run_train

    out = tmp_path_factory.mktemp("timm_art")
    run_train(resolve(f"timm:{ARCH}", str(train_shards), None, out=str(out), image_size=32, batch_size=8, epochs=1,
                      workers=0, device="cpu", warmup_epochs=1, backend="pil"))
    return out / f"timm:{ARCH}"


def test_timm_and_zoobot_load_a_gzpipe_export_with_every_encoder_weight(timm_run, synth_release, tmp_path, capsys):
    """timm.create_model('local-dir:EXPORT') raised 'Unknown model (timm:...)', and with a config overlay loaded none
    of the weights (their keys began with backbone.). Now timm's loader takes every encoder weight, Zoobot's
    name='local-dir:...' route builds on it, timm's encoder with gzpipe's head predicts what gzpipe predicts, and
    predict and --weights read the export back."""
    exp = tmp_path / "export"
    out = _run(["export", "--model", timm_run, "--out", exp], capsys)
    assert "export:" in out
    assert sorted(p.name for p in exp.iterdir()) == ["README.md", "config.json", "gzpipe_head.safetensors",
                                                      "model.safetensors"]
    cfg = json.loads((exp / "config.json").read_text())
    assert cfg["architecture"] == ARCH and cfg["num_classes"] == 0
    g = cfg["gzpipe"]
    assert g["architecture"] == f"timm:{ARCH}" and g["targets"] == list(schema.TARGET_NAMES) and g["image_size"] == 32
    assert cfg["pretrained_cfg"]["input_size"] == [3, 32, 32] and cfg["pretrained_cfg"]["crop_pct"] == 0.8
    trained = _encoder_state(timm_run)
    m = timm.create_model(f"local-dir:{exp}", pretrained=True, num_classes=0)
    assert set(m.state_dict()) == set(trained)
    assert all(torch.equal(m.state_dict()[k], v) for k, v in trained.items())
    try:
        from zoobot.pytorch.training.finetune import FinetuneableZoobotTree
        from zoobot.shared import schemas
    except ImportError:
        pass  # zoobot is not installed: its route is timm's, checked above
    else:
        z = FinetuneableZoobotTree(name=f"local-dir:{exp}", schema=schemas.gz2_ortho_schema)
        assert all(torch.equal(z.encoder.state_dict()[k], v) for k, v in trained.items())
    # timm's encoder + gzpipe's head = gzpipe's predictions; the export predicts what the run does
    from gzpipe.models.heads import HEADS

    head = HEADS[g["head"]](g["features"])
    head.load_state_dict(safetensors_torch.load_file(str(exp / "gzpipe_head.safetensors")))
    from gzpipe.runs import load_trained

    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(head(m.eval()(x)), load_trained(timm_run, "cpu").model(x), atol=1e-5)
    preds = {}
    for name, model in (("run", timm_run), ("export", exp)):
        p = tmp_path / f"{name}.parquet"
        _run(["predict", synth_release / "images", "--model", model, "--out", p, "--device", "cpu", "--workers", "0"],
             capsys)
        preds[name] = pd.read_parquet(p).set_index("id")[list(schema.TARGET_NAMES)]
    assert np.array_equal(preds["run"].to_numpy(), preds["export"].loc[preds["run"].index].to_numpy())
    assert "export: finished with these settings" in _run(["export", "--model", timm_run, "--out", exp], capsys)
    assert oct(os.stat(exp / "model.safetensors").st_mode & 0o777) != "0o600"


def test_a_torchvision_backbone_export_says_what_timm_can_read(train_shards, tmp_path, capsys):
    """resnet50's keys are timm's resnet50's: its export loads in timm. The other built-in backbones are
    torchvision networks timm has no twin of; their exports say so and load in gzpipe and torchvision."""
    from gzpipe.train.config import resolve
    from gzpipe.train.run import run_train

    run_train(resolve("resnet50", str(train_shards), None, out=str(tmp_path / "a"), image_size=32, batch_size=8,
                      epochs=1, workers=0, device="cpu", warmup_epochs=1, backend="pil"))
    exp = tmp_path / "e"
    _run(["export", "--model", tmp_path / "a/resnet50", "--out", exp], capsys)
    m = timm.create_model(f"local-dir:{exp}", pretrained=True, num_classes=0)
    trained = _encoder_state(tmp_path / "a/resnet50")
    assert all(torch.equal(m.state_dict()[k], v) for k, v in trained.items())


# ---- 3. every timm architecture with pooled features ----------------------------------------------------------

TIMM_ARCHS = [("resnet18", 32), ("efficientnet_b0", 32), ("convnext_atto", 32), ("mobilenetv3_small_050", 32),
              ("regnetx_002", 32), ("vit_tiny_patch16_224", 224)]


@pytest.mark.parametrize("arch,size", TIMM_ARCHS)
def test_a_representative_timm_architecture_trains_a_step(arch, size):
    """mobilenetv3_small_050 trained into 'mat1 and mat2 shapes cannot be multiplied (16x1024 and 288x30)': its head
    was sized from num_features, and the pooled output is head_hidden_size wide. The head now takes the width the
    network really returns."""
    from gzpipe.models import BACKBONES, create_model, resolve_name

    name = resolve_name(f"timm:{arch}")
    m = create_model(name)
    x = torch.randn(2, 3, size, size)
    f = m.features(x)
    assert f.shape == (2, BACKBONES[name].features)
    loss = m(x).mean()
    loss.backward()
    assert m(x).shape == (2, schema.N_TARGETS)


def test_a_fixed_size_architecture_is_refused_at_another_size(train_shards):
    from gzpipe.train.config import resolve

    with pytest.raises(GzpipeError, match="timm:vit_tiny_patch16_224 takes 224 px images only"):
        resolve("timm:vit_tiny_patch16_224", str(train_shards), image_size=64)


def test_a_crashed_run_is_not_offered_as_resumable(train_shards, tmp_path, capsys, monkeypatch):
    """A run that crashed before its first checkpoint told predict to 'run the same command again', which crashed
    again. The run folder now says it crashed, and predict says to fix the cause first."""
    import gzpipe.train.run as run_mod

    def boom(*a, **k):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (16x1024 and 288x30)")

    monkeypatch.setattr(run_mod, "train_one_epoch", boom)
    with pytest.raises(RuntimeError):
        _train_direct(train_shards, tmp_path)
    run = tmp_path / f"timm:{ARCH}"
    assert json.loads((run / "failed.json").read_text())["checkpoint"] is False
    err = _fails(["predict", tmp_path, "--model", run], capsys)
    assert "training crashed before its first checkpoint (RuntimeError: mat1 and mat2" in err
    assert "the same command would start over and crash the same way" in err
    monkeypatch.undo()
    _train_direct(train_shards, tmp_path)  # fixed: the same command trains, and the failure record goes
    assert not (run / "failed.json").exists()


def _train_direct(shards, out):
    from gzpipe.train.config import resolve
    from gzpipe.train.run import run_train

    return run_train(resolve(f"timm:{ARCH}", str(shards), None, out=str(out), image_size=32, batch_size=8, epochs=1,
                             workers=0, device="cpu", warmup_epochs=1, backend="pil"))


# ---- 4. campaigns told apart ----------------------------------------------------------------------------------

def _label_metadata():
    return pytest.importorskip("galaxy_datasets.shared.label_metadata",
                               reason="galaxy-datasets is not installed (make setup installs it without its "
                                      "dependencies)")


def _campaign_catalogue(cols: list[str], n: int, rng) -> pd.DataFrame:
    """Vote counts in galaxy-datasets' own column names, each question's total the sum of its answers."""
    df = pd.DataFrame({"id_str": [f"g{i}" for i in range(n)], "file_loc": [f"g{i}.jpg" for i in range(n)]})
    questions: dict[str, list[str]] = {}
    for c in cols:
        questions.setdefault(c.rsplit("_", 1)[0], []).append(c)
    for q, answers in questions.items():
        votes = rng.integers(0, 10, size=(n, len(answers)))
        for c, v in zip(answers, votes.T):
            df[c] = v
        df[f"{q}_total-votes"] = votes.sum(axis=1)
    return df


def test_other_campaigns_are_named_and_refused(tmp_path):
    lm = _label_metadata()
    from gzpipe.catalog import CatalogSource, read_catalog
    from gzpipe.errors import CatalogError

    rng = np.random.default_rng(0)
    for cols, name in ((lm.decals_dr5_ortho_label_cols, "Galaxy Zoo DECaLS DR5"),
                       (lm.decals_dr8_ortho_label_cols, "Galaxy Zoo DECaLS DR8"),
                       (lm.candels_ortho_label_cols, "Galaxy Zoo CANDELS"),
                       (lm.hubble_ortho_label_cols, "Galaxy Zoo Hubble"),
                       (lm.euclid_ortho_label_cols, "Galaxy Zoo Euclid"),
                       ([q + a for q, ans in lm.desi_pairs.items() for a in ans], "Galaxy Zoo DESI")):
        _campaign_catalogue(list(cols), 6, rng).to_csv(tmp_path / "c.csv", index=False)
        for fmt in ("auto", "zoobot"):
            with pytest.raises(CatalogError) as e:
                read_catalog(CatalogSource(tmp_path / "c.csv", tmp_path, format=fmt))
            msg = str(e.value)
            assert name in msg and "not a GZ2 one: gzpipe learns GZ2's decision tree" in msg, msg
            assert "\n" not in msg


def test_a_catalogue_mixing_campaigns_never_writes_unlabelled_galaxies(synth_release, tmp_path, capsys):
    """A GZ Evo-style catalogue (GZ2 and DECaLS DR5 votes side by side): its 30 DECaLS galaxies were sharded as train
    galaxies with every target masked. They are rejected as no_labels with the campaign named, with a note."""
    lm = _label_metadata()
    hart = pd.read_csv(synth_release / "gz2_hart16.csv", dtype={"dr7objid": str}).iloc[:30]
    mapping = pd.read_csv(synth_release / "gz2_filename_mapping.csv", dtype=str).iloc[:30]
    gz2 = {"id_str": mapping["asset_id"].tolist(),
           "file_loc": [str((synth_release / "images" / f"{a}.jpg").resolve()) for a in mapping["asset_id"]]}
    for col in lm.gz2_ortho_label_cols:
        assert col.rsplit("_", 1)[0].endswith("-gz2")
    for task in schema.TASKS:
        votes = hart[[f"{c}_count" for c in task.columns]].to_numpy()
        for c, v in zip(task.columns, votes.T):
            q, a = schema.ZOOBOT_GZ2[c]
            assert f"{q}_{a}" in lm.gz2_ortho_label_cols
            gz2[f"{q}_{a}"] = v
        gz2[f"{schema.ZOOBOT_GZ2[task.columns[0]][0]}_total-votes"] = votes.sum(axis=1)
    decals = _campaign_catalogue(list(lm.decals_dr5_ortho_label_cols), 30, np.random.default_rng(1))
    decals["id_str"] = [f"d{i}" for i in range(30)]
    decals["file_loc"] = gz2["file_loc"]  # some pictures; their labels are what matters here
    evo = pd.concat([pd.DataFrame(gz2), decals], ignore_index=True)
    evo.to_csv(tmp_path / "evo.csv", index=False)
    err = _fails(["shard", "--catalog", tmp_path / "evo.csv", "--out", tmp_path / "s"], capsys)
    assert "no_labels 30" in err and "hold no GZ2 vote" in err and "--max-rejected" in err
    out = _run(["shard", "--catalog", tmp_path / "evo.csv", "--out", tmp_path / "s", "--max-rejected", "0.6"], capsys)
    assert "mixes Galaxy Zoo campaigns: gzpipe reads its GZ2 columns and not the others' (Galaxy Zoo DECaLS DR5" in out
    m = json.loads((tmp_path / "s/manifest.json").read_text())
    assert m["counts"]["written"] == 30 and m["rejected_by_reason"] == {"no_labels": 30}
    assert "its votes are in this catalogue's other campaigns' columns (Galaxy Zoo DECaLS DR5)" in m["rejected"][0]["reason"]


# ---- 5. predict reads what shard reads ------------------------------------------------------------------------

def test_predict_reads_a_hugging_face_parquet_that_carries_its_images(timm_run, synth_release, tmp_path, capsys):
    """`cannot read gd/{'bytes': b'\\xff\\xd8...`: predict read the image column as a path. The parquet is written by
    Hugging Face datasets' own Image feature."""
    datasets = pytest.importorskip("datasets", reason="Hugging Face datasets is not installed")
    files = sorted((synth_release / "images").glob("*.jpg"))[:6]
    ds = datasets.Dataset.from_dict({"id_str": [f.stem for f in files],
                                     "image": [{"bytes": f.read_bytes(), "path": f.name} for f in files]})
    ds.cast_column("image", datasets.Image()).to_parquet(str(tmp_path / "gd.parquet"))
    a = tmp_path / "a.csv"
    _run(["predict", tmp_path / "gd.parquet", "--model", timm_run, "--out", a, "--device", "cpu", "--workers", "0"],
         capsys)
    b = tmp_path / "b.csv"
    _run(["predict", *files, "--model", timm_run, "--out", b, "--device", "cpu", "--workers", "0"], capsys)
    pa, pb = (pd.read_csv(p, dtype={"id": str}).set_index("id") for p in (a, b))
    assert (pa["error"].isna()).all() and len(pa) == 6
    assert np.array_equal(pa[list(schema.TARGET_NAMES)].to_numpy(), pb.loc[pa.index, list(schema.TARGET_NAMES)].to_numpy())
