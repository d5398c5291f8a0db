"""The GPU suite, sized for the GPU machine's window (../shared/docs/GPU.md: 15 minutes of device time in all, the
machine's start included; calls of at most 10 minutes; at most 64 MiB carried a call; only the results folder comes
back). The shell entry point is benchmarks/gpu_suite.sh, which installs the wheels a call brings.

    python benchmarks/gpu_suite.py --out DIR [--call 1|2 | --steps 1,2,3] [--budget SECONDS] [--dry-run]

Steps, in order of value. Each runs in a process of its own, killed (with everything it started) when its budget is
spent, and every result is appended to DIR/gpu_results.jsonl the moment it is measured, so a step stopped at its
limit, and a call stopped at the machine's, still return what they measured:

  step  what                                                                budget  needs (wheel, size)
  1     pytest -m gpu: one test per GPU code path                            90 s   webdataset + braceexpand (0.1 MiB)
  2     loaders, the real 424 px JPEGs to 224 px with train augmentation:  120 s   webdataset; simplejpeg (0.5 MiB)
        nvjpeg, then pil with 15 workers; images/s, medians
  3     train resnet50 224 px bf16: channels-last and compile on / off     240 s   webdataset
        (data on the GPU), then the default loader (data stall); the other
        backbones as time allows
  5     gzpipe features images/s per backbone                               120 s   webdataset
  6     a small end-to-end gzpipe study on the GPU (LightGBM alone when     60 s   webdataset, lightgbm (4 MiB)
        XGBoost did not come along)
  4     boosters: XGBoost device=cuda beside the CPU                        150 s   xgboost (~125 MiB: more than two
                                                                                    calls carry)
  7     the dali loader                                                      60 s   nvidia-dali (~190 MiB: likewise)

The plan (``PLAN``, checked by tests/test_gpu_suite.py): the machine's start (~2.5 minutes), then call 1 (steps 1, 2,
3: ~8 minutes) and call 2 (steps 5, 6: ~3.5 minutes), each within a call's 10 minutes and carrying the checkout, the
real sample and the small wheels within 64 MiB; 14 minutes in all. XGBoost's CUDA wheel and DALI do not fit two calls
(a piece left on the machine survives only 30 s of idle), so steps 4 and 7 run only where those libraries are
installed, and say so otherwise. After the steps, a ``figures`` row puts what was measured beside GPU.md's figures
to reach. The data are the real sample when it is brought along (``GZPIPE_SHARED``, e.g. a copy of
``../shared/data/gz2_sample`` inside the checkout), else a synthetic stand-in, said so in a ``data`` row.
``--dry-run`` runs the planned calls' steps on the CPU at toy size (CI runs it), so the suite is known to work before
a GPU sees it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import SAMPLE  # noqa: E402

STEPS = {1: "gpu tests", 2: "loaders", 3: "train", 4: "boosters", 5: "features", 6: "study", 7: "dali", 0: "figures"}
BUDGET_S = {1: 90, 2: 120, 3: 240, 4: 150, 5: 120, 6: 60, 7: 60}
# The window: the machine's start, then two calls (steps, seconds a call spends besides its steps: installing the wheels
# it brings, nvidia-smi, the start of each step's process, the transfers). What each call carries, in MiB.
PLAN = {"window_s": 900, "call_limit_s": 600, "carry_limit_mib": 64, "machine_start_s": 150,
        "calls": [{"steps": [1, 2, 3], "overhead_s": 45, "wheels_mib": {"webdataset": 0.1, "braceexpand": 0.02,
                                                                          "simplejpeg": 0.5}},
                  {"steps": [5, 6], "overhead_s": 30, "wheels_mib": {"webdataset": 0.1, "braceexpand": 0.02,
                                                                       "lightgbm": 4.0}}],
        "not_carried_mib": {"xgboost (CUDA)": 125, "nvidia-dali": 190}}
SAMPLE_MIB = 13  # ../shared/data/gz2_sample: 800 JPEGs of 424 px and the labels
# ../shared/docs/GPU.md's figures to reach, which the ``figures`` row puts the measurements beside
TARGETS = {"loader_images_per_s": 15_000, "resnet50_images_per_s": {"H100": 3_000, "H200": 3_500},
           "data_stall": 0.03, "xgboost_gpu_speedup": 10}
NEEDS = {1: ["webdataset"], 2: ["webdataset"], 3: ["webdataset"], 4: ["xgboost", "lightgbm"], 5: ["webdataset"],
         6: ["webdataset", "xgboost", "lightgbm"], 7: ["webdataset", "nvidia.dali"]}


class OutOfTime(Exception):
    """A step's budget is spent: what it measured so far is written; the next step starts."""


