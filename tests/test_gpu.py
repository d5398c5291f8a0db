"""One test per GPU code path (`make test-gpu`, or `pytest -m gpu`); skipped where CUDA is absent. The loaders'
nvJPEG and DALI-mixed parity with `pil` is in test_loaders.py (test_gpu_backends_contract_and_parity)."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from gzpipe import schema
from gzpipe.models import BACKBONES, create_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("backbone", list(BACKBONES))
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_one_amp_step_per_backbone_is_finite_and_channels_last(backbone, amp):
    from gzpipe.device import precision
    from gzpipe.train.loop import LogitsModel, masked_loss

    dev = torch.device("cuda")
    net = LogitsModel(create_model(backbone)).to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
    x = torch.randn(8, 3, 96, 96, device=dev).contiguous(memory_format=torch.channels_last)
    assert x.is_contiguous(memory_format=torch.channels_last)
    y, m = torch.rand(8, 30, device=dev), torch.ones(8, 30, dtype=torch.bool, device=dev)
    with precision(dev, amp)():
        logits = net(x)
    loss, _ = masked_loss(net.activate(logits.float()), logits, y, m)
    (scaler.scale(loss) if scaler else loss).backward()
    (scaler.step(opt), scaler.update()) if scaler else opt.step()
    assert torch.isfinite(loss).item() and all(torch.isfinite(p).all() for p in net.parameters())


def test_compiled_training_step():
    from gzpipe.train.loop import LogitsModel

    net = torch.compile(LogitsModel(create_model("resnet50")).cuda().to(memory_format=torch.channels_last))
    x = torch.randn(4, 3, 64, 64, device="cuda").contiguous(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = net(x)
    out.float().sum().backward()
    assert out.shape == (4, 30) and torch.isfinite(out).all()


@pytest.fixture(scope="module")
def trained(train_shards, tmp_path_factory):
    from gzpipe.train.config import resolve
    from gzpipe.train.run import run_train

    out = tmp_path_factory.mktemp("gpu_art")
    run_train(resolve("resnet50", str(train_shards), None, out=str(out), image_size=64, batch_size=8, epochs=1,
                      device="cpu", workers=1, warmup_epochs=1, backend="pil"))
    yield out
    shutil.rmtree(out, ignore_errors=True)  # a resnet50 run is ~400 MB of checkpoints


def test_features_on_cuda_equal_cpu_features_within_bf16(trained, tmp_path):
    from gzpipe.features import FeaturesConfig, read_features, run_features

    cpu, gpu = tmp_path / "cpu", tmp_path / "gpu"
    for d in (cpu, gpu):
        shutil.copytree(trained / "resnet50", d / "resnet50", ignore=shutil.ignore_patterns("features"))
    run_features(FeaturesConfig("resnet50", out=str(cpu), device="cpu", backend="pil", workers=1, dtype="float32"))
    run_features(FeaturesConfig("resnet50", out=str(gpu), device="cuda", workers=1, dtype="float32"))
    for split in ("val", "test"):
        ic, xc, _, _ = read_features(cpu, "resnet50", split)
        ig, xg, _, _ = read_features(gpu, "resnet50", split)
        xg = pd.DataFrame(xg, index=ig).loc[ic].to_numpy()
        rel = np.abs(xg - xc).mean() / (np.abs(xc).mean() + 1e-9)
        assert rel < 0.03, rel  # bf16 autocast and the GPU decoder's interpolation: a few percent at most


def test_xgboost_on_cuda_predicts_as_its_cpu_twin(tmp_path):
    xgb = pytest.importorskip("xgboost", reason="xgboost is not installed here (the GPU machine gets it as a wheel)")

    rng = np.random.default_rng(0)
    x = rng.random((4000, 64)).astype(np.float32)
    y = np.stack([x[:, j % 64] * 0.5 + 0.25 for j in range(schema.N_TARGETS)], 1).astype(np.float32)
    preds = {}
    for device in ("cpu", "cuda"):
        d = xgb.QuantileDMatrix(x, y, max_bin=64)
        b = xgb.train({"tree_method": "hist", "device": device, "max_depth": 4, "max_bin": 64,
                       "multi_strategy": "one_output_per_tree", "seed": 0}, d, num_boost_round=20)
        b.set_param({"device": "cpu"})
        preds[device] = b.inplace_predict(x)
    assert np.abs(preds["cpu"] - preds["cuda"]).max() < 1e-3


def test_predict_on_cuda(trained, train_shards, tmp_path):
    from gzpipe.predict import PredictConfig, run_predict

    cpu = run_predict(PredictConfig(model=str(trained / "resnet50"), inputs=[str(train_shards)],
                                    out=str(tmp_path / "cpu.csv"), device="cpu", backend="pil", workers=1)).frame()
    gpu = run_predict(PredictConfig(model=str(trained / "resnet50"), inputs=[str(train_shards)],
                                    out=str(tmp_path / "gpu.csv"), device="cuda", workers=1)).frame()
    a = cpu.set_index("id")[list(schema.TARGET_NAMES)]
    b = gpu.set_index("id").loc[a.index, list(schema.TARGET_NAMES)]
    assert len(a) == len(b) and np.abs(a.to_numpy() - b.to_numpy()).mean() < 0.02
