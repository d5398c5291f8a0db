import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from gzpipe import schema
from gzpipe.errors import GzpipeError
from gzpipe.models import BACKBONES, create_model, resolve_name
from gzpipe.train.config import SCRATCH_LR, STUDY_DEFAULTS, resolve
from gzpipe.train.run import run_train

FAST = dict(image_size=32, batch_size=8, workers=1, device="cpu", warmup_epochs=1, backend="pil",
            checkpoint_minutes=0)


def _cfg(shards, out, backbone="resnet50", **kw):
    return resolve(backbone, str(shards), None, out=str(out), **{**FAST, **kw})


def _compare(a, b, tol=1e-6):
    for split in ("val", "test"):
        for k in ("mae", "mse", "accuracy", "loss"):
            assert a[split][k] == pytest.approx(b[split][k], abs=tol), (split, k)
    assert [h["train_loss"] for h in a["history"]] == pytest.approx([h["train_loss"] for h in b["history"]], abs=tol)


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_every_backbone_trains_a_step_and_exposes_features(train_shards, tmp_path, backbone):
    m = run_train(_cfg(train_shards, tmp_path, backbone, epochs=1, batch_size=16))
    assert m["epochs_run"] == 1 and 0 <= m["test"]["mae"] <= 1
    model = create_model(backbone)
    f = model.features(torch.zeros(2, 3, 32, 32))
    assert f.shape == (2, BACKBONES[backbone].features)
    assert f.shape[1] == {"resnet50": 2048, "efficientnet_v2_s": 1280, "convnext_base": 1024, "swin_v2_s": 768,
                          "regnety_8gf": 2016}[backbone]


def test_run_folder_is_complete_and_correct(train_shards, tmp_path, capsys):
    m = run_train(_cfg(train_shards, tmp_path, epochs=2))
    # the resolved settings, said once at the start (defaults come from several places)
    n_train = json.loads((train_shards / "manifest.json").read_text())["counts"]["per_split"]["train"]
    assert (f"resnet50: 2 epochs over {n_train} train galaxies at 32 px (crop 0.8), batch 8, lr 0.001 from random "
            "initialisation, l1 loss, sigmoid head, pil loader on cpu") in capsys.readouterr().out
    run = tmp_path / "resnet50"
    for f in ("config.json", "metrics.json", "training_curves.png", "training_complete.txt", "val_predictions.parquet",
              "test_predictions.parquet", "checkpoints/latest_checkpoint.pth", "checkpoints/best_model.pth"):
        assert (run / f).exists(), f
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["lr"] == 1e-3 and cfg["head"] == "sigmoid" and cfg["seed"] == 42 and cfg["image_size"] == 32
    for split in ("val", "test"):
        df = pd.read_parquet(run / f"{split}_predictions.parquet")
        assert list(df.columns) == ["id", *schema.TARGET_NAMES]
        assert len(df) == m[split]["galaxies"] and df["id"].is_unique
        v = df[list(schema.TARGET_NAMES)].to_numpy()
        assert v.min() >= 0 and v.max() <= 1
    for k in ("accuracy", "mae", "mse", "rmse", "per_task"):
        assert k in m["test"] and k in m["val"]
    assert set(m["test"]["per_task"]) == set(schema.TASK_SLICES)
    assert m["test"]["rmse"] == pytest.approx(np.sqrt(m["test"]["mse"]))
    assert m["epochs_run"] == 2 and m["best_epoch"] in (1, 2) and m["images_per_s"] > 0 and m["wall_time_s"] > 0
    # a second call skips the finished run and returns the same metrics
    assert run_train(_cfg(train_shards, tmp_path, epochs=2))["test"] == m["test"]


# ~40 s; keeps the default run under CI's 20 minutes (`make test-slow`, which CI runs after it when time
# allows); the default run covers the same path with reliability/test_kill.py's SIGKILLs of train, resumed to
# the same metrics
@pytest.mark.slow
def test_resume_after_epoch_k_equals_uninterrupted(train_shards, tmp_path):
    full = run_train(_cfg(train_shards, tmp_path / "a", epochs=3))
    assert run_train(_cfg(train_shards, tmp_path / "b", epochs=3, stop_after=1)) is None
    assert not (tmp_path / "b/resnet50/training_complete.txt").exists()
    resumed = run_train(_cfg(train_shards, tmp_path / "b", epochs=3))
    _compare(full, resumed)