class Suite:
    def __init__(self, out: Path, dry: bool, deadline: float, work: Path | None = None):
        self.out, self.dry, self.run_deadline = out, dry, deadline
        self.results = out / "gpu_results.jsonl"
        self.device = "cpu" if dry else "cuda"
        self.work = work or Path(tempfile.mkdtemp(prefix="gzpipe-gpu-suite-"))
        self.env = {**os.environ, "GZPIPE_PROGRESS": "0", "PYTHONPATH": os.pathsep.join(
            [str(ROOT), *([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])])}
        self.step = 0
        self.step_deadline = deadline
        self.data_said = False

    # --- time ----------------------------------------------------------------------------------------------------

    def start_step(self, step: int) -> None:
        self.step = step
        self.step_deadline = min(self.run_deadline, time.monotonic() + (10_000 if self.dry else BUDGET_S[step]))

    def left(self) -> float:
        return self.step_deadline - time.monotonic()

    def need(self, seconds: float, what: str) -> None:
        """Start ``what`` only when the step's budget can hold about ``seconds`` more."""
        if not self.dry and self.left() < seconds:
            raise OutOfTime(f"{what}: {self.left():.0f} s of the step's budget left, it needs ~{seconds:.0f} s")

    # --- output --------------------------------------------------------------------------------------------------

    def emit(self, row: dict) -> None:
        row = {"step": self.step, "name": STEPS.get(self.step, "suite"), "dry_run": self.dry,
               "time": datetime.now(timezone.utc).isoformat(timespec="seconds"), **row}
        with open(self.results, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        print(json.dumps(row), flush=True)

    def gz(self, *args, timeout: float | None = None) -> subprocess.CompletedProcess:
        """`gzpipe ARGS`, killed at the step's budget (or ``timeout``, whichever is first)."""
        limit = max(1.0, min(self.left(), timeout or 1e9)) if not self.dry else (timeout or 1800)
        try:
            r = subprocess.run([sys.executable, "-m", "gzpipe", *map(str, args)], capture_output=True, text=True,
                               env=self.env, cwd=ROOT, timeout=limit)
        except subprocess.TimeoutExpired:
            raise OutOfTime(f"gzpipe {args[0]} {args[1] if len(args) > 1 else ''} ran past the step's budget "
                            f"({limit:.0f} s)") from None
        if r.returncode != 0:
            raise RuntimeError(f"gzpipe {' '.join(map(str, args))} failed ({r.returncode}): {r.stderr[-2000:]}")
        return r

    @staticmethod
    def json_rows(r: subprocess.CompletedProcess) -> list[dict]:
        return [json.loads(ln) for ln in r.stdout.splitlines() if ln.startswith("{")]

    # --- data ----------------------------------------------------------------------------------------------------

    def real_shards(self, n: int) -> Path:
        """The real sample's 424 px JPEGs, repeated to ``n`` galaxies (hard links, or copies where links cannot
        cross file systems; new ids), sharded as stored. A synthetic release stands in without the sample."""
        out = self.work / f"real-{n}"
        if (out / "shards/manifest.json").exists():
            return out / "shards"
        import pandas as pd

        (out / "images").mkdir(parents=True)
        if (SAMPLE / "labels_manifest_800.csv").exists():
            src = pd.read_csv(SAMPLE / "labels_manifest_800.csv", dtype={"asset_id": str})
            src_images, source = SAMPLE / "images", f"the real GZ2 sample ({len(src)} galaxies) from {SAMPLE}"
        else:
            from gzpipe.synth import SynthConfig, synth

            synth(SynthConfig(out=self.work / "synth", n=min(n, 200), seed=0, workers=2))
            src = pd.read_csv(self.work / "synth/gz2_hart16.csv", dtype={"dr7objid": str})
            src["asset_id"] = pd.read_csv(self.work / "synth/gz2_filename_mapping.csv", dtype=str)["asset_id"]
            src_images = self.work / "synth/images"
            source = (f"a synthetic stand-in: the real sample was not found at {SAMPLE} (bring a copy of "
                      "../shared/data/gz2_sample and set GZPIPE_SHARED to the folder holding data/gz2_sample)")
        if not self.data_said:
            self.emit({"data": source, "real_sample": src_images == SAMPLE / "images"})
            self.data_said = True
        rows = src.iloc[[i % len(src) for i in range(n)]].copy()
        rows["asset_id"] = [str(1_000_000 + i) for i in range(n)]
        for i, a in enumerate(src["asset_id"].iloc[[i % len(src) for i in range(n)]]):
            link_or_copy(src_images / f"{a}.jpg", out / "images" / f"{1_000_000 + i}.jpg")
        rows.drop(columns=[c for c in ("dr7objid",) if c in rows], errors="ignore").to_csv(out / "cat.csv",
                                                                                          index=False)
        self.gz("shard", "--catalog", out / "cat.csv", "--images", out / "images", "--out", out / "shards",
                "--shard-size", 250 if n > 1000 else 32, "--workers", 8 if not self.dry else 2, "--verify", "header",
                "--val", 0.05, "--test", 0.05)
        return out / "shards"

    # --- steps ---------------------------------------------------------------------------------------------------

    def step1(self) -> None:
        t = time.perf_counter()
        cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rfEs", "-p", "no:cacheprovider", str(ROOT / "tests")]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, env=self.env, cwd=ROOT,
                               timeout=None if self.dry else max(1.0, self.left()))
            out, code, finished = r.stdout, r.returncode, True
        except subprocess.TimeoutExpired as e:  # what ran is still counted
            out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            code, finished = None, False
        lines = out.strip().splitlines()
        tail = lines[-1] if lines else ""
        counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error|deselected)", tail)}
        if not finished:
            counts = {"passed": out.count("."), "failed": out.count("F")}  # the progress dots so far
        failures = [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))]
        skips = [ln for ln in lines if ln.startswith("SKIPPED")]
        # a test that could not even be collected (an import error) is a failure too: pytest counts it as an error
        # and exits 2, which the counts alone did not show
        ok = code == 0 and not counts.get("failed") and not counts.get("error")
        self.emit({"returncode": code, "finished": finished, "ok": ok, **counts, "summary": tail[-300:],
                   "failures": failures[:20], "skips": skips[:20], "seconds": round(time.perf_counter() - t, 1)})
        if not ok and finished:
            raise RuntimeError(f"the GPU tests failed (returncode {code}): {'; '.join(failures[:3]) or tail[-300:]}")

    def step2(self) -> None:
        from gzpipe.bench.loader import LoaderBenchConfig, run
        from gzpipe.loaders import BACKENDS

        n = 64 if self.dry else 6400
        shards = self.real_shards(n)
        size, batch, passes = (64, 16, 1) if self.dry else (224, 256, 3)
        if self.dry:  # nvjpeg's whole path with torchvision's CPU decoder (its tests' switch), then pil
            from dataclasses import replace

            from gzpipe.loaders import nvjpeg

            nvjpeg._DECODE_DEVICE = "cpu"
            BACKENDS["nvjpeg"] = replace(BACKENDS["nvjpeg"], needs_cuda=False, available=lambda: (True, ""))
        for be, workers in ([("nvjpeg", 2), ("pil", 2)] if self.dry else [("nvjpeg", 4), ("pil", 15)]):
            ok, why = BACKENDS[be].available()
            if not ok:
                self.emit({"backend": be, "skipped": why})
                continue
            self.need(25, f"the {be} loader")
            t = time.perf_counter()
            rows = run(LoaderBenchConfig(str(shards), be, size, batch, workers, passes, "train", self.device,
                                         references=(be == "pil" and (self.dry or self.left() > 70))))
            for row in rows:
                self.emit({**row, "seconds": round(time.perf_counter() - t, 1)})

    def step3(self) -> None:
        from gzpipe.models import BACKBONES

        size, batch, steps, repeats = (32, 4, 1, 1) if self.dry else (224, 64, 10, 3)
        shards = self.real_shards(64 if self.dry else 2000)
        # resnet50 first, most valuable first: the headline rate with the real loader; channels-last off; compile
        plan = [("resnet50", True, False, True), ("resnet50", False, False, False), ("resnet50", True, True, False)]
        if self.dry:
            plan = [("resnet50", True, False, True)]
        else:
            plan += [(b, None, False, True) for b in BACKBONES if b != "resnet50"]
        for b, cl, compile_, with_loader in plan:
            self.need(60 if compile_ else 30, f"{b}{' compiled' if compile_ else ''}")
            t = time.perf_counter()
            args = ["bench", "train", "--backbone", b, "--image-size", size, "--batch-size", batch, "--steps", steps,
                    "--warmup", 1 if self.dry else (10 if compile_ else 3), "--repeats", repeats, "--device",
                    self.device, "--workers", 0 if self.dry else 12]
            if cl is not None:
                args.append("--channels-last" if cl else "--no-channels-last")
            if compile_:
                args.append("--compile")
            if with_loader:
                args += ["--shards", shards]  # the real loader beside the device-data ceiling
            try:
                rows = self.json_rows(self.gz(*args))
            except RuntimeError as e:  # one configuration failing keeps the others' figures
                self.emit({"backbone": b, "channels_last": cl, "compile": compile_, "error": str(e)[-500:]})
                continue
            for row in rows:
                self.emit({**row, "seconds": round(time.perf_counter() - t, 1)})

    def step4(self) -> None:
        import numpy as np

        if missing := _missing(["xgboost"]):
            self.emit({"skipped": f"{missing} not importable: bring its wheel (~55 MiB, in a call of its own)"})
        else:
            self._xgboost(np)
        if missing := _missing(["lightgbm"]):
            self.emit({"skipped": f"{missing} not importable: bring its wheel (~4 MiB)"})
        else:
            self._lightgbm(np)

    def _xgboost(self, np) -> None:
        import xgboost as xgb

        from gzpipe.boost.xgb import array_module, encode_labels, objective_for

        rows, width = (2000, 64) if self.dry else (200_000, 2048)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((rows, width), dtype=np.float32)
        w = rng.standard_normal((width, 30)).astype(np.float32) / np.sqrt(width)
        y = encode_labels(1 / (1 + np.exp(-(x @ w))), np.ones((rows, 30), bool))
        # the GPU's figure first, then the same machine's CPU; each strategy on its own, so one failing loses nothing
        plan = [(s, d) for s in ("one_output_per_tree", "multi_output_tree") for d in (["cpu"] if self.dry else
                                                                                      ["cuda", "cpu"])]
        for strategy, device in plan:
            rounds = 2 if self.dry else (10 if device == "cuda" else 3)
            try:
                self.need(25, f"xgboost {strategy} on {device}")
                xp = array_module(device)
                t = time.perf_counter()
                d = xgb.QuantileDMatrix(xp.asarray(x), xp.asarray(y), max_bin=64)
                build = time.perf_counter() - t
                params = {"tree_method": "hist", "device": device, "max_depth": 6, "max_bin": 64,
                          "colsample_bytree": 0.25, "multi_strategy": strategy, "learning_rate": 0.1,
                          "disable_default_eval_metric": True, "base_score": 0.5}
                obj = objective_for("l2", device)
                xgb.train(params, d, num_boost_round=1, obj=obj)  # warm-up (kernels, allocations)
                t = time.perf_counter()
                xgb.train(params, d, num_boost_round=rounds, obj=obj)
                per_round = (time.perf_counter() - t) / rounds
                self.emit({"engine": "xgboost", "rows": rows, "features": width, "targets": 30, "device": device,
                           "multi_strategy": strategy, "seconds_per_round": round(per_round, 3),
                           "matrix_build_s": round(build, 2), "arrays": xp.__name__, "rounds": rounds,
                           "cpus": os.cpu_count()})
            except OutOfTime:
                raise
            except Exception as e:  # noqa: BLE001 - recorded; the other strategy's figures are still measured
                self.emit({"engine": "xgboost", "device": device, "multi_strategy": strategy,
                           "error": f"{type(e).__name__}: {str(e)[-400:]}"})

    def _lightgbm(self, np) -> None:
        import lightgbm as lgb

        rows, width = (2000, 64) if self.dry else (50_000, 2048)
        rng = np.random.default_rng(1)
        x = rng.standard_normal((rows, width), dtype=np.float32)
        y = x[:, :8].sum(1)
        for device in (["cpu"] if self.dry else ["cpu", "gpu"]):
            try:
                self.need(25, f"lightgbm on {device}")
                params = {"objective": "regression_l1", "num_leaves": 31, "max_bin": 32, "feature_fraction": 0.05,
                          "device_type": device, "verbose": -1, "force_col_wise": device == "cpu",
                          "num_threads": os.cpu_count()}
                ds = lgb.Dataset(x, y, params={"max_bin": 32, "verbose": -1}).construct()
                lgb.train(params, ds, 2)
                t = time.perf_counter()
                lgb.train(params, ds, 20)
                self.emit({"engine": "lightgbm", "rows": rows, "features": width, "device": device,
                           "learner": "OpenCL" if device == "gpu" else "CPU",
                           "seconds_per_tree": round((time.perf_counter() - t) / 20, 4)})
            except OutOfTime:
                raise
            except Exception as e:  # noqa: BLE001 - the wheel's OpenCL learner may not run here: say so
                self.emit({"engine": "lightgbm", "device": device, "error": f"{type(e).__name__}: {str(e)[-300:]}"})

    def step5(self) -> None:
        from gzpipe.models import BACKBONES

        shards = self.real_shards(64 if self.dry else 2000)
        size = 32 if self.dry else 224
        art = self.work / "features-art"
        for b in (["resnet50"] if self.dry else list(BACKBONES)):
            self.need(45, f"features of {b}")
            # features need a trained checkpoint: one short epoch (its weights do not change the cost per image)
            self.gz("train", "--backbone", b, "--shards", shards, "--out", art, "--epochs", 1, "--image-size", size,
                    "--batch-size", 8 if self.dry else 64, "--device", self.device, "--workers", 0 if self.dry else 12,
                    "--warmup-epochs", 0, *(["--backend", "pil"] if self.dry else []))
            t = time.perf_counter()
            self.gz("features", "--backbone", b, "--out", art, "--device", self.device, "--batch-size",
                    16 if self.dry else 256, "--workers", 0 if self.dry else 12, "--force")
            seconds = time.perf_counter() - t
            meta = json.loads((art / b / "features/meta.json").read_text())
            images = sum(s["rows"] for s in meta["splits"].values())
            self.emit({"backbone": b, "image_size": size, "images": images, "seconds": round(seconds, 2),
                       "images_per_s": round(images / seconds, 1), "note": "whole command, start-up included"})

    def step6(self) -> None:
        if _missing(["lightgbm"]):
            self.emit({"skipped": "lightgbm not importable: bring its wheel (~4 MiB)"})
            return
        engines = "[lightgbm]" if _missing(["xgboost"]) else "[xgboost, lightgbm]"  # XGBoost's CUDA wheel: too big
        cfg = self.work / "study.yaml"
        if self.dry:
            text = (f"preset: demo\nout: {self.work / 'study'}\ndata: {{synth: {{n: 40, seed: 1}}}}\n"
                    "shard: {resize: 40, shard_size: 10, workers: 2}\n"
                    "train: {image_size: 32, epochs: 1, batch_size: 8, workers: 1, device: cpu, backend: pil}\n"
                    f"boost: {{rounds: 5, early_stopping: 5}}\nbackbones: [resnet50]\nengines: {engines}\n")
        else:
            # boost device auto: XGBoost on the GPU where it came along, LightGBM's CPU learner (its PyPI wheel has no
            # CUDA one: device cuda is refused, as it should be)
            text = (f"preset: demo\nout: {self.work / 'study'}\ndata: {{synth: {{n: 600, seed: 1}}}}\n"
                    "shard: {resize: 80, shard_size: 100, workers: 8}\n"
                    "train: {image_size: 64, epochs: 2, workers: 8, device: cuda}\n"
                    f"boost: {{rounds: 60, early_stopping: 10, device: auto}}\nbackbones: [resnet50, timm:resnet18]\n"
                    f"engines: {engines}\n")
        cfg.write_text(text)
        t = time.perf_counter()
        self.gz("study", "--config", cfg)
        import pandas as pd

        table = pd.read_csv(self.work / "study/model_comparison/comparison_table.csv")
        best = table.sort_values("mae").iloc[0]
        self.emit({"models": len(table), "seconds": round(time.perf_counter() - t, 1), "best": best["name"],
                   "best_test_mae": round(float(best["mae"]), 4), "engines": engines})

    def step7(self) -> None:
        from gzpipe.bench.loader import LoaderBenchConfig, run
        from gzpipe.loaders import BACKENDS

        ok, why = BACKENDS["dali"].available()
        if not ok:
            self.emit({"backend": "dali", "skipped": why})
            return
        shards = self.real_shards(64 if self.dry else 6400)
        size, batch, passes = (64, 16, 1) if self.dry else (224, 256, 3)
        self.need(30, "the dali loader")
        t = time.perf_counter()
        for row in run(LoaderBenchConfig(str(shards), "dali", size, batch, 2 if self.dry else 8, passes, "train",
                                         self.device, references=False)):
            self.emit({**row, "seconds": round(time.perf_counter() - t, 1)})


