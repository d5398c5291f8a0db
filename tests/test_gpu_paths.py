"""The GPU code paths, run on the CPU: each test exercises the code a GPU runs (the same functions, the same data
flow), with the one GPU-only piece swapped for its CPU twin and named in the docstring. A GPU is rarely available;
these keep the predicted first-contact defects (issue 27) from coming back."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist
from PIL import Image

from gzpipe import schema
from gzpipe.train import distributed as ddp

CPU = torch.device("cpu")


# ---- 1. multi-GPU reductions ---------------------------------------------------------------------------------

def test_cuda_ranks_reduce_numbers_through_gloo_and_gradients_through_nccl(monkeypatch):
    """NCCL refuses CPU tensors: on CUDA the group is cpu:gloo,cuda:nccl and every reduction's tensor lives on the
    device the group's backend serves. No NCCL here: the process-group calls are recorded, not made."""
    calls = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend: calls.setdefault("backend", backend))
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: calls.setdefault("set_device", i))
    d = ddp.setup("cuda")
    assert calls == {"backend": "cpu:gloo,cuda:nccl", "set_device": 1} and (d.rank, d.local_rank) == (1, 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    for backend, want in (("cpu:gloo,cuda:nccl", CPU), ("gloo", CPU), ("nccl", torch.device("cuda", 1))):
        monkeypatch.setattr(dist, "get_backend", lambda group=None, b=backend: b)
        assert ddp.collective_device() == want, backend
    seen = []
    monkeypatch.setattr(dist, "all_reduce", lambda t, op=None: seen.append(t.device))
    monkeypatch.setattr(dist, "get_backend", lambda group=None: "cpu:gloo,cuda:nccl")
    assert ddp.sum_floats(d, 1.0, 2.0) == [1.0, 2.0] and ddp.min_int(d, 3) == 3
    assert seen == [CPU, CPU]


# ---- 2. and 4. the nvjpeg backend: one buffer a batch, and one bad file costs only its row ----------------------

@pytest.fixture(scope="module")
def many_shards(tmp_path_factory) -> Path:
    """600 small galaxies (enough for batches of 256 from two workers), shards of 100."""
    from gzpipe.shard import ShardConfig, run_shard

    root = tmp_path_factory.mktemp("many")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(600):
        y, x = np.mgrid[:48, :48]
        disc = ((x - 24) ** 2 + (y - 24) ** 2 < (8 + i % 12) ** 2)[..., None]
        im = (disc * rng.integers(60, 255, 3) + rng.integers(0, 30, (48, 48, 3))).clip(0, 255).astype(np.uint8)
        Image.fromarray(im).save(root / "images" / f"{5000 + i}.jpg", quality=92)
        rows.append({"asset_id": 5000 + i, **{f"{n}_debiased": float(rng.random()) for n in schema.TARGET_NAMES}})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    run_shard(ShardConfig(catalog=root / "labels.csv", images=root / "images", out=root / "shards", shard_size=100,
                          val=0.1, test=0.1, workers=2))
    return root / "shards"


@pytest.fixture
def nvjpeg_on_cpu(monkeypatch):
    """The nvjpeg backend with torchvision's CPU decoder in nvJPEG's place (the private switch)."""
    from gzpipe.loaders import nvjpeg, registry

    monkeypatch.setattr(nvjpeg, "_DECODE_DEVICE", "cpu")
    monkeypatch.setitem(registry.BACKENDS, "nvjpeg", replace(registry.BACKENDS["nvjpeg"], needs_cuda=False,
                                                             available=lambda: (True, "")))
    return nvjpeg


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="counts open descriptors in /proc (Linux)")
def test_nvjpeg_hands_each_batch_over_as_one_buffer(many_shards, nvjpeg_on_cpu):
    """Workers, collation, the split into views, batched decode and warp, all as on a GPU but for the decoder
    (torchvision's CPU one): at batch 256 the main process holds a handful of descriptors, not one per JPEG."""
    from gzpipe.loaders import create_loader

    loader = create_loader(many_shards, "train", "nvjpeg", image_size=32, batch_size=256, train=False, device="cpu",
                           workers=2)
    base, peak, n = _open_fds(), 0, 0
    for b in loader:
        peak = max(peak, _open_fds())
        n += len(b)
        assert b.images.shape[1:] == (3, 32, 32) and b.images.is_contiguous(memory_format=torch.channels_last)
    assert n == loader.shards.samples
    assert peak - base < 40, f"{peak - base} descriptors opened for batches of 256"  # one per JPEG: hundreds


