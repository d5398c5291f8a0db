"""`gzpipe train`: one backbone, start to finish, unattended and resumable.

Run folder ``<out>/<backbone>/``: ``config.json``, ``checkpoints/{latest_checkpoint,previous_checkpoint,
best_model}.pth``, ``metrics.json``, ``training_curves.png``, ``{val,test}_predictions.parquet`` and, written
last, ``training_complete.txt``.

Without flags a finished run is skipped and an unfinished one resumes from its latest checkpoint (model,
optimizer, scheduler, scaler, epoch, step within the epoch, early-stopping state, RNG states), so an interrupted
run ends with the same metrics as an uninterrupted one. ``restart`` starts over; ``skip`` only evaluates the
finished model. SIGINT / SIGTERM stop after the current step with a checkpoint saved.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import signal
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from gzpipe import schema
from gzpipe.errors import GzpipeError
from gzpipe.fileio import atomic_open, remove_stale_tmp, write_json
from gzpipe.loaders import create_loader
from gzpipe.metrics import compute_metrics
from gzpipe.models import BACKBONES, create_model
from gzpipe.models.heads import default_head
from gzpipe.shard import read_manifest
from gzpipe.train import checkpoint as ckpt
from gzpipe.train import distributed as ddp
from gzpipe.train.config import RESUME_KEYS, TrainConfig
from gzpipe.train.loop import EpochState, LogitsModel, evaluate, lr_lambda, train_one_epoch
from gzpipe.train.plots import training_curves

COMPLETE = "training_complete.txt"


class Interrupted(GzpipeError):
    """Stopped by SIGINT / SIGTERM after saving a checkpoint (exit status 130 / 143, as a shell reports them)."""

    def __init__(self, message: str, signal_name: str):
        super().__init__(message)
        self.exit_code = 143 if signal_name == "SIGTERM" else 130


class _StopFlag:
    """SIGINT / SIGTERM set a flag that the loop checks after each step: stopping mid-step could leave the
    optimizer half-applied. A second SIGINT interrupts at once."""

    def __init__(self):
        self.signal: str | None = None
        self._old: dict = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. called from a test runner thread): leave as is
                pass
        return self

    def _handle(self, signum, frame):
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def resolve_device(name: str, d: ddp.Dist) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise GzpipeError("--device cuda asked for, but no CUDA device is usable here; use --device cpu")
        dev = torch.device("cuda", d.local_rank if d.enabled else (torch.device(name).index or 0))
        torch.cuda.set_device(dev)
        return dev
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _log(d: ddp.Dist, msg: str) -> None:
    if d.main:
        print(msg, flush=True)


def run_train(cfg: TrainConfig) -> dict | None:
    """Train (or resume, or skip) one backbone; returns metrics.json's content, or None when the run paused
    (``stop_after``) before finishing."""
    d = ddp.setup("cuda" if cfg.device != "cpu" and torch.cuda.is_available() else "cpu")
    try:
        return _run(cfg, d)
    finally:
        ddp.cleanup(d)


def _run(cfg: TrainConfig, d: ddp.Dist) -> dict | None:
    device = resolve_device(cfg.device, d)
    run_dir, ckpt_dir = cfg.run_dir, cfg.run_dir / "checkpoints"
    manifest = read_manifest(Path(cfg.shards))
    cfg.head = cfg.head or default_head(manifest["target"]["kind"])
    if cfg.channels_last is None:
        cfg.channels_last = BACKBONES[cfg.backbone].channels_last(device.type)
    if d.main:
        remove_stale_tmp(run_dir, recursive=True)
    if cfg.mode == "skip":
        return _finish(cfg, d, device, history=None, skip=True)
    if cfg.mode == "resume" and (run_dir / COMPLETE).exists():
        saved = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").exists() else {}
        diff = [f"{k} {saved.get(k)!r} -> {cfg.to_dict().get(k)!r}" for k in RESUME_KEYS
                if k in saved and saved.get(k) != cfg.to_dict().get(k)]
        _log(d, f"{cfg.backbone}: already trained ({run_dir / COMPLETE}); skipping"
                + (f", although these settings differ from that run: {'; '.join(diff)}" if diff else "")
                + ". --restart trains again, --skip re-evaluates.")
        return json.loads((run_dir / "metrics.json").read_text())
    if cfg.mode == "restart" and d.main:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        (run_dir / COMPLETE).unlink(missing_ok=True)
    ddp.barrier(d)

    seed_everything(cfg.seed)
    model = create_model(cfg.backbone, cfg.head, cfg.weights, cfg.pretrained)
    net = LogitsModel(model).to(device)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    train_loader = create_loader(cfg.shards, "train", cfg.backend, cfg.image_size, cfg.batch_size, train=True,
                                 device=device, workers=cfg.workers, seed=cfg.seed, shuffle_buffer=cfg.shuffle_buffer,
                                 rank=d.rank, world_size=d.world)
    val_loader = create_loader(cfg.shards, "val", cfg.backend, cfg.image_size, cfg.eval_batch_size or 2 * cfg.batch_size,
                               train=False, device=device, workers=cfg.workers, seed=cfg.seed, rank=d.rank,
                               world_size=d.world)
    steps = ddp.min_int(d, len(train_loader))
    if steps == 0:
        raise GzpipeError(f"the train split has {train_loader.samples} samples per rank, fewer than --batch-size "
                          f"{cfg.batch_size}; use a smaller batch")
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(max(1, round(cfg.warmup_epochs * steps)), cfg.epochs * steps))
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" and cfg.amp == "fp16" else None

    epoch, history, wall = 0, [], 0.0
    early = {"best": math.inf, "best_epoch": None, "bad_epochs": 0}
    es = EpochState()
    state = ckpt.load_latest(ckpt_dir) if cfg.mode == "resume" else None
    if state is not None:
        _check_compatible(state["config"], cfg)
        net.model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        epoch, history, early, wall = state["epoch"], state["history"], state["early"], state["wall_time"]
        es = EpochState(**state["epoch_state"])
        _restore_rng(state["rng"], device)
        _log(d, f"{cfg.backbone}: resuming at epoch {epoch + 1}" + (f", batch {es.batches_done + 1}" if es.batches_done else ""))
    if cfg.compile:
        net = torch.compile(net)
    if d.enabled:
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if d.main:
        write_json(run_dir / "config.json", cfg.to_dict())

    def full_state(es_now: EpochState) -> dict:
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler else None, "epoch": epoch, "epoch_state": asdict(es_now),
                "early": early, "history": history, "rng": _rng_state(device), "config": cfg.to_dict(),
                "wall_time": wall + time.perf_counter() - t_start}

    def save_latest(es_now: EpochState) -> None:
        if d.main:
            ckpt.save_latest(ckpt_dir, full_state(es_now))
        ddp.barrier(d)

    t_start = time.perf_counter()
    ran = 0
    with _StopFlag() as stop:
        while epoch < cfg.epochs and early["bad_epochs"] < cfg.patience:
            es = train_one_epoch(net, train_loader, optimizer, scheduler, scaler, device, cfg.amp, cfg, epoch, steps,
                                 es, save_latest, stop)
            if stop.signal:
                save_latest(es)
                raise Interrupted(f"stopped by {stop.signal} at epoch {epoch + 1}, batch {es.batches_done}; "
                                  f"checkpoint saved in {ckpt_dir}; re-run the same command to resume", stop.signal)
            loss_sum, count, samples, secs = ddp.sum_floats(d, es.loss_sum, es.count, es.samples, es.seconds)
            val = evaluate(net, val_loader, device, cfg.amp, cfg.loss, ddp.gather_eval(d), stop)
            if val is None:  # stopped while validating: the epoch's training is saved, its validation re-runs
                save_latest(es)
                raise Interrupted(f"stopped by {stop.signal} while validating epoch {epoch + 1}; checkpoint saved in "
                                  f"{ckpt_dir}; re-run the same command to resume", stop.signal)
            vm = compute_metrics(val.pred, val.target, val.mask)
            epoch += 1
            improved = val.loss < early["best"] - cfg.min_delta
            if improved:
                early.update(best=val.loss, best_epoch=epoch, bad_epochs=0)
                if d.main:
                    ckpt.save(ckpt_dir / ckpt.BEST, {"model": model.state_dict(), "config": cfg.to_dict(),
                                                     "epoch": epoch, "val_loss": val.loss})
            else:
                early["bad_epochs"] += 1
            history.append({"epoch": epoch, "train_loss": loss_sum / max(count, 1), "val_loss": val.loss,
                            "val_mae": vm["mae"], "val_accuracy": vm["accuracy"], "lr": scheduler.get_last_lr()[0],
                            "images_per_s": samples / max(secs / d.world, 1e-9), "seconds": secs / d.world})
            es = EpochState()
            save_latest(es)
            h = history[-1]
            _log(d, f"{cfg.backbone} epoch {epoch}/{cfg.epochs}  train {h['train_loss']:.5f}  val {val.loss:.5f}  "
                    f"val MAE {vm['mae']:.4f}  lr {h['lr']:.2e}  {h['images_per_s']:.1f} img/s  {h['seconds']:.1f}s"
                    + ("  *best*" if improved else f"  (no improvement {early['bad_epochs']}/{cfg.patience})"))
            ran += 1
            if cfg.stop_after and ran >= cfg.stop_after and epoch < cfg.epochs and early["bad_epochs"] < cfg.patience:
                _log(d, f"{cfg.backbone}: paused after {ran} epoch(s) (--stop-after); re-run to continue")
                return None
    if early["bad_epochs"] >= cfg.patience:
        _log(d, f"{cfg.backbone}: early stop after epoch {epoch} (best epoch {early['best_epoch']})")
    return _finish(cfg, d, device, history, skip=False, wall=wall + time.perf_counter() - t_start)


def _check_compatible(saved: dict, cfg: TrainConfig) -> None:
    now = cfg.to_dict()
    diff = [f"{k}: checkpoint {saved.get(k)!r}, now {now.get(k)!r}" for k in RESUME_KEYS if saved.get(k) != now.get(k)]
    if diff:
        raise GzpipeError(f"{cfg.run_dir} holds a run with other settings ({'; '.join(diff)}); use the same "
                          "options to resume it, or --restart to start over")


def _rng_state(device: torch.device) -> dict:
    return {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def _restore_rng(s: dict, device: torch.device) -> None:
    torch.set_rng_state(s["torch"])
    random.setstate((3, tuple(s["python"]), None))
    if s.get("cuda") is not None and device.type == "cuda":
        torch.cuda.set_rng_state(s["cuda"], device)


def _finish(cfg: TrainConfig, d: ddp.Dist, device: torch.device, history: list | None, skip: bool,
            wall: float = 0.0) -> dict:
    """Evaluate the best model on val and test; write metrics, predictions, curves, then the completion mark."""
    run_dir, ckpt_dir = cfg.run_dir, cfg.run_dir / "checkpoints"
    best_path = ckpt_dir / ckpt.BEST
    if not best_path.exists():
        raise GzpipeError(f"no finished model at {best_path}" + ("; train it first (without --skip)" if skip else ""))
    best = ckpt.load(best_path, map_location="cpu")
    model = create_model(cfg.backbone, best["config"]["head"])
    model.load_state_dict(best["model"])
    net = LogitsModel(model).to(device)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    if history is None:
        latest = ckpt.load_latest(ckpt_dir)
        history = latest["history"] if latest else []
        prev = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").exists() else {}
        wall = prev.get("wall_time_s", 0.0)
    results = {}
    for split in ("val", "test"):
        loader = create_loader(cfg.shards, split, cfg.backend, cfg.image_size, cfg.eval_batch_size or 2 * cfg.batch_size,
                               train=False, device=device, workers=cfg.workers, seed=cfg.seed, rank=d.rank,
                               world_size=d.world)
        r = evaluate(net, loader, device, cfg.amp, best["config"].get("loss", "mse"), ddp.gather_eval(d))
        results[split] = r
    if not d.main:
        return {}
    samples = sum(h["images_per_s"] * h["seconds"] for h in history)
    secs = sum(h["seconds"] for h in history)
    metrics = {
        "backbone": cfg.backbone,
        "val": {"loss": results["val"].loss, **compute_metrics(results["val"].pred, results["val"].target, results["val"].mask)},
        "test": {"loss": results["test"].loss, **compute_metrics(results["test"].pred, results["test"].target, results["test"].mask)},
        "epochs_run": len(history),
        "best_epoch": best["epoch"],
        "stopped_early": bool(history) and len(history) < cfg.epochs,
        "wall_time_s": wall,
        "images_per_s": samples / secs if secs else None,
        "device": str(device),
        "history": history,
    }
    for split, r in results.items():
        df = pd.DataFrame(r.pred, columns=list(schema.TARGET_NAMES))
        df.insert(0, "id", r.ids)
        with atomic_open(run_dir / f"{split}_predictions.parquet", "wb") as f:
            df.to_parquet(f, index=False)
    write_json(run_dir / "metrics.json", metrics)
    if history:
        training_curves(history, best["epoch"], f"{cfg.backbone} on {Path(cfg.shards).name}", run_dir / "training_curves.png")
    with atomic_open(run_dir / COMPLETE, "w") as f:
        f.write(f"{cfg.backbone}: best epoch {best['epoch']} of {len(history)}; test MAE {metrics['test']['mae']:.5f}, "
                f"accuracy {metrics['test']['accuracy']:.4f}\n")
    print(f"{cfg.backbone}: test MAE {metrics['test']['mae']:.4f}  MSE {metrics['test']['mse']:.5f}  "
          f"accuracy {metrics['test']['accuracy']:.4f}  -> {run_dir}", flush=True)
    return metrics