def test_corrupt_latest_checkpoint_falls_back_to_previous(train_shards, tmp_path):
    full = run_train(_cfg(train_shards, tmp_path / "a", epochs=3))
    assert run_train(_cfg(train_shards, tmp_path / "b", epochs=3, stop_after=2)) is None
    latest = tmp_path / "b/resnet50/checkpoints/latest_checkpoint.pth"
    latest.write_bytes(latest.read_bytes()[:1000])
    with pytest.warns(UserWarning, match="unreadable.*resumed from .*previous_checkpoint"):
        resumed = run_train(_cfg(train_shards, tmp_path / "b", epochs=3))
    _compare(full, resumed)


# ~85 s: in `make test-slow` (CI runs it after the default run when time allows); the default run stops training
# with SIGTERM in reliability/test_retry.py (a --restart, resumed to the end) and kills it in test_kill.py (resumed
# to the same metrics)
@pytest.mark.slow
def test_sigterm_mid_epoch_checkpoints_and_resumes_exactly(train_shards, tmp_path):
    args = [sys.executable, "-m", "gzpipe", "train", "--backbone", "resnet50", "--shards", str(train_shards),
            "--epochs", "2", "--image-size", "32", "--batch-size", "4", "--workers", "0", "--device", "cpu",
            "--warmup-epochs", "1", "--backend", "pil", "--checkpoint-minutes", "0"]
    env = {**os.environ, "GZPIPE_PROGRESS": "0"}
    subprocess.run(args + ["--out", str(tmp_path / "a")], check=True, capture_output=True, env=env)
    full = json.loads((tmp_path / "a/resnet50/metrics.json").read_text())
    p = subprocess.Popen(args + ["--out", str(tmp_path / "b")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env)
    for line in p.stdout:  # first epoch done: now stop it somewhere inside the second
        if "epoch 1/2" in line:
            break
    time.sleep(0.4)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143 and "stopped by SIGTERM" in err and "re-run the same command to resume" in err
    state = torch.load(tmp_path / "b/resnet50/checkpoints/latest_checkpoint.pth", weights_only=True)
    assert state["epoch"] == 1 and 0 < state["epoch_state"]["batches_done"] < 6
    subprocess.run(args + ["--out", str(tmp_path / "b")], check=True, capture_output=True, env=env)
    _compare(full, json.loads((tmp_path / "b/resnet50/metrics.json").read_text()))


def test_restart_and_skip(train_shards, tmp_path):
    first = run_train(_cfg(train_shards, tmp_path, epochs=1))
    skipped = run_train(_cfg(train_shards, tmp_path, epochs=1, mode="skip"))
    assert skipped["test"]["mae"] == pytest.approx(first["test"]["mae"]) and skipped["epochs_run"] == 1
    again = run_train(_cfg(train_shards, tmp_path, epochs=1, mode="restart"))
    _compare(first, again)  # same seed: a fresh run reproduces the first
    with pytest.raises(GzpipeError, match="no finished model"):
        run_train(_cfg(train_shards, tmp_path / "empty", epochs=1, mode="skip"))


def test_early_stopping_with_patience(train_shards, tmp_path):
    m = run_train(_cfg(train_shards, tmp_path, epochs=10, patience=1, min_delta=10.0))
    assert m["epochs_run"] == 2 and m["best_epoch"] == 1 and m["stopped_early"]


def test_resuming_with_other_settings_is_refused(train_shards, tmp_path):
    assert run_train(_cfg(train_shards, tmp_path, epochs=3, stop_after=1)) is None
    with pytest.raises(GzpipeError, match="unfinished run with other settings .lr 0.001 -> 0.0003.*--restart"):
        run_train(_cfg(train_shards, tmp_path, epochs=3, lr=3e-4))


def test_learning_rate_default_depends_on_the_starting_weights(train_shards, tmp_path):
    assert resolve("resnet50", str(train_shards)).lr == SCRATCH_LR == 1e-3  # from random initialisation
    weights = tmp_path / "w.pth"  # the lr's rule alone: the weights themselves are checked elsewhere (check_paths)
    assert resolve("resnet50", str(train_shards), weights=str(weights), check_paths=False).lr == STUDY_DEFAULTS["lr"] \
        == 3e-4
    assert resolve("resnet50", str(train_shards), pretrained=True).lr == 3e-4
    assert resolve("resnet50", str(train_shards), lr=3e-4).lr == 3e-4  # a chosen value is kept, even the study's
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"lr": 3e-4}))
    assert resolve("resnet50", str(train_shards), f).lr == 3e-4