def test_nvjpeg_matches_pil_in_eval_mode(many_shards, nvjpeg_on_cpu):
    """The whole nvjpeg path (CPU decode) against pil: the same galaxies, the same pixels within the two decoders'
    rounding and pil's DCT-scaled decode."""
    from gzpipe.loaders import create_loader

    out = {}
    for be in ("pil", "nvjpeg"):
        for b in create_loader(many_shards, "val", be, image_size=40, batch_size=16, device="cpu", workers=2):
            for gid, im in zip(b.ids, b.images):
                out.setdefault(gid, {})[be] = im
    assert len(out) > 40 and all(len(v) == 2 for v in out.values())
    diff = torch.stack([(v["pil"] - v["nvjpeg"]).abs().mean() for v in out.values()])
    assert float(diff.mean()) < 0.05, float(diff.mean())


@pytest.fixture(scope="module")
def trained_tiny(train_shards, tmp_path_factory) -> Path:
    from gzpipe.train.config import resolve
    from gzpipe.train.run import run_train

    out = tmp_path_factory.mktemp("tiny_art")
    run_train(resolve("resnet50", str(train_shards), None, out=str(out), image_size=32, batch_size=8, epochs=1,
                      workers=0, device="cpu", warmup_epochs=1, backend="pil"))
    return out / "resnet50"


def test_one_file_nvjpeg_refuses_is_read_on_the_cpu_and_a_damaged_one_costs_only_its_row(
        synth_release, tmp_path, nvjpeg_on_cpu, monkeypatch, trained_tiny):
    """nvJPEG fails a whole batched decode for one image it cannot read. Here the GPU decoder's stand-in refuses one
    sound file the way nvJPEG refuses a CMYK or arithmetic-coded JPEG: it is decoded on the CPU and predicted (issue
    40); a damaged file, which no decoder reads, gets its error row, and the rest are predicted."""
    import gzpipe.loaders.nvjpeg as nv
    from gzpipe.predict import PredictConfig, run_predict

    files = sorted((synth_release / "images").glob("*.jpg"))[:6]
    refused = files[2].read_bytes()
    damaged = tmp_path / "damaged.jpg"
    damaged.write_bytes(files[4].read_bytes()[:300] + b"\x00" * 2000 + b"\xff\xd9")  # a header, then zeros
    real = nv._gpu_decode

    def gpu_decode(payloads, dev):
        if any(p.numpy().tobytes() == refused for p in payloads):
            raise RuntimeError("nvjpegDecode failed: 6 (NVJPEG_STATUS_EXECUTION_FAILED)")
        return real(payloads, dev)

    monkeypatch.setattr(nv, "_gpu_decode", gpu_decode)
    inputs = [str(f) for f in files] + [str(damaged)]
    r = run_predict(PredictConfig(model=str(trained_tiny), inputs=inputs, out=str(tmp_path / "p.csv"),
                                  device="cpu", backend="nvjpeg", workers=1, batch_size=4))
    df = r.frame().set_index("path")
    assert r.rows == 7 and r.errors == 1 and "damaged.jpg" in df.loc[str(damaged), "error"]
    good = df.drop(index=str(damaged))
    assert (good["error"] == "").all() and good[list(schema.TARGET_NAMES)].notna().all().all()
    assert df.loc[str(damaged), list(schema.TARGET_NAMES)].isna().all()


def test_a_shard_sample_no_decoder_reads_names_its_shard(many_shards, nvjpeg_on_cpu, monkeypatch):
    """Shards are verified data: a sample neither nvJPEG nor the CPU decodes means damage, named as the other
    backends name it."""
    import gzpipe.loaders.nvjpeg as nv
    from gzpipe.errors import GzpipeError
    from gzpipe.loaders import create_loader

    real = nv._gpu_decode
    calls = {"n": 0}

    def gpu_decode(payloads, dev):
        calls["n"] += 1
        if len(payloads) > 1 or calls["n"] == 2:  # the batch fails, then its first image alone
            raise RuntimeError("nvjpegDecode failed")
        return real(payloads, dev)

    monkeypatch.setattr(nv, "_gpu_decode", gpu_decode)
    monkeypatch.setattr(nv, "_cpu_decode", lambda payload: (_ for _ in ()).throw(RuntimeError("corrupt data")))
    with pytest.raises(GzpipeError, match=r"sample \S+ in shard .*val-\d+\.tar cannot be decoded .*gzpipe verify"):
        list(create_loader(many_shards, "val", "nvjpeg", image_size=32, batch_size=8, device="cpu", workers=0))


