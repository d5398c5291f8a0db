"""The GPU path, second review (issue 40): each fix proven with a CPU test of the same code. What the CPU cannot show
is said in each test's docstring (no GPU has been lent to this project yet). The DDP decisions (items 1 and 2) are in
tests/test_ddp_agreement.py, the suite's plan (item 3) in tests/test_gpu_suite.py."""

from __future__ import annotations

import io
import math
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import SAMPLE
from gzpipe.errors import GzpipeError


# ---- 4. defaults that feed an H100 ------------------------------------------------------------------------------

def test_the_gpu_chooses_its_own_defaults_and_records_them(train_shards, monkeypatch):
    """On CUDA, where the user set none of them: batch 256 with the rate scaled by the square root of the batch ratio,
    this rank's share of the cores as loader workers, recorded in the run's config (``device_defaults``). The CPU's
    stay as they were. (CPU test: torch.cuda.is_available is patched; fused AdamW and cuDNN's autotuner are set where
    the device is CUDA, which the CPU cannot run.)"""
    from gzpipe.train.config import GPU_BATCH, SCRATCH_LR, resolve

    cpu = resolve("resnet50", str(train_shards))
    assert cpu.batch_size == 32 and cpu.lr == SCRATCH_LR and cpu.workers == 2 and cpu.device_defaults is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    gpu = resolve("resnet50", str(train_shards))
    assert gpu.batch_size == GPU_BATCH == 256 and gpu.lr == pytest.approx(SCRATCH_LR * math.sqrt(256 / 32))
    assert gpu.workers >= 2 and gpu.device_defaults == {"batch_size": 256, "lr": gpu.lr, "workers": gpu.workers}
    mine = resolve("resnet50", str(train_shards), batch_size=64, workers=3)  # what a user sets is kept
    assert mine.batch_size == 64 and mine.workers == 3 and mine.lr == SCRATCH_LR and mine.device_defaults is None
    assert resolve("resnet50", str(train_shards), device="cpu").batch_size == 32  # asked for the CPU: its defaults


# ---- 5. nvJPEG's errors told apart ------------------------------------------------------------------------------

def _jpeg(colour=(120, 60, 30), mode="RGB") -> torch.Tensor:
    buf = io.BytesIO()
    Image.new(mode, (24, 20), colour if mode == "RGB" else (10, 20, 30, 40)).save(buf, format="JPEG")
    return torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)