def test_config_file_and_flag_precedence(train_shards, tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"lr": 1e-3, "epochs": 7, "patience": 3}))
    cfg = resolve("regnet_y_8gf", str(train_shards), f, epochs=5)
    assert cfg.backbone == "regnety_8gf" and cfg.lr == 1e-3 and cfg.epochs == 5 and cfg.patience == 3
    assert cfg.batch_size == 32  # from the per-backbone table
    f.write_text(json.dumps({"learning_rate": 1}))
    with pytest.raises(GzpipeError, match="unknown key 'learning_rate'; valid keys: .*lr"):
        resolve("resnet50", str(train_shards), f)
    with pytest.raises(GzpipeError, match="choose one of resnet50, efficientnet_v2_s, convnext_base, swin_v2_s, regnety_8gf"):
        resolve_name("vgg16")


def test_weights_file_loads_and_bad_ones_are_explained(train_shards, tmp_path):
    import torchvision

    ref = torchvision.models.resnet50()
    torch.save(ref.state_dict(), tmp_path / "r50.pth")
    m = create_model("resnet50", weights=tmp_path / "r50.pth")
    assert torch.equal(m.backbone.conv1.weight, ref.conv1.weight)
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    with pytest.raises(GzpipeError, match="does not fit"):
        create_model("resnet50", weights=tmp_path / "r18.pth")
    with pytest.raises(GzpipeError, match="not found"):
        create_model("resnet50", weights=tmp_path / "nope.pth")
    m = run_train(_cfg(train_shards, tmp_path / "w", epochs=1, weights=str(tmp_path / "r50.pth")))
    assert m["epochs_run"] == 1


def test_pretrained_without_internet_is_a_clear_error(monkeypatch):
    import urllib.error

    import torchvision.models as tvm

    def offline(name, weights=None):
        if weights is not None:
            raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
        return tvm.resnet50()

    monkeypatch.setattr(tvm, "get_model", offline)
    with pytest.raises(GzpipeError, match="could not download.*--weights PATH"):
        create_model("resnet50", pretrained=True)


def test_masked_loss_ignores_masked_entries():
    from gzpipe.train.loop import masked_loss

    pred = torch.tensor([[0.5, 0.5]])
    target = torch.tensor([[0.5, 99.0]])
    mask = torch.tensor([[True, False]])
    loss, n = masked_loss(pred, torch.logit(pred), target, mask, "mse")
    assert loss.item() == 0 and n.item() == 1
    loss, _ = masked_loss(pred, torch.logit(pred), torch.tensor([[0.5, float("nan")]]), mask, "mse")
    assert loss.item() == 0  # a NaN target under mask 0 cannot poison the loss


def test_l1_loss_is_the_masked_mae():
    from gzpipe.metrics import compute_metrics
    from gzpipe.train.loop import masked_loss

    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(6, 30, generator=g), torch.rand(6, 30, generator=g)
    mask = torch.rand(6, 30, generator=g) > 0.3
    target_masked = torch.where(mask, target, torch.full_like(target, 99.0))  # masked values never count
    loss, n = masked_loss(pred, torch.logit(pred), target_masked, mask, "l1")
    assert n.item() == mask.sum().item()
    assert loss.item() == pytest.approx(compute_metrics(pred.numpy(), target.numpy(), mask.numpy())["mae"], rel=1e-6)


