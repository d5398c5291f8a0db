"""The GPU suite in one run (see ../shared/docs/GPU.md; the shell entry point is benchmarks/gpu_suite.sh).

    python benchmarks/gpu_suite.py [--out DIR] [--steps 1,2,...] [--dry-run] [--quick]

Steps, each timed, each result appended as one JSON line to OUT/gpu_results.jsonl:
  1  pytest -m gpu: the GPU tests, one per GPU code path
  2  loaders: the real 424 px JPEGs (the sample repeated to --loader-images) to 224 px with train augmentation:
     nvjpeg, dali (when it imports) and pil with --pil-workers workers; images/s, medians of passes
  3  train: `gzpipe bench train` per backbone at 224 px, bf16, channels-last on and off, compile on and off (data on
     the device), then with the default loader (data-stall share)
  4  features: images/s of `gzpipe features` per backbone
  5  XGBoost: seconds per round on a --xgb-rows x 2048 table with 30 targets, device cuda, both multi-output
     strategies, beside the CPU of the same machine
  6  study: a small end-to-end `gzpipe study` on the GPU (all 18 models)
--dry-run runs every step on the CPU at toy size (CI runs it), so the suite is known to work before a GPU sees it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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

STEPS = {1: "gpu tests", 2: "loaders", 3: "train", 4: "features", 5: "xgboost", 6: "study"}


class Suite:
    def __init__(self, out: Path, dry: bool, quick: bool):
        self.out, self.dry, self.quick = out, dry, quick
        self.results = out / "gpu_results.jsonl"
        self.device = "cpu" if dry else "cuda"
        self.work = Path(tempfile.mkdtemp(prefix="gzpipe-gpu-suite-"))
        self.env = {**os.environ, "GZPIPE_PROGRESS": "0", "PYTHONPATH": os.pathsep.join(
            [str(ROOT), *([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])])}

    def emit(self, step: int, row: dict) -> None:
        row = {"step": step, "name": STEPS[step], "dry_run": self.dry, "time": datetime.now(timezone.utc).isoformat(
            timespec="seconds"), **row}
        with open(self.results, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)

    def gz(self, *args, timeout: float = 1800) -> subprocess.CompletedProcess:
        r = subprocess.run([sys.executable, "-m", "gzpipe", *map(str, args)], capture_output=True, text=True,
                           env=self.env, cwd=ROOT, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"gzpipe {' '.join(map(str, args))} failed ({r.returncode}): {r.stderr[-2000:]}")
        return r

    def json_rows(self, r: subprocess.CompletedProcess) -> list[dict]:
        return [json.loads(ln) for ln in r.stdout.splitlines() if ln.startswith("{")]

    # --- data ----------------------------------------------------------------------------------------------------

    def real_shards(self, n: int) -> Path:
        """The real sample's 424 px JPEGs, repeated to ``n`` galaxies (hard links, new ids), sharded as stored."""
        out = self.work / f"real-{n}"
        if (out / "shards/manifest.json").exists():
            return out / "shards"
        import pandas as pd

        (out / "images").mkdir(parents=True)
        if (SAMPLE / "labels_manifest_800.csv").exists():
            src = pd.read_csv(SAMPLE / "labels_manifest_800.csv", dtype={"asset_id": str})
            src_images = SAMPLE / "images"
        else:  # no ../shared here: a synthetic release stands in
            from gzpipe.synth import SynthConfig, synth

            synth(SynthConfig(out=self.work / "synth", n=min(n, 200), seed=0, workers=2))
            src = pd.read_csv(self.work / "synth/gz2_hart16.csv", dtype={"dr7objid": str})
            src["asset_id"] = pd.read_csv(self.work / "synth/gz2_filename_mapping.csv", dtype=str)["asset_id"]
            src_images = self.work / "synth/images"
        rows = src.iloc[[i % len(src) for i in range(n)]].copy()
        rows["asset_id"] = [str(1_000_000 + i) for i in range(n)]
        for i, a in enumerate(src["asset_id"].iloc[[i % len(src) for i in range(n)]]):
            os.link(src_images / f"{a}.jpg", out / "images" / f"{1_000_000 + i}.jpg")
        rows.drop(columns=[c for c in ("dr7objid",) if c in rows], errors="ignore").to_csv(out / "cat.csv",
                                                                                          index=False)
        self.gz("shard", "--catalog", out / "cat.csv", "--images", out / "images", "--out", out / "shards",
                "--shard-size", 250 if n > 1000 else 32, "--workers", 4 if not self.dry else 2, "--verify", "header",
                "--val", 0.05, "--test", 0.05)
        return out / "shards"

    # --- steps ---------------------------------------------------------------------------------------------------

    def step1(self) -> None:
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
                            str(ROOT / "tests")], capture_output=True, text=True, env=self.env, cwd=ROOT, timeout=3000)
        tail = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-300:]
        counts = {k: int(v) for v, k in __import__("re").findall(r"(\d+) (passed|failed|skipped|error|deselected)",
                                                                   tail)}
        failures = [ln for ln in r.stdout.splitlines() if ln.startswith(("FAILED", "ERROR"))]
        self.emit(1, {"returncode": r.returncode, **counts, "summary": tail, "failures": failures[:20],
                      "seconds": round(time.perf_counter() - t, 1)})

    def step2(self) -> None:
        from gzpipe.bench.loader import LoaderBenchConfig, run
        from gzpipe.loaders import BACKENDS

        n = 64 if self.dry else (2000 if self.quick else 6400)
        shards = self.real_shards(n)
        size, batch, passes = (64, 16, 1) if self.dry else (224, 256, 3)
        backends = ["pil", "dali"] if self.dry else ["nvjpeg", "dali", "pil"]
        for be in backends:
            ok, why = BACKENDS[be].available() if be in BACKENDS else (False, "not registered")
            if not ok:
                self.emit(2, {"backend": be, "skipped": why})
                continue
            workers = 2 if self.dry else (16 if be == "pil" else 4)
            t = time.perf_counter()
            rows = run(LoaderBenchConfig(str(shards), be, size, batch, workers, passes, "train", self.device,
                                         references=(be == "pil")))
            for row in rows:
                self.emit(2, {**row, "seconds": round(time.perf_counter() - t, 1)})

    def step3(self) -> None:
        from gzpipe.models import BACKBONES

        size, batch, steps, repeats = (32, 4, 1, 1) if self.dry else (224, 64, 10, 3)
        backbones = ["resnet50"] if self.dry else list(BACKBONES)
        shards = self.real_shards(64 if self.dry else 2000)
        for b in backbones:
            for cl in (("--channels-last",) if self.dry else ("--channels-last", "--no-channels-last")):
                for compile_ in ((False,) if self.dry else (False, True)):
                    if self.quick and compile_ and b != "resnet50":
                        continue
                    t = time.perf_counter()
                    args = ["bench", "train", "--backbone", b, "--image-size", size, "--batch-size", batch, "--steps",
                            steps, "--warmup", 1 if self.dry else (10 if compile_ else 3), "--repeats", repeats,
                            "--device", self.device, cl, "--workers", 0 if self.dry else 12]
                    if compile_:
                        args.append("--compile")
                    if cl == "--channels-last" and not compile_:
                        args += ["--shards", shards]  # the real loader beside the device-data ceiling
                    try:
                        rows = self.json_rows(self.gz(*args))
                    except RuntimeError as e:
                        self.emit(3, {"backbone": b, "channels_last": cl == "--channels-last", "compile": compile_,
                                      "error": str(e)[-500:]})
                        continue
                    for row in rows:
                        self.emit(3, {**row, "compile": compile_, "seconds": round(time.perf_counter() - t, 1)})

    def step4(self) -> None:
        from gzpipe.models import BACKBONES

        shards = self.real_shards(64 if self.dry else 2000)
        size = 32 if self.dry else 224
        backbones = ["resnet50"] if self.dry else list(BACKBONES)
        art = self.work / "features-art"
        for b in backbones:
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
            self.emit(4, {"backbone": b, "image_size": size, "images": images, "seconds": round(seconds, 2),
                          "images_per_s": round(images / seconds, 1), "note": "whole command, start-up included"})

    def step5(self) -> None:
        import numpy as np
        import xgboost as xgb

        from gzpipe.boost.xgb import masked_objective

        rows, width = (2000, 64) if self.dry else (200_000 if not self.quick else 50_000, 2048)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((rows, width), dtype=np.float32)
        w = rng.standard_normal((width, 30)).astype(np.float32) / np.sqrt(width)
        y = 1 / (1 + np.exp(-(x @ w)))
        devices = ["cpu"] if self.dry else ["cuda", "cpu"]
        for strategy in ("one_output_per_tree", "multi_output_tree"):
            for device in devices:
                rounds = 2 if self.dry else (10 if device == "cuda" else 3)
                t = time.perf_counter()
                d = xgb.QuantileDMatrix(x, y.astype(np.float32), max_bin=64)
                build = time.perf_counter() - t
                params = {"tree_method": "hist", "device": device, "max_depth": 6, "max_bin": 64,
                          "colsample_bytree": 0.25, "multi_strategy": strategy, "learning_rate": 0.1,
                          "disable_default_eval_metric": True, "base_score": 0.5}
                xgb.train(params, d, num_boost_round=1, obj=masked_objective)  # warm-up (kernels, allocations)
                t = time.perf_counter()
                xgb.train(params, d, num_boost_round=rounds, obj=masked_objective)
                per_round = (time.perf_counter() - t) / rounds
                self.emit(5, {"rows": rows, "features": width, "targets": 30, "device": device,
                              "multi_strategy": strategy, "seconds_per_round": round(per_round, 3),
                              "matrix_build_s": round(build, 2), "rounds": rounds, "cpus": os.cpu_count()})

    def step6(self) -> None:
        cfg = self.work / "study.yaml"
        if self.dry:
            text = (f"preset: demo\nout: {self.work / 'study'}\ndata: {{synth: {{n: 40, seed: 1}}}}\n"
                    "shard: {resize: 40, shard_size: 10, workers: 2}\n"
                    "train: {image_size: 32, epochs: 1, batch_size: 8, workers: 1, device: cpu, backend: pil}\n"
                    "boost: {rounds: 5, early_stopping: 5}\nbackbones: [resnet50]\n")
        else:
            text = (f"preset: demo\nout: {self.work / 'study'}\ndata: {{synth: {{n: 2000, seed: 1}}}}\n"
                    "shard: {resize: 128, shard_size: 100, workers: 8}\n"
                    "train: {image_size: 112, epochs: 3, batch_size: 64, workers: 8, device: cuda}\n"
                    "boost: {rounds: 100, early_stopping: 10, device: cuda}\n")
        cfg.write_text(text)
        t = time.perf_counter()
        self.gz("study", "--config", cfg, timeout=3000)
        import pandas as pd

        table = pd.read_csv(self.work / "study/model_comparison/comparison_table.csv")
        best = table.sort_values("mae").iloc[0]
        self.emit(6, {"models": len(table), "seconds": round(time.perf_counter() - t, 1), "best": best["name"],
                      "best_test_mae": round(float(best["mae"]), 4)})