def link_or_copy(src: Path, dst: Path) -> None:
    """A hard link, or a copy where the two paths are on different file systems (or links are refused)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _missing(modules: list[str]) -> str:
    gone = []
    for m in modules:
        try:
            importlib.import_module(m)
        except Exception:  # noqa: BLE001 - any failure: not usable here
            gone.append(m)
    return ", ".join(gone)


def header(dry: bool) -> dict:
    info = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()}
    for mod in ("torch", "torchvision", "xgboost", "lightgbm", "nvidia.dali", "webdataset", "simplejpeg", "cupy",
                "numpy", "pandas"):
        try:
            info[mod] = getattr(importlib.import_module(mod), "__version__", "installed")
        except Exception as e:  # noqa: BLE001 - a missing library is a line in the header, not a stop
            info[mod] = f"missing ({type(e).__name__})"
    try:
        import torch

        info["cuda"] = torch.cuda.is_available()
        if info["cuda"]:
            info["gpu"] = torch.cuda.get_device_name(0)
            info["cuda_version"] = torch.version.cuda
    except ImportError:
        pass
    smi = shutil.which("nvidia-smi")
    if smi and not dry:
        info["nvidia_smi"] = subprocess.run([smi, "--query-gpu=name,memory.total,driver_version,clocks.max.sm",
                                             "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
    from gzpipe.bench.machine import describe

    info["machine_description"] = describe()
    return info


def figures(results: Path, gpu_name: str = "") -> dict:
    """What was measured beside ../shared/docs/GPU.md's figures to reach (``TARGETS``): the nvjpeg loader's rate at
    224 px, resnet50's training rate (bf16, channels-last, data on the GPU), every backbone's data stall with the
    default loader, XGBoost's GPU speed-up over the CPU. None where a step did not measure it."""
    rows = [json.loads(ln) for ln in results.read_text().splitlines()] if results.exists() else []
    loader = [r["images_per_s"] for r in rows if r.get("step") == 2 and r.get("backend") == "nvjpeg"
              and r.get("images_per_s") and not r.get("dry_run")]
    r50 = [r["images_per_s"] for r in rows if r.get("step") == 3 and r.get("backbone") == "resnet50"
           and r.get("mode") == "device_data" and r.get("channels_last") and not r.get("compile")]
    stall = {r["backbone"]: r["data_stall"] for r in rows if r.get("step") == 3 and r.get("mode") == "loader"}
    xgb = {r["device"]: r["seconds_per_round"] for r in rows if r.get("engine") == "xgboost"
           and r.get("multi_strategy") == "one_output_per_tree" and "seconds_per_round" in r}
    r50_target = TARGETS["resnet50_images_per_s"]["H200" if "H200" in gpu_name else "H100"]
    speedup = round(xgb["cpu"] / xgb["cuda"], 1) if {"cpu", "cuda"} <= set(xgb) else None

    def verdict(value, target, lower_is_better=False):
        if value is None:
            return None
        return value <= target if lower_is_better else value >= target

    return {"loader_images_per_s": max(loader) if loader else None,
            "loader_target": TARGETS["loader_images_per_s"],
            "loader_met": verdict(max(loader) if loader else None, TARGETS["loader_images_per_s"]),
            "resnet50_images_per_s": max(r50) if r50 else None, "resnet50_target": r50_target,
            "resnet50_met": verdict(max(r50) if r50 else None, r50_target),
            "data_stall": stall, "data_stall_target": TARGETS["data_stall"],
            "data_stall_met": {b: v <= TARGETS["data_stall"] for b, v in stall.items()} or None,
            "xgboost_gpu_speedup": speedup, "xgboost_target": TARGETS["xgboost_gpu_speedup"],
            "xgboost_met": verdict(speedup, TARGETS["xgboost_gpu_speedup"]),
            "note": None if speedup is not None else "XGBoost's GPU figure needs its CUDA wheel (~125 MiB), which two "
                                                      "calls of 64 MiB cannot carry: not measured in this window"}