def test_cumulative_loss_is_the_square_of_the_kaggle_metric():
    """--loss cumulative over a batch is the Kaggle metric's mean square over the known cumulative values (questions
    absent for some galaxies, and questions nobody reached, which Kaggle scores as 0), and masked targets never
    count, whatever they hold."""
    from gzpipe.metrics import kaggle_rmse
    from gzpipe.train.loop import masked_loss

    rng = np.random.default_rng(0)

    def fractions(n):
        x = rng.random((n, 30))
        for s in schema.TASK_SLICES.values():
            x[:, s] /= x[:, s].sum(1, keepdims=True)
        return x

    n = 40
    pred, target = fractions(n), fractions(n)
    target[:10, :3] = [1.0, 0.0, 0.0]  # nobody called them featured: every question below is unreached
    reach = schema.conditional_to_cumulative(target)
    mask = np.ones((n, 30), bool)
    for t in schema.TASKS:  # ... so unlabelled, yet known in cumulative terms (Kaggle's 0)
        p = schema.PARENT_INDEX[t.name]
        if p is not None:
            mask[:10, schema.TASK_SLICES[t.name]] = reach[:10, p:p + 1] > 0
    assert not mask[:10].all()
    for t in ("t03_bar", "t10_arms_winding"):
        mask[20:30, schema.TASK_SLICES[t]] = False  # a catalogue without these questions
    held = np.where(mask, target, 99.0)
    loss, count = masked_loss(torch.tensor(pred), torch.logit(torch.tensor(pred)), torch.tensor(held),
                              torch.tensor(mask), "cumulative")
    k = kaggle_rmse(pred, target, mask)
    assert count.item() == k["values_known"] and k["galaxies"] == 30
    assert loss.item() == pytest.approx(k["rmse_known"] ** 2, rel=1e-6)  # the loss runs in float32
    loss.requires_grad_(False)
    p = torch.tensor(pred, requires_grad=True)
    masked_loss(p, p, torch.tensor(held), torch.tensor(mask), "cumulative")[0].backward()
    assert torch.isfinite(p.grad).all() and p.grad[:10, 3:].abs().sum() > 0  # unreached: a reach predicted > 0 costs


def test_reach_weighted_loss_weighs_each_answer_by_the_share_that_reached_its_question():
    """--loss mse_reach: each reached answer's squared error times the share of volunteers who reached its question
    (the parent's cumulative target fraction), computed here by hand from the tree; a question whose parent a
    catalogue lacks weighs 1; masked targets never count, whatever they hold."""
    from gzpipe.train.loop import masked_loss

    rng = np.random.default_rng(1)
    n = 12
    target = rng.random((n, 30))
    for s in schema.TASK_SLICES.values():
        target[:, s] /= target[:, s].sum(1, keepdims=True)
    pred = rng.random((n, 30))
    mask = np.ones((n, 30), bool)
    mask[6:, schema.TASK_SLICES["t04_spiral"]] = False  # a catalogue without the spiral question ...
    mask[9:, schema.TASK_SLICES["t02_edgeon"]] = False  # ... and one without the edge-on question either
    cum = schema.conditional_to_cumulative(target)

    def parent_of(answer):  # the answer that leads to this answer's question (None for a first question)
        return schema.PARENT_INDEX[next(k for k, sl in schema.TASK_SLICES.items() if sl.start <= answer < sl.stop)]

    w = np.ones((n, 30))
    for t in schema.TASKS:
        p = schema.PARENT_INDEX[t.name]
        if p is None:
            continue
        known, q = mask[:, p].copy(), parent_of(p)
        while q is not None:  # the parent's cumulative share is known only where every question above it is
            known &= mask[:, q]
            q = parent_of(q)
        w[:, schema.TASK_SLICES[t.name]] = np.where(known, cum[:, p], 1.0)[:, None]
    expected = (w * mask * (pred - target) ** 2).sum() / (w * mask).sum()
    assert w[9:, schema.TASK_SLICES["t03_bar"]].min() == 1.0  # its parent (edge-on) unknown: weight 1
    assert w[:6, schema.TASK_SLICES["t10_arms_winding"]].max() < 1.0
    held = np.where(mask, target, 99.0)
    loss, count = masked_loss(torch.tensor(pred), torch.logit(torch.tensor(pred)), torch.tensor(held),
                              torch.tensor(mask), "mse_reach")
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert count.item() == pytest.approx((w * mask).sum(), rel=1e-6)
    p = torch.tensor(pred, requires_grad=True)
    masked_loss(p, p, torch.tensor(held), torch.tensor(mask), "mse_reach")[0].backward()
    assert torch.isfinite(p.grad).all() and (p.grad[torch.tensor(~mask)] == 0).all()  # a masked answer never pulls
    assert (p.grad[torch.tensor(mask)] != 0).all()


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_zero_init_residual_starts_each_residual_block_as_the_identity(backbone):
    from gzpipe.models.build import zero_residual_branches

    spec = BACKBONES[backbone]
    model = create_model(backbone, zero_init_residual=True)
    blocks = [m for m in model.backbone.modules()
              if type(m).__name__ in {c for c, _ in spec.residual_norms} and getattr(m, "use_res_connect", True)]
    plain = create_model(backbone)
    norms = sum(1 for m in blocks for c, _ in spec.residual_norms if type(m).__name__ == c)
    assert zero_residual_branches(plain.backbone, spec) == norms
    plain = create_model(backbone)
    zeros = lambda m: sum(int(p.dim() == 1 and not p.any()) for n, p in m.backbone.named_parameters()
                          if n.endswith("weight"))  # noqa: E731
    assert zeros(plain) == 0
    if backbone == "convnext_base":  # its layer scale starts at 1e-6: nothing to zero
        assert not spec.residual_norms and zeros(model) == 0
        return
    assert blocks and zeros(model) == norms
    if backbone == "resnet50":  # a Bottleneck without downsampling now passes a non-negative input through unchanged
        block = model.backbone.layer1[1].eval()
        x = torch.rand(2, 256, 8, 8)
        assert torch.equal(block(x), x)
    if backbone == "efficientnet_v2_s":  # blocks without a shortcut keep their norm: zeroing it would cut the path
        cut = [m for m in model.backbone.modules() if type(m).__name__ in ("MBConv", "FusedMBConv")
               and not m.use_res_connect]
        assert cut and all(m.block[-1][1].weight.abs().sum() > 0 for m in cut)