# ---- 3. the training loop keeps the GPU queue full ----------------------------------------------------------

class _Tiny(torch.nn.Module):
    """The smallest model the loop accepts: logits from ``forward``, predictions from ``activate``."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3 * 8 * 8, schema.N_TARGETS)

    def forward(self, x):
        return self.lin(x.flatten(1))

    def activate(self, logits):
        return torch.sigmoid(logits)


class _Batches:
    """A loader of ``sizes`` random batches (8 x 8 px), the same every epoch."""

    def __init__(self, sizes):
        g = torch.Generator().manual_seed(0)
        self.data = [(torch.randn(n, 3, 8, 8, generator=g), torch.rand(n, schema.N_TARGETS, generator=g))
                     for n in sizes]

    def set_epoch(self, epoch):
        pass

    def __iter__(self):
        from gzpipe.loaders.contract import Batch

        for i, (x, y) in enumerate(self.data):
            yield Batch(x, y, torch.ones_like(y, dtype=torch.bool), [f"{i}-{k}" for k in range(len(x))])


def _count_syncs(monkeypatch) -> dict:
    """Counts reads of a tensor's value into Python (``.item()``, ``float()``): on CUDA each is a sync that drains
    the GPU's queue. On the CPU the same calls are counted."""
    counts = {"n": 0}
    item, to_float = torch.Tensor.item, torch.Tensor.__float__

    def counted(f):
        def wrapper(self, *a):
            counts["n"] += 1
            return f(self, *a)
        return wrapper

    monkeypatch.setattr(torch.Tensor, "item", counted(item))
    monkeypatch.setattr(torch.Tensor, "__float__", counted(to_float))
    return counts