def run_step(out: Path, work: Path, step: int, dry: bool, budget: float) -> int | None:
    """One step in a process of its own (the suite's ``--inner``), killed with everything it started at its budget;
    returns its exit code, or None when it was killed."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--inner", str(step), "--out", str(out), "--work", str(work),
           "--budget", str(budget), *(["--dry-run"] if dry else [])]
    p = subprocess.Popen(cmd, start_new_session=True)
    try:
        return p.wait(timeout=None if dry else budget + 5)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, 9)  # the step and every process it started (gzpipe commands, pytest, loader workers)
        p.wait()
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(os.environ["OUT"]) if os.environ.get("OUT") else None,
                    help="results folder [$OUT, the folder a device call brings back; else artifacts/gpu_suite-TIME]")
    ap.add_argument("--call", type=int, choices=(1, 2), help="one of the window's two planned calls (PLAN)")
    ap.add_argument("--steps", default=None, help="comma list of step numbers, run in the order given [the planned "
                                                  "calls' steps, then 4 and 7 where their libraries are installed]")
    ap.add_argument("--budget", type=float, default=555.0, help="seconds this call may take in all [555: a 10-minute "
                                                                "call less its start]; each step also has its own")
    ap.add_argument("--dry-run", action="store_true", help="every step on the CPU at toy size, no time budgets")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--inner", type=int, help=argparse.SUPPRESS)  # one step, in the process run_step starts
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    out = args.out or ROOT / "artifacts" / f"gpu_suite-{datetime.now():%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    if args.inner is not None:
        return _inner(args, out)
    if args.steps:
        try:
            steps = [int(x) for x in args.steps.split(",") if x.strip()]
        except ValueError:
            steps = [-1]
    elif args.call:
        steps = PLAN["calls"][args.call - 1]["steps"]
    else:
        steps = [s for call in PLAN["calls"] for s in call["steps"]] + [4, 7]
    unknown = [s for s in steps if s not in STEPS or s == 0]
    if unknown:
        print(f"error: unknown step(s) {unknown}; steps are {STEPS}", file=sys.stderr)
        return 2
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("error: no CUDA device here; use --dry-run to check the suite on the CPU", file=sys.stderr)
        return 2
    deadline = time.monotonic() + args.budget
    suite = Suite(out, args.dry_run, deadline)
    info = header(args.dry_run)
    (out / "environment.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps({"environment": info}), flush=True)
    failed = []
    try:
        for s in steps:
            suite.start_step(s)
            left = deadline - time.monotonic()
            if not args.dry_run and left < 20:
                suite.emit({"skipped": f"the call's budget ({args.budget:.0f} s) is spent"})
                continue
            t = time.perf_counter()
            code = run_step(out, suite.work, s, args.dry_run, min(BUDGET_S[s], left))
            if code is None:
                suite.emit({"out_of_time": f"killed at its budget ({min(BUDGET_S[s], left):.0f} s), with every "
                                           "process it started; its rows above are what it measured"})
            elif code != 0:
                failed.append(s)
            print(f"[gpu_suite] step {s} ({STEPS[s]}) took {time.perf_counter() - t:.0f} s", file=sys.stderr,
                  flush=True)
        suite.step = 0
        suite.emit({"figures": figures(suite.results, str(info.get("gpu", "")))})
    finally:
        if not args.keep:
            shutil.rmtree(suite.work, ignore_errors=True)
    print(f"[gpu_suite] results: {suite.results}" + (f"; failed steps: {failed}" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


def _inner(args, out: Path) -> int:
    """One step in this process (started by ``run_step``): its rows appended to the results as they are measured."""
    s = args.inner
    suite = Suite(out, args.dry_run, time.monotonic() + args.budget, args.work)
    suite.start_step(s)
    if missing := _missing([m for m in NEEDS[s] if m not in ("xgboost", "lightgbm", "nvidia.dali")]):
        suite.emit({"skipped": f"{missing} not importable: bring its wheel"})
        return 0
    try:
        getattr(suite, f"step{s}")()
    except OutOfTime as e:
        suite.emit({"out_of_time": str(e)})
    except Exception as e:  # noqa: BLE001 - one failed step is recorded; the window goes on
        suite.emit({"error": f"{type(e).__name__}: {str(e)[-1500:]}"})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