def test_drop_path_builds_stochastic_depth_into_the_network():
    """--drop-path reaches the constructor: timm's DropPath (rising over the blocks to the rate) and torchvision's
    StochasticDepth; a network without it says so; left out, each architecture keeps its own default."""
    from timm.layers import DropPath
    from torchvision.ops import StochasticDepth

    m = create_model("timm:resnet10t", drop_path=0.1)
    rates = [d.drop_prob for d in m.modules() if isinstance(d, DropPath)]
    assert rates and max(rates) == pytest.approx(0.1) and min(rates) < 0.1
    assert not [d for d in create_model("timm:resnet10t").modules() if isinstance(d, DropPath)]
    x = torch.rand(16, 3, 32, 32)
    torch.manual_seed(0)
    m = create_model("timm:resnet10t", drop_path=0.5).train()
    for bn in m.modules():  # timm starts each branch's last norm at zero (zero_init_last): nothing to drop yet
        if isinstance(bn, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(bn.weight)
    a, b = m.features(x), m.features(x)  # (features: the head starts at zero, its output would not show it)
    assert not torch.equal(a, b)  # branches dropped at random in training ...
    m.eval()
    assert torch.equal(m.features(x), m.features(x))  # ... and never in evaluation
    tv = [d.p for d in create_model("efficientnet_v2_s", drop_path=0.1).modules() if isinstance(d, StochasticDepth)]
    assert tv and max(tv) < 0.1 + 1e-9 and max(tv) > 0.09
    default = [d.p for d in create_model("efficientnet_v2_s").modules() if isinstance(d, StochasticDepth)]
    assert max(default) > 0.15  # torchvision's own 0.2, unchanged without the option
    with pytest.raises(GzpipeError, match="resnet50 has no stochastic depth"):
        create_model("resnet50", drop_path=0.1)
    with pytest.raises(GzpipeError, match=r"drop_path must be in \[0, 1\)"):
        resolve("timm:resnet10t", "unused", None, check_paths=False, drop_path=1.5)


@pytest.mark.slow  # ~40 s: three short trainings of timm's resnet10t
def test_drop_path_run_resumes_exactly_and_is_recorded(train_shards, tmp_path):
    """Stochastic depth draws from the global RNG in every training step: a resumed run reproduces an
    uninterrupted one only when the checkpoint carries that RNG's state."""
    kw = dict(epochs=2, drop_path=0.2, select="loss")
    full = run_train(_cfg(train_shards, tmp_path / "a", "timm:resnet10t", **kw))
    assert run_train(_cfg(train_shards, tmp_path / "b", "timm:resnet10t", stop_after=1, **kw)) is None
    _compare(full, run_train(_cfg(train_shards, tmp_path / "b", "timm:resnet10t", **kw)))
    saved = json.loads((tmp_path / "a/timm:resnet10t/config.json").read_text())
    assert saved["drop_path"] == 0.2
    with pytest.raises(GzpipeError, match="drop_path 0.2 -> 0.1"):  # a resume with another rate is refused
        run_train(_cfg(train_shards, tmp_path / "b2", "timm:resnet10t", stop_after=1, **kw))
        run_train(_cfg(train_shards, tmp_path / "b2", "timm:resnet10t", **{**kw, "drop_path": 0.1}))


def test_zero_init_leaves_loaded_weights_alone(tmp_path):
    import torchvision

    ref = torchvision.models.resnet50()
    torch.save(ref.state_dict(), tmp_path / "r50.pth")
    m = create_model("resnet50", weights=tmp_path / "r50.pth", zero_init_residual=True)
    assert torch.equal(m.backbone.layer1[0].bn3.weight, ref.layer1[0].bn3.weight)
    assert m.backbone.layer1[0].bn3.weight.abs().sum() > 0


def test_a_run_saved_before_a_key_existed_resumes_with_its_old_meaning(train_shards, tmp_path):
    from gzpipe.train.config import saved_value
    from gzpipe.train.run import _check_compatible

    old = _cfg(train_shards, tmp_path, zero_init_residual=False).to_dict()
    old.pop("zero_init_residual")
    assert saved_value(old, "zero_init_residual") is False
    _check_compatible(old, _cfg(train_shards, tmp_path, zero_init_residual=False))  # same run: resumes
    with pytest.raises(GzpipeError, match="unfinished run with other settings .zero_init_residual False -> True"):
        _check_compatible(old, _cfg(train_shards, tmp_path))


class _DeadWorkerLoader:
    """Yields one batch, then fails as torch does when a DataLoader worker has exited."""

    def __iter__(self):
        from gzpipe.loaders.contract import Batch
        yield Batch(torch.rand(2, 3, 8, 8), torch.rand(2, 30), torch.ones(2, 30, dtype=torch.bool), ["a", "b"])
        raise RuntimeError("DataLoader worker (pid(s) 12345) exited unexpectedly")


def test_dead_worker_after_a_stop_signal_ends_evaluation_quietly_but_is_an_error_otherwise():
    """A group SIGTERM makes the DataLoader workers exit; when the main process has the stop request, that is the
    end of loading (the run saves a checkpoint), not a crash. Without one, a dead worker is still an error."""
    from gzpipe.stopping import STOP
    from gzpipe.train.loop import LogitsModel, evaluate
    net = LogitsModel(create_model("resnet50", "sigmoid"))
    STOP.request("SIGTERM")
    try:
        assert evaluate(net, _DeadWorkerLoader(), torch.device("cpu"), False, "mse") is None
    finally:
        STOP.reset()
    with pytest.raises(RuntimeError, match="exited unexpectedly"):
        evaluate(net, _DeadWorkerLoader(), torch.device("cpu"), False, "mse")


def test_ddp_two_cpu_processes(train_shards, tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29531", "-m", "gzpipe",
         "train", "--backbone", "resnet50", "--shards", str(train_shards), "--out", str(tmp_path), "--epochs", "2",
         "--image-size", "32", "--batch-size", "4", "--workers", "0", "--device", "cpu", "--backend", "pil",
         "--warmup-epochs", "1"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "GZPIPE_PROGRESS": "0", "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((tmp_path / "resnet50/metrics.json").read_text())
    assert m["epochs_run"] == 2 and 0 < m["test"]["mae"] < 0.6
    ids = pd.read_parquet(tmp_path / "resnet50/test_predictions.parquet")["id"]
    assert ids.is_unique and len(ids) == m["test"]["galaxies"]
    assert r.stdout.count("epoch 2/2") == 1  # only rank 0 reports


GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@GPU
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_gpu_amp_channels_last(train_shards, tmp_path, amp):
    m = run_train(resolve("resnet50", str(train_shards), None, out=str(tmp_path), image_size=64, batch_size=8,
                          epochs=2, device="cuda", amp=amp, workers=1, warmup_epochs=1))
    assert m["device"].startswith("cuda") and m["epochs_run"] == 2 and 0 < m["test"]["mae"] < 0.6


def test_real_sample_shards_and_trains_a_step(real_sample, tmp_path):
    from gzpipe.shard import ShardConfig, run_shard
    from gzpipe.study import resolve_study

    m = run_shard(ShardConfig(catalog=real_sample / "labels_manifest_800.csv", images=real_sample / "images",
                              out=tmp_path / "shards", fraction=0.1, resize=40, shard_size=20))
    assert 50 < m["counts"]["written"] < 120 and m["counts"]["rejected"] == 0
    r = run_train(_cfg(tmp_path / "shards", tmp_path / "art", epochs=1))
    assert r["epochs_run"] == 1 and 0 < r["test"]["mae"] < 0.6
    cfg = resolve_study("sample", None)  # the preset points at the same sample
    assert Path(cfg.data.catalog).name == "labels_manifest_800.csv" and Path(cfg.data.catalog).exists()


def test_ema_forgets_the_first_weights():
    """The EMA's decay warms up: a fixed 0.99 would still hold 0.99**50 = 60% of the first weights after 50 steps
    (and of BatchNorm's first running variance, which made the EMA model worse than the train mean)."""
    from torch.optim.swa_utils import AveragedModel

    from gzpipe.train.setup import ema_update

    m = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    with torch.no_grad():
        m[0].weight.zero_()
    ema = AveragedModel(m, multi_avg_fn=ema_update(0.99), use_buffers=True)
    ema.update_parameters(m)  # step 0: a copy
    with torch.no_grad():
        m[0].weight.fill_(1.0)
        m[1].running_var.fill_(0.04)
    for _ in range(50):
        ema.update_parameters(m)
    assert torch.allclose(ema.module[0].weight, torch.ones(2, 2), atol=0.05)
    assert torch.allclose(ema.module[1].running_var, torch.full((2,), 0.04), atol=0.05)
    assert int(ema.module[1].num_batches_tracked) == int(m[1].num_batches_tracked)


@pytest.mark.slow  # ~70 s: three short trainings
def test_ema_model_is_evaluated_saved_and_resumed(train_shards, tmp_path):
    full = run_train(_cfg(train_shards, tmp_path / "a", epochs=2, ema_decay=0.9))
    assert run_train(_cfg(train_shards, tmp_path / "b", epochs=2, ema_decay=0.9, stop_after=1)) is None
    resumed = run_train(_cfg(train_shards, tmp_path / "b", epochs=2, ema_decay=0.9))
    _compare(full, resumed)
    ckpts = tmp_path / "a/resnet50/checkpoints"
    best = torch.load(ckpts / "best_model.pth", weights_only=False)
    raw = torch.load(ckpts / "latest_checkpoint.pth", weights_only=False)
    assert best["config"]["ema_decay"] == 0.9 and raw["ema"] is not None
    w = "head.fc.weight"
    assert full["best_epoch"] == full["epochs_run"] == 2  # so the best model is the last one
    assert torch.equal(best["model"][w], raw["ema"][f"module.{w}"])  # the EMA model is the one saved ...
    assert not torch.equal(best["model"][w], raw["model"][w])  # ... not the raw one
    assert run_train(_cfg(train_shards, tmp_path / "a", epochs=2, ema_decay=0.9, mode="skip"))["test"]["mae"] == \
        pytest.approx(full["test"]["mae"])


def test_shards_stored_smaller_than_the_crop_needs_are_named_with_the_resize_that_would_not_blur():
    import warnings

    from gzpipe.train.config import TrainConfig, warn_upsampled_crop

    cfg = TrainConfig(backbone="resnet50", shards="unused", image_size=64)
    with pytest.warns(UserWarning, match=r"64 px images.*51 px.*--image-size 64.*--resize 80 or more"):
        warn_upsampled_crop(cfg, {"stored_size": 64})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning where the crop is downsampled or the originals are kept
        warn_upsampled_crop(cfg, {"stored_size": 80})
        warn_upsampled_crop(cfg, {"stored_size": 128})
        warn_upsampled_crop(cfg, {"stored_size": "original"})
        warn_upsampled_crop(TrainConfig(backbone="resnet50", shards="unused", image_size=48), {"stored_size": 64})