def header(out: Path, dry: bool) -> dict:
    import importlib

    info = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()}
    for mod in ("torch", "torchvision", "xgboost", "lightgbm", "nvidia.dali", "webdataset", "numpy", "pandas"):
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None, help="results folder [artifacts/gpu_suite-<time>]")
    ap.add_argument("--steps", default="1,2,3,4,5,6", help="comma list of step numbers [all]")
    ap.add_argument("--dry-run", action="store_true", help="every step on the CPU at toy size")
    ap.add_argument("--quick", action="store_true", help="fewer images, compile for resnet50 only, a smaller "
                                                         "XGBoost table (a short GPU window)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args(argv)
    out = args.out or ROOT / "artifacts" / f"gpu_suite-{datetime.now():%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    steps = [int(s) for s in args.steps.split(",") if s.strip()]
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        print(f"error: unknown step(s) {unknown}; steps are {STEPS}", file=sys.stderr)
        return 2
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("error: no CUDA device here; use --dry-run to check the suite on the CPU", file=sys.stderr)
        return 2
    suite = Suite(out, args.dry_run, args.quick)
    info = header(out, args.dry_run)
    (out / "environment.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps({"environment": info}), flush=True)
    failed = []
    try:
        for s in steps:
            t = time.perf_counter()
            try:
                getattr(suite, f"step{s}")()
            except Exception as e:  # noqa: BLE001 - one failed step is recorded; the window goes on
                suite.emit(s, {"error": f"{type(e).__name__}: {str(e)[-1500:]}"})
                failed.append(s)
            print(f"[gpu_suite] step {s} ({STEPS[s]}) took {time.perf_counter() - t:.0f} s", file=sys.stderr,
                  flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(suite.work, ignore_errors=True)
    print(f"[gpu_suite] results: {suite.results}" + (f"; failed steps: {failed}" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