def test_an_image_nvjpeg_refuses_is_decoded_on_the_cpu_and_a_broken_decoder_is_said(monkeypatch):
    """Any RuntimeError of the batched decode became 'bad image' rows (predict) or 'the shard was damaged' (train).
    Now an image nvJPEG refuses but the CPU reads (a CMYK JPEG: nvJPEG has no CMYK) is decoded there; a batch whose
    every image nvJPEG refuses while the CPU reads them all says the decoder does not work here; a GPU failure (out
    of memory) is re-raised as itself. (CPU test: the GPU decoder is replaced by a function that refuses as nvJPEG
    does; the CPU decoder is the real one.)"""
    import gzpipe.loaders.nvjpeg as nv

    real = nv._gpu_decode

    def refuses_cmyk(payloads, dev):
        from torchvision.io import decode_jpeg

        for p in payloads:
            if Image.open(io.BytesIO(bytes(p.numpy()))).mode == "CMYK":
                raise RuntimeError("nvjpegDecodeJpeg failed: unsupported JPEG (CMYK)")
        return real(payloads, torch.device("cpu")) if dev.type == "cpu" else decode_jpeg(payloads, device=dev)

    monkeypatch.setattr(nv, "_gpu_decode", refuses_cmyk)
    payloads = [_jpeg(), _jpeg(mode="CMYK"), _jpeg((10, 200, 10))]
    origins = [(True, f"f{i}.jpg") for i in range(3)]
    out, errors = nv._decode(payloads, torch.device("cpu"), [""] * 3, origins)
    assert errors == ["", "", ""] and [tuple(o.shape) for o in out] == [(3, 20, 24)] * 3  # the CMYK one too

    monkeypatch.setattr(nv, "_gpu_decode", lambda payloads, dev: (_ for _ in ()).throw(
        RuntimeError("nvjpeg is not available in this build")))
    with pytest.raises(GzpipeError, match="refused all 3 images of a batch that the CPU decodes"):
        nv._decode(payloads, torch.device("cpu"), [""] * 3, origins)

    bad = torch.frombuffer(bytearray(b"\xff\xd8\xff" + b"\x00" * 40), dtype=torch.uint8)
    out, errors = nv._decode([_jpeg(), bad], torch.device("cpu"), ["", ""], [(True, "a.jpg"), (True, "b.jpg")])
    assert errors[0] == "" and errors[1].startswith("cannot read image b.jpg")  # a real bad image: its row only

    monkeypatch.setattr(nv, "_gpu_decode", lambda payloads, dev: (_ for _ in ()).throw(
        RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")))
    with pytest.raises(RuntimeError, match="out of memory"):
        nv._decode(payloads, torch.device("cpu"), [""] * 3, origins)


# ---- 6. GPU loaders see what the CPU loader sees ----------------------------------------------------------------

PARITY = 0.008  # mean absolute difference in normalised units (~0.5 grey levels), every pair, every reduction


@pytest.mark.parametrize("size", [224, 160, 112, 85, 64])  # 424 x 0.8 -> size: 1.5x, 2.1x, 3x, 4x, 5.3x reductions
def test_every_backend_sees_the_same_pixels_at_every_reduction(real_sample, tmp_path_factory, size, monkeypatch):
    """pil decodes at a reduced size (DCT scaling) before its warp; nvjpeg and DALI warped the full image bilinearly,
    which aliases beyond a 2x reduction (0.011-0.023 from pil at 4x-5x). Both now low-pass first (nvjpeg: the same
    power-of-two box; DALI: an antialiased resize by it). (CPU test: nvjpeg's path with torchvision's CPU decoder,
    DALI's CPU pipeline; on a GPU only the decoders differ.)"""
    from gzpipe.loaders import create_loader, registry
    import gzpipe.loaders.nvjpeg as nv

    shards = _parity_shards(real_sample, tmp_path_factory)
    monkeypatch.setattr(nv, "_DECODE_DEVICE", "cpu")
    monkeypatch.setitem(registry.BACKENDS, "nvjpeg", replace(registry.BACKENDS["nvjpeg"], needs_cuda=False,
                                                             available=lambda: (True, "")))
    backends = ["pil", "nvjpeg"] + (["dali"] if registry.BACKENDS["dali"].available()[0] else [])
    got: dict = {}
    for be in backends:
        for b in create_loader(shards, "val", be, size, 32, device="cpu", workers=0):
            for i, gid in enumerate(b.ids):
                got.setdefault(gid, {})[be] = b.images[i].float()
    for x in backends:
        for y in backends:
            if x < y:
                d = float(torch.stack([(v[x] - v[y]).abs().mean() for v in got.values()]).mean())
                assert d < PARITY, (x, y, size, d)


_PARITY_SHARDS: dict = {}


def _parity_shards(real_sample, tmp_path_factory) -> Path:
    if "s" not in _PARITY_SHARDS:
        from gzpipe.shard import ShardConfig, run_shard

        root = tmp_path_factory.mktemp("parity")
        pd.read_csv(real_sample / "labels_manifest_800.csv", dtype=str).head(40).to_csv(root / "c.csv", index=False)
        run_shard(ShardConfig(catalog=root / "c.csv", images=real_sample / "images", out=root / "s", val=0.5,
                              test=0.1))
        _PARITY_SHARDS["s"] = root / "s"
    return _PARITY_SHARDS["s"]


# ---- 7. no syncs left in the hot loop ---------------------------------------------------------------------------

def test_normalisation_constants_are_made_once_not_per_batch(monkeypatch):
    """torch.tensor(list, device=cuda) for the mean and std in every batch was a blocking host-to-device copy, twice
    a batch (contract.py, nvjpeg.py). They are made on the device once. (CPU test: the calls are counted; on CUDA
    torch.cuda.set_sync_debug_mode("error") would catch the copy, test_gpu_paths' GPU test runs it.)"""
    import gzpipe.loaders.contract as contract
    import gzpipe.loaders.nvjpeg as nv
    from gzpipe.loaders.presets import draw_affine

    calls = []
    real = torch.tensor
    monkeypatch.setattr(contract.torch, "tensor", lambda *a, **k: calls.append(1) or real(*a, **k))
    x = torch.zeros((2, 8, 8, 3), dtype=torch.float32)  # not uint8: the branch the GPU takes
    contract.normalise_nhwc_uint8(x)
    first = len(calls)
    for _ in range(5):
        contract.normalise_nhwc_uint8(x)
        nv.warp_batch([torch.zeros((3, 16, 16), dtype=torch.uint8)] * 2, np.stack([draw_affine(None, False)] * 2), 8)
        contract.to_grey(torch.zeros((2, 3, 8, 8)))
    assert len(calls) - first <= 1  # the grey weights, made once too; nothing per batch


def test_the_moving_average_never_reads_a_device_tensor_back():
    """``float(n_averaged)`` in the EMA step read a device tensor back, a sync per parameter group and step. On a GPU
    the decay is now a tensor. (CPU test: the tensors are on the meta device, where reading a value back raises: the
    step completes, so nothing is read.)"""
    from gzpipe.train.setup import ema_update

    update = ema_update(0.999)
    ema = [torch.zeros(4, device="meta")]
    update(ema, [torch.ones(4, device="meta")], torch.tensor(3, device="meta"))
    with pytest.raises(Exception):
        float(torch.tensor(3.0, device="meta"))  # what the old code did


# ---- 8. DDP and compile, ranks and devices ----------------------------------------------------------------------

def test_compile_wraps_ddp_not_the_other_way(tmp_path):
    """DDP wrapped a compiled module, so its all-reduce could not overlap the backward; now torch.compile wraps DDP
    (DDPOptimizer), and evaluation still finds the model inside either order. (CPU test: a one-process gloo group;
    compiling is lazy, and what it would do on 8 GPUs is not shown.)"""
    import torch.distributed as dist

    from gzpipe.train.loop import LogitsModel, unwrap
    from gzpipe.train.setup import wrap
    from gzpipe.models import create_model

    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        inner = LogitsModel(create_model("timm:resnet10t"))
        net = wrap(inner, True, torch.device("cpu"), True)
        assert isinstance(net._orig_mod, torch.nn.parallel.DistributedDataParallel)
        assert unwrap(net) is inner and unwrap(torch.compile(torch.nn.parallel.DistributedDataParallel(inner))) is inner
    finally:
        dist.destroy_process_group()


def test_a_resumed_predict_shares_what_is_left_over_every_rank():
    """Parts were shared round-robin before the finished ones were dropped: after a resume one rank could get every
    part left, the others none (and time out at the barrier)."""
    from gzpipe.predict.parts import Part, share

    parts = [Part(f"part-{i:06d}", "files") for i in range(8)]
    left = [p for i, p in enumerate(parts) if i % 2 == 1]  # rank 0's parts were all done before the kill
    mine = [share(left, r, 2) for r in range(2)]
    assert [len(m) for m in mine] == [2, 2] and {p.name for m in mine for p in m} == {p.name for p in left}


def test_channels_last_off_is_honoured_in_training():
    """regnety_8gf's CUDA default is channels-last off, but the loaders deliver channels-last batches and a
    convolution follows its input's format: training ran channels-last anyway. The training view now hands a
    contiguous batch to a model whose default is off. (CPU test: the format reaching the first convolution.)"""
    from gzpipe.models import create_model
    from gzpipe.train.loop import LogitsModel

    seen = []
    model = create_model("timm:resnet10t")
    model.backbone.conv1[0].register_forward_pre_hook(lambda m, a: seen.append(a[0].is_contiguous()))
    x = torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    LogitsModel(model, channels_last=False)(x)
    LogitsModel(model, channels_last=True)(x)
    assert seen == [True, False]


def test_the_pil_loaders_shared_memory_is_checked_first(monkeypatch, tmp_path):
    """The pil loader's batch buffers (6 batches a worker: 3.2 GB at batch 256 with 15 workers at 224 px) exceed a container's
    default /dev/shm (64 MB under Docker), and running out is a bus error in a worker. The loader now refuses first,
    saying what to change. (CPU test: the free space is patched.)"""
    from gzpipe.loaders.pil import check_shared_memory

    class Tiny:
        f_bavail, f_frsize = 16, 4096  # 64 KiB free

    monkeypatch.setattr(os, "statvfs", lambda path: Tiny())
    with pytest.raises(GzpipeError, match=r"need 3\.2 GB of shared memory .* has 0\.00 GB free: give fewer --workers"):
        check_shared_memory(15 * 6 * 256 * 224 * 224 * 3, 15, 256, where=str(tmp_path))
    check_shared_memory(10, 0, 256, where=str(tmp_path))  # no workers: no shared buffers


# ---- 9. the benchmark measures the real step --------------------------------------------------------------------

def test_bench_train_times_the_training_loops_own_step(monkeypatch):
    """`gzpipe bench train` timed a lighter step (no gradient clipping, no scheduler, no loss accumulation), so its
    data stall was not the training loop's. It now times train_one_epoch itself."""
    import gzpipe.bench.train as bench
    import gzpipe.train.loop as loop

    calls = {"epochs": 0, "clip": 0}
    real_epoch, real_clip = bench.train_one_epoch, torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(bench, "train_one_epoch", lambda *a, **k: calls.__setitem__("epochs", calls["epochs"] + 1)
                        or real_epoch(*a, **k))
    monkeypatch.setattr(loop.torch.nn.utils, "clip_grad_norm_", lambda *a, **k: calls.__setitem__(
        "clip", calls["clip"] + 1) or real_clip(*a, **k))
    rows = bench.run(bench.TrainBenchConfig("timm:resnet10t", image_size=32, batch_size=4, steps=2, warmup=1,
                                            repeats=2, device="cpu"))
    assert rows[0]["images_per_s"] > 0 and calls["epochs"] == 3 and calls["clip"] == 1 + 2 * 2


def test_nvjpeg_decodes_ahead_in_a_thread_of_its_own():
    """nvJPEG's decode and warp ran in the thread that launches the training step's kernels; they now run a few
    batches ahead in a thread of their own. Its contract, shown on the CPU: the batches in order, an error raised in
    the consumer, and a consumer that stops early ends the thread and closes its generator before the next epoch
    takes the loader (on CUDA each batch also crosses streams through an event, which the CPU cannot show)."""
    import threading

    from gzpipe.loaders.nvjpeg import ahead

    closed = []

    def make(n, fail_at=None):
        try:
            for i in range(n):
                if i == fail_at:
                    raise ValueError(f"batch {i} is broken")
                yield i
        finally:
            closed.append(n)

    cpu = torch.device("cpu")
    assert list(ahead(lambda: make(7), cpu)) == list(range(7))
    with pytest.raises(ValueError, match="batch 3 is broken"):
        list(ahead(lambda: make(7, fail_at=3), cpu))
    it = ahead(lambda: make(1000), cpu)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()  # a loop capped at len(loader) steps
    assert closed[-1] == 1000 and not [t for t in threading.enumerate() if t.name == "gzpipe-nvjpeg"]