def test_the_training_loop_reads_the_loss_every_25_steps_not_every_step(monkeypatch):
    from types import SimpleNamespace

    from gzpipe.train.loop import LOSS_READ_EVERY, EpochState, train_one_epoch

    steps = 60
    model = _Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    cfg = SimpleNamespace(loss="l1", grad_clip=1.0, checkpoint_minutes=0.0)
    counts = _count_syncs(monkeypatch)
    state = train_one_epoch(model, _Batches([4] * steps), opt, sched, None, CPU, "off", cfg, 0, steps, EpochState(),
                            lambda s: None)
    reads = -(-steps // LOSS_READ_EVERY)
    assert counts["n"] <= 2 * reads, counts  # was 2 a step: 120
    assert state.batches_done == steps and state.count == steps * 4 * schema.N_TARGETS
    # a mid-epoch checkpoint reads the running loss first: what it saves is up to date
    seen = []
    cfg.checkpoint_minutes = 1e-9
    train_one_epoch(model, _Batches([4] * 5), opt, sched, None, CPU, "off", cfg, 1, 5, EpochState(),
                    lambda s: seen.append((s.batches_done, s.count)))
    assert seen == [(k, k * 4 * schema.N_TARGETS) for k in range(1, 6)]


# ---- 6. a compiled model is not recompiled to be evaluated ---------------------------------------------------

def test_evaluation_never_recompiles_a_compiled_model():
    """torch.compile with dynamo's eager backend (its tracing and guards, without inductor's code generation: the
    same compilations counted, in a second on a CPU). Evaluation in eval and inference mode, with a partial last
    batch and TTA's rotated views, must add none."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    from gzpipe.train.loop import evaluate

    torch._dynamo.reset()
    counters.clear()
    net = torch.compile(_Tiny(), backend="eager")
    for x, y in _Batches([4, 4]).data:  # training steps: what compiling is for
        net.train()
        torch.nn.functional.l1_loss(net.activate(net(x)), y).backward()
    trained = counters["stats"]["unique_graphs"]
    assert trained >= 1
    r = evaluate(net, _Batches([4, 4, 3]), CPU, "off", "l1", tta=4, tta_kind="rotate")
    assert len(r.ids) == 11
    assert counters["stats"]["unique_graphs"] == trained, dict(counters["stats"])


# ---- 5. DDP with DALI: every rank runs the same number of steps -------------------------------------------------

def _uneven_batch(n: int) -> int:
    """A batch size at which the smaller of two ranks' shares of ``n`` makes a batch fewer than ceil(n / 2) does."""
    return next(b for b in range(2, n) if 0 < (n // 2) // b != -(-n // 2) // b)


def test_a_dali_epoch_is_as_long_as_the_batches_every_rank_gets(train_shards):
    """DALI's iterator ends every rank's epoch with the shortest shard's batches (so the predicted hang does not
    happen: DALI 2.4 yields 4 batches on both ranks of 29 samples at batch 3); the loader's length was
    ceil(29 / 2) // 3 = 5, so the learning-rate schedule and the progress bars counted a step that never ran."""
    pytest.importorskip("nvidia.dali")
    from gzpipe.loaders import create_loader
    from gzpipe.manifest import read_manifest

    n = read_manifest(train_shards)["counts"]["per_split"]["train"]
    batch = _uneven_batch(n)
    for rank in (0, 1):
        loader = create_loader(train_shards, "train", "dali", image_size=16, batch_size=batch, train=True,
                               device="cpu", workers=1, rank=rank, world_size=2)
        for epoch in range(2):
            loader.set_epoch(epoch)
            assert sum(1 for _ in loader) == len(loader) == (n // 2) // batch, (rank, epoch)


@pytest.mark.slow  # ~30 s: two processes; the test above checks the epoch length directly
def test_two_ranks_with_uneven_dali_shards_run_the_same_steps(train_shards, tmp_path):
    """Two gloo processes training through DALI's CPU pipeline (the GPU's "mixed" decoding aside, the same reader
    sharding as on GPUs), at a batch where one rank's share makes a batch fewer than ceil(N / 2): both run the same
    steps and finish (no rank waits in an all-reduce the other never joins)."""
    import json
    import subprocess
    import sys

    pytest.importorskip("nvidia.dali")
    from gzpipe.manifest import read_manifest

    n = read_manifest(train_shards)["counts"]["per_split"]["train"]
    batch = _uneven_batch(n)
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533", "-m", "gzpipe",
         "train", "--backbone", "resnet50", "--shards", str(train_shards), "--out", str(tmp_path), "--epochs", "2",
         "--image-size", "32", "--batch-size", str(batch), "--workers", "1", "--device", "cpu", "--backend", "dali",
         "--warmup-epochs", "1"],
        capture_output=True, text=True, timeout=240,
        env={**os.environ, "GZPIPE_PROGRESS": "0", "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((tmp_path / "resnet50/metrics.json").read_text())
    assert m["epochs_run"] == 2


# ---- 7. DALI's settings are decisions, and auto checks that DALI really decodes ------------------------------

def test_dali_threads_follow_the_cores_and_auto_checks_dali_decodes(monkeypatch):
    from gzpipe.loaders import dali, registry

    monkeypatch.setattr("gzpipe.info.cpu_count", lambda: 16)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert dali.threads(2) == 16  # not the tar backends' 2 workers
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert dali.threads(2) == 4  # four ranks on the node share its cores
    assert dali.HW_DECODER_LOAD == 0.9 and dali.FANCY_UPSAMPLING
    pytest.importorskip("nvidia.dali")
    registry._dali_available.cache_clear()
    assert registry._dali_available()[0]  # here: a CPU decode of a test JPEG
    registry._dali_available.cache_clear()
    import nvidia.dali.fn as fn

    def broken(*a, **kw):
        raise RuntimeError("nvImageCodec library not found")

    monkeypatch.setattr(fn.decoders, "image", broken)
    ok, why = registry._dali_available()
    registry._dali_available.cache_clear()
    assert not ok and "cannot decode" in why and "nvImageCodec" in why
    # a GPU's auto then passes DALI by for the next backend
    monkeypatch.setitem(registry.BACKENDS, "dali", replace(registry.BACKENDS["dali"], available=lambda: (False, why)))
    monkeypatch.setitem(registry.BACKENDS, "nvjpeg", replace(registry.BACKENDS["nvjpeg"], available=lambda: (True, "")))
    assert registry.resolve_backend("auto", torch.device("cuda")) == "nvjpeg"


# ---- 8. GPU tests skip an optional library that is not there --------------------------------------------------

_NO_OPTIONAL_LIBS = '''
import sys, importlib.abc, torch

class _Absent(importlib.abc.MetaPathFinder):
    """As on the GPU machine before its wheels arrive: xgboost and DALI cannot be imported."""
    def find_spec(self, name, path=None, target=None):
        if name == "xgboost" or name.startswith(("xgboost.", "nvidia.dali")) or name == "nvidia.dali":
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None

sys.meta_path.insert(0, _Absent())
torch.cuda.is_available = lambda: True  # the tests' CUDA checks pass; the libraries' own checks decide
'''


def test_gpu_tests_skip_a_missing_optional_library_with_its_reason(tmp_path):
    """The GPU tests that need xgboost or DALI, with CUDA reported present and both libraries unimportable (as on
    the GPU machine before their wheels are installed): skipped, each with its reason, not failed."""
    import subprocess
    import sys

    (tmp_path / "no_optional_libs.py").write_text(_NO_OPTIONAL_LIBS)
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no_optional_libs", "-p", "no:cacheprovider",
                        "-m", "gpu", "tests/test_gpu.py::test_xgboost_on_cuda_predicts_as_its_cpu_twin",
                        "tests/test_loaders.py::test_gpu_backends_contract_and_parity[dali]"],
                       capture_output=True, text=True, cwd=root, timeout=300,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(root)]),
                            "GZPIPE_PROGRESS": "0"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "2 skipped" in r.stdout, r.stdout[-2000:]
    assert "xgboost is not installed" in r.stdout and "nvidia-dali is not installed" in r.stdout


# ---- 9. XGBoost on a GPU: device arrays in, gradients on the device --------------------------------------------

class _RecordingXp:
    """A stand-in for CuPy (NumPy underneath) that records what is converted to it: where CuPy is absent (here),
    it shows which arrays the CUDA path puts on the device."""

    def __init__(self):
        self.converted = []
        self.float32 = np.float32

    def asarray(self, a):
        self.converted.append(np.shape(a))
        return np.asarray(a)

    def sign(self, a):
        return np.sign(a)


def test_xgboost_on_cuda_builds_from_device_arrays_and_keeps_its_objective_there(monkeypatch, tmp_path):
    import xgboost as xgb

    from gzpipe.boost import xgb as engine

    rng = np.random.default_rng(0)
    y = rng.random((50, schema.N_TARGETS)).astype(np.float32)
    m = rng.random((50, schema.N_TARGETS)) > 0.3
    d = xgb.DMatrix(rng.random((50, 4)).astype(np.float32), label=engine.encode_labels(y, m))
    p = rng.random(50 * schema.N_TARGETS).astype(np.float32)
    for kind in ("l2", "l1"):  # the device-generic objective on NumPy: the formulas of the host one
        g, h = engine.MaskedObjective(kind)(p, d)
        resid = p.reshape(-1, schema.N_TARGETS) - np.nan_to_num(y)
        want = (resid if kind == "l2" else np.sign(resid)) * m
        np.testing.assert_allclose(g, want, atol=1e-6)
        np.testing.assert_array_equal(h, m.astype(np.float32))
    # the CUDA path: CuPy chosen for the device, the matrix fed from it, the objective computed with it
    fake = _RecordingXp()
    monkeypatch.setattr(engine, "array_module", lambda device: fake if str(device).startswith("cuda") else np)
    obj = engine.objective_for("l2", "cuda")
    assert obj.xp is fake and engine.objective_for("l2", "cpu").xp is np
    obj(p, d)
    obj(p, d)
    assert fake.converted == [(50, schema.N_TARGETS), (50 * schema.N_TARGETS,), (50 * schema.N_TARGETS,)]  # labels
    # once, the predictions each round

    class Data:
        def batches(self, split):
            yield [f"g{i}" for i in range(50)], rng.random((50, 4)).astype(np.float32), y, m

    fake.converted.clear()
    it = engine._iterator(Data(), "train", fake)
    xgb.QuantileDMatrix(it, max_bin=16)
    assert (50, 4) in fake.converted and (50, schema.N_TARGETS) in fake.converted  # features and labels


def test_lightgbm_never_picks_its_unmeasured_opencl_learner(monkeypatch):
    """A GPU reported present, a LightGBM build with only the OpenCL learner (the PyPI wheel's): auto trains on the
    CPU and says why; --device cuda is an error that names the missing CUDA learner."""
    from types import SimpleNamespace

    from gzpipe.boost import lgbm
    from gzpipe.errors import GzpipeError

    monkeypatch.setattr(lgbm, "cuda_available", lambda: True)
    monkeypatch.setattr(lgbm, "_learner_works", lambda lgb, kind: (kind == "gpu", "" if kind == "gpu" else
                                                                   "CUDA Tree Learner was not enabled in this build"))
    device, why = lgbm.pick_device(SimpleNamespace(device="auto"))
    assert device == "cpu" and "no CUDA learner" in why and "OpenCL" in why
    with pytest.raises(GzpipeError, match="no CUDA learner .*--device auto or cpu"):
        lgbm.pick_device(SimpleNamespace(device="cuda"))
    monkeypatch.setattr(lgbm, "_learner_works", lambda lgb, kind: (True, ""))  # a CUDA build
    assert lgbm.pick_device(SimpleNamespace(device="auto"))[0] == "cuda"
