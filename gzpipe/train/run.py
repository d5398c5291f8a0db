"""`gzpipe train`: one backbone, start to finish, unattended and resumable.

Run folder ``<out>/<backbone>/``: ``config.json``, ``checkpoints/{latest_checkpoint,previous_checkpoint,
best_model}.pth``, ``metrics.json``, ``training_curves.png``, ``{val,test}_predictions.parquet`` and, written
last, ``training_complete.txt``.

Re-runs follow ``gzpipe.rerun``: without flags a finished run is skipped (or kept, with the differences listed)
and an unfinished one resumes from its latest checkpoint (model, optimizer, scheduler, scaler, epoch, step within
the epoch, early-stopping state, RNG states), so an interrupted run ends with the same metrics as an uninterrupted
one. ``restart`` trains a new run beside the existing one (``fileio.staging_dir``) and swaps it in when complete;
the same ``restart`` command continues an interrupted one. ``skip`` only evaluates the finished model.
SIGINT / SIGTERM stop after the current step with a checkpoint saved.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch

from gzpipe import rerun, runs
from gzpipe.device import resolve_device
from gzpipe.errors import GzpipeError
from gzpipe.fileio import finish_swap, remove_stale_tmp, staging_dir, swap_in, write_json
from gzpipe.loaders import create_loader
from gzpipe.loaders.tta import ViewLoader
from gzpipe.labels import blank_untrained, tasks_with_labels
from gzpipe.manifest import MANIFEST, read_manifest
from gzpipe.metrics import compute_metrics
from gzpipe.models import BACKBONES, create_model
from gzpipe.models.heads import default_head
from gzpipe.stopping import STOP, Stopped, handling_stops
from gzpipe.train import checkpoint as ckpt
from gzpipe.train import distributed as ddp
from gzpipe.train.config import RESUME_KEYS, TrainConfig, saved_value, warn_short_run, warn_upsampled_crop
from gzpipe.train.loop import EpochState, LogitsModel, evaluate, lr_lambda, train_one_epoch
from gzpipe.train.plots import training_curves
from gzpipe.train.setup import (catalogue_heads, ema_update, restore_rng, rng_state, seed_everything, selection,
                                weights_inputs, wrap)


def _log(d: ddp.Dist, msg: str) -> None:
    if d.main:
        print(msg, flush=True)


def _settings_line(cfg: TrainConfig, loader, device, world: int) -> str:
    """What this run resolved to, in one line: defaults come from several places (the study, the backbone, whether
    weights are loaded), so say which values were picked."""
    start = (f"from {cfg.weights}" if cfg.weights else "from the published weights" if cfg.pretrained
             else "from random initialisation")
    if cfg.device_defaults:
        start += f" (the GPU's defaults: {', '.join(f'{k} {v:g}' for k, v in cfg.device_defaults.items())})"
    ranks = f" a rank, {world} ranks" if world > 1 else ""
    extras = "".join(f", {name} {value:g}" for name, value in
                     (("drop path", cfg.drop_path), ("EMA decay", cfg.ema_decay)) if value)
    return (f"{cfg.backbone}: {cfg.epochs} epochs over {loader.samples:,} train galaxies{ranks} at {cfg.image_size} px "
            f"(crop {cfg.crop:g}), batch {cfg.batch_size}, lr {cfg.lr:g} {start}, {cfg.loss} loss, {cfg.head} head"
            f"{extras}, {loader.backend} loader on {device}")


def run_train(cfg: TrainConfig, restart_hint: str = "--restart") -> dict | None:
    """Train (or resume, or skip) one backbone; returns metrics.json's content, or None when the run paused
    (``stop_after``) before finishing. SIGINT / SIGTERM stop it after the current step, with a checkpoint.
    ``restart_hint`` is how the caller's user starts a finished run over (named in the skip message)."""
    d = ddp.setup("cuda" if cfg.device != "cpu" and torch.cuda.is_available() else "cpu")
    try:
        with handling_stops():
            return _run(cfg, d, restart_hint)
    except Exception as e:  # a crash (not a stop, not a refused option): the run folder says so, for predict and a retry
        folder = staging_dir(cfg.run_dir) if cfg.mode == "restart" else cfg.run_dir
        if d.main and not isinstance(e, GzpipeError) and (folder / runs.CONFIG).exists() \
                and not runs.is_complete(folder, runs.BACKBONE):
            runs.record_failure(folder, e)
        raise
    finally:
        ddp.cleanup(d)


def _run(cfg: TrainConfig, d: ddp.Dist, restart_hint: str) -> dict | None:
    device = resolve_device(cfg.device, d.local_rank if d.enabled else None)
    final = cfg.run_dir
    staged = staging_dir(final)
    manifest = read_manifest(Path(cfg.shards))
    cfg.head = cfg.head or default_head(manifest["target"]["kind"])
    if cfg.catalogue_heads and cfg.heads is None:
        cfg.heads = catalogue_heads(cfg.shards)
    if cfg.channels_last is None:
        cfg.channels_last = BACKBONES[cfg.backbone].channels_last(device.type)
    if device.type == "cuda":  # fixed input sizes: let cuDNN pick the fastest convolution algorithms once
        torch.backends.cudnn.benchmark = True
    if d.main:
        finish_swap(final)
        remove_stale_tmp(final, recursive=True)
        remove_stale_tmp(staged, recursive=True)
    ddp.barrier(d)
    if cfg.mode == "skip":
        return _skip(cfg, d, device)
    if cfg.mode == "resume" and runs.is_complete(final, runs.BACKBONE):
        return _already_finished(cfg, d, restart_hint)
    # --restart builds the new run beside the existing one and swaps it in when it is complete (rerun.py)
    run_dir = staged if cfg.mode == "restart" else final
    ckpt_dir = run_dir / runs.CHECKPOINTS
    if d.main:
        warn_short_run(cfg)
        warn_upsampled_crop(cfg, manifest)

    # Everything that can refuse an option (the --weights file, the backend on this device, the batch against the
    # data) runs before any file of an existing run is touched.
    seed_everything(cfg.seed)
    channels = cfg.channels or 3
    model = create_model(cfg.backbone, cfg.head, cfg.weights, cfg.pretrained,
                         zero_init_residual=cfg.zero_init_residual, channels=channels, heads=cfg.heads,
                         drop_path=cfg.drop_path)
    # what the run is built from, digested now: a weights folder's files too (a link into a hub cache is read through)
    inputs = runs.input_record({runs.SHARDS_INPUT: Path(cfg.shards) / MANIFEST, **weights_inputs(cfg.weights)},
                               final)
    net = LogitsModel(model, cfg.channels_last).to(device)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    train_loader = create_loader(cfg.shards, "train", cfg.backend, cfg.image_size, cfg.batch_size, train=True,
                                 device=device, workers=cfg.workers, seed=cfg.seed, shuffle_buffer=cfg.shuffle_buffer,
                                 rank=d.rank, world_size=d.world, crop=cfg.crop, channels=channels)
    val_loader = create_loader(cfg.shards, "val", cfg.backend, cfg.image_size, cfg.eval_batch_size or 2 * cfg.batch_size,
                               train=False, device=device, workers=cfg.workers, seed=cfg.seed, rank=d.rank,
                               world_size=d.world, crop=cfg.crop, channels=channels)
    steps = ddp.min_int(d, len(train_loader))
    if steps == 0:
        raise GzpipeError(f"the train split has {train_loader.samples} samples per rank, fewer than --batch-size "
                          f"{cfg.batch_size}; use a smaller batch")
    # fused AdamW on CUDA: one kernel for every parameter's update instead of a few per tensor
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                  fused=device.type == "cuda")
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(max(1, round(cfg.warmup_epochs * steps)), cfg.epochs * steps))
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" and cfg.amp == "fp16" else None
    ema = None
    if cfg.ema_decay:  # validated, checkpointed and saved as the best model instead of the raw weights
        from torch.optim.swa_utils import AveragedModel

        ema = AveragedModel(net.model, multi_avg_fn=ema_update(cfg.ema_decay), use_buffers=True)

    epoch, history, wall = 0, [], 0.0
    early = {"best": math.inf, "best_epoch": None, "bad_epochs": 0}
    es = EpochState()
    if cfg.mode == "restart":
        state = _staged_state(cfg, staged) if d.main else None
        ddp.barrier(d)  # the main process has kept or removed the staging folder
        if not d.main:
            state = ckpt.load_latest(ckpt_dir)
        if d.main:
            _log(d, rerun.replacing_line(cfg.backbone, staged, final) if runs.is_complete(final, runs.BACKBONE) else
                 f"{cfg.backbone}: training in {staged}; it becomes {final} when complete"
                 + (" (the unfinished run there stays until then)" if final.exists() else ""))
    else:
        state = ckpt.load_latest(ckpt_dir)
        if state is not None:
            _check_compatible(state["config"], cfg, run_dir)
            changed = runs.changed_data(run_dir)
            if changed:
                raise GzpipeError(runs.stale_message(run_dir, changed, "resuming would mix two data sets; --restart "
                                                     "starts over on the current data"))
        if d.main and staged.exists():
            _log(d, f"{cfg.backbone}: note: an interrupted --restart of this run is in {staged}; the same command "
                    "with --restart continues it")
    if state is not None:
        net.model.load_state_dict(state["model"])
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        epoch, history, early, wall = state["epoch"], state["history"], state["early"], state["wall_time"]
        es = EpochState(**state["epoch_state"])
        restore_rng(state["rng"], device)
        at = f"epoch {epoch + 1}" + (f", batch {es.batches_done + 1}" if es.batches_done else "")
        _log(d, rerun.resuming_line(cfg.backbone + (" (the --restart)" if run_dir == staged else ""),
                                    f"at {at}: {epoch} of {cfg.epochs} epochs"
                                    + (f" and {es.batches_done} batches" if es.batches_done else "") + " reused"))
        if train_loader.backend == "dali":
            _log(d, f"{cfg.backbone}: note: the dali loader keeps its own shuffle state, so the resumed epochs see the "
                    "galaxies in another order than an uninterrupted run (the pil and nvjpeg loaders resume exactly)")
    net = wrap(net, d.enabled, device, cfg.compile)
    if d.main:
        _log(d, _settings_line(cfg, train_loader, device, d.world))
        failed = runs.failure_of(run_dir)
        if failed:
            _log(d, f"{cfg.backbone}: note: its last attempt crashed ({failed['error']})"
                    + ("" if failed.get("checkpoint") else " before its first checkpoint") + "; trying again")
            (run_dir / runs.FAILED).unlink(missing_ok=True)
        write_json(run_dir / runs.CONFIG, cfg.to_dict())
        write_json(run_dir / runs.INPUTS, inputs)

    def full_state(es_now: EpochState) -> dict:
        return {"model": model.state_dict(), "ema": ema.state_dict() if ema is not None else None,
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler else None, "epoch": epoch, "epoch_state": asdict(es_now),
                "early": early, "history": history, "rng": rng_state(device), "config": cfg.to_dict(),
                "wall_time": wall + time.perf_counter() - t_start}

    kept = f" (the finished run in {final} is unchanged)" if run_dir == staged and runs.is_complete(final, runs.BACKBONE) \
        else ""

    def save_latest(es_now: EpochState) -> None:
        if d.main:
            ckpt.save_latest(ckpt_dir, full_state(es_now))
        ddp.barrier(d)

    score_of = selection(cfg)
    agree = ddp.agreement(d)  # under torchrun: one stop and one checkpoint decision for all ranks
    t_start = time.perf_counter()
    ran = 0
    while epoch < cfg.epochs and early["bad_epochs"] < cfg.patience:
        es = train_one_epoch(net, train_loader, optimizer, scheduler, scaler, device, cfg.amp, cfg, epoch, steps,
                             es, save_latest, on_step=(lambda: ema.update_parameters(model)) if ema is not None
                             else None, agree=agree)
        # One decision of all ranks here too: a signal that reaches one rank after the epoch's last agreed step would
        # send it to the stop checkpoint's barrier while the others run the loss all-reduce below (a hang)
        if agree(False)[0] if agree is not None else STOP:
            save_latest(es)
            raise Stopped(STOP.signal, f"stopped by {STOP.signal} at epoch {epoch + 1}, batch {es.batches_done}; "
                                       f"checkpoint saved in {ckpt_dir}{kept}; re-run the same command to resume")
        loss_sum, count, samples, secs = ddp.sum_floats(d, es.loss_sum, es.count, es.samples, es.seconds)
        val = evaluate(net if ema is None else LogitsModel(ema.module, cfg.channels_last), val_loader, device,
                       cfg.amp, cfg.loss, ddp.gather_eval(d), agree=agree)
        if val is None:  # stopped while validating: the epoch's training is saved, its validation re-runs
            save_latest(es)
            raise Stopped(STOP.signal, f"stopped by {STOP.signal} while validating epoch {epoch + 1}; checkpoint "
                                       f"saved in {ckpt_dir}{kept}; re-run the same command to resume")
        vm = compute_metrics(val.pred, val.target, val.mask)
        epoch += 1
        score = score_of(val)
        improved = score < early["best"] - cfg.min_delta
        if improved:
            early.update(best=score, best_epoch=epoch, bad_epochs=0)
            if d.main:
                best_weights = (ema.module if ema is not None else model).state_dict()
                ckpt.save(ckpt_dir / ckpt.BEST, {"model": best_weights, "config": cfg.to_dict(), "epoch": epoch,
                                                 "val_loss": val.loss, "device_type": device.type})
        else:
            early["bad_epochs"] += 1
        history.append({"epoch": epoch, "train_loss": loss_sum / max(count, 1), "val_loss": val.loss,
                        "val_mae": vm["mae"], "val_accuracy": vm["accuracy"], "val_score": score,
                        "lr": scheduler.get_last_lr()[0],
                        "images_per_s": samples / max(secs / d.world, 1e-9), "seconds": secs / d.world})
        es = EpochState()
        save_latest(es)
        h = history[-1]
        _log(d, f"{cfg.backbone} epoch {epoch}/{cfg.epochs}  train {h['train_loss']:.5f}  val {val.loss:.5f}  "
                f"val MAE {vm['mae']:.4f}" + (f"  val Kaggle {score:.4f}" if cfg.select == "kaggle" else "")
                + f"  lr {h['lr']:.2e}  {h['images_per_s']:.1f} img/s  {h['seconds']:.1f}s"
                + ("  *best*" if improved else f"  (no improvement {early['bad_epochs']}/{cfg.patience})"))
        ran += 1
        if cfg.stop_after and ran >= cfg.stop_after and epoch < cfg.epochs and early["bad_epochs"] < cfg.patience:
            _log(d, f"{cfg.backbone}: paused after {ran} epoch(s) (--stop-after); re-run the same command to continue")
            return None
    if early["bad_epochs"] >= cfg.patience:
        _log(d, f"{cfg.backbone}: early stop after epoch {epoch} (best epoch {early['best_epoch']})")
    return _finish(cfg, d, device, history, wall=wall + time.perf_counter() - t_start, run_dir=run_dir)


def _settings_diff(saved: dict, cfg: TrainConfig) -> list[str]:
    """The settings that make a checkpoint mean something else (``RESUME_KEYS``), saved -> now."""
    return rerun.differences({k: saved_value(saved, k) for k in RESUME_KEYS if saved_value(saved, k) is not None},
                             cfg.to_dict(), RESUME_KEYS)


def _check_compatible(saved: dict, cfg: TrainConfig, run_dir: Path | None = None) -> None:
    diff = _settings_diff(saved, cfg)
    if diff:
        raise GzpipeError(f"{run_dir or cfg.run_dir} holds an unfinished run with other settings ({'; '.join(diff)}); use the same "
                          "options to resume it, or --restart to start over")


def _already_finished(cfg: TrainConfig, d: ddp.Dist, restart_hint: str) -> dict:
    """A finished run is never changed by a plain re-run: skipped, or kept with the differences listed."""
    final = cfg.run_dir
    changed = runs.changed_data(final)
    if changed:
        raise GzpipeError(runs.stale_message(final, changed, f"{restart_hint} trains it again on the current data"))
    diff = _settings_diff(runs.read_json(final, runs.CONFIG), cfg)
    line = rerun.finished_line(cfg.backbone, final, diff, restart_hint,
                               "--skip re-evaluates it" if restart_hint == "--restart" else "")
    if staging_dir(final).exists():
        line += f"; an interrupted --restart is in {staging_dir(final)} (the same command with --restart continues it)"
    _log(d, line)
    return runs.read_json(final, runs.METRICS)


def _staged_state(cfg: TrainConfig, staged: Path) -> dict | None:
    """The latest checkpoint of an interrupted --restart with the same settings and data, to continue it; anything
    else in the staging folder is removed (the main process only, once every option has been checked)."""
    if not staged.exists():
        return None
    state = ckpt.load_latest(staged / runs.CHECKPOINTS)
    if state is not None and not _settings_diff(state["config"], cfg) and not runs.changed_data(staged):
        return state
    shutil.rmtree(staged)
    return None


_RUNTIME_KEYS = ("backend", "workers", "device", "eval_batch_size", "out", "tta", "tta_kind")  # how to run/evaluate


def _skip(cfg: TrainConfig, d: ddp.Dist, device: torch.device) -> dict:
    """``--skip``: evaluate the best model exactly as it was trained (its saved config: image size, head, loss,
    shards), whatever defaults the command line would give now. A finished run's files are never changed: the
    figures are printed beside the recorded ones. An unfinished run (stopped after its best epoch) is finished."""
    run_dir = cfg.run_dir
    best = runs.best_checkpoint(run_dir)
    if not best.exists():
        raise GzpipeError(f"no finished model at {best}; train it first (without --skip)")
    saved = ckpt.load(best)["config"]
    trained = TrainConfig(**{**saved, **{k: getattr(cfg, k) for k in _RUNTIME_KEYS}, "mode": "skip"})
    if not runs.is_complete(run_dir, runs.BACKBONE):
        latest = ckpt.load_latest(run_dir / runs.CHECKPOINTS)
        return _finish(trained, d, device, latest["history"] if latest else [], wall=0.0, run_dir=run_dir)
    results = _evaluate_best(trained, d, device, run_dir)
    if not d.main:
        return {}
    recorded = runs.read_json(run_dir, runs.METRICS)
    for split, r in results.items():
        m = compute_metrics(r.pred, r.target, r.mask)
        _log(d, f"{cfg.backbone} {split}: MAE {m['mae']:.4f}, accuracy {m['accuracy']:.4f} re-evaluated at "
                f"{trained.image_size} px (recorded: MAE {recorded[split]['mae']:.4f}, accuracy "
                f"{recorded[split]['accuracy']:.4f}); {run_dir} is unchanged")
    return recorded


def _evaluate_best(cfg: TrainConfig, d: ddp.Dist, device: torch.device, run_dir: Path) -> dict:
    t = runs.load_trained(run_dir, device, amp=cfg.amp)
    net = LogitsModel(t.model, t.channels_last)
    results = {}
    for split in runs.EVAL_SPLITS:
        loader = ViewLoader(lambda turn, split=split: create_loader(
            cfg.shards, split, cfg.backend, cfg.image_size, cfg.eval_batch_size or 2 * cfg.batch_size, train=False,
            device=device, workers=cfg.workers, seed=cfg.seed, rank=d.rank, world_size=d.world, crop=t.crop,
            channels=t.channels, turn=turn), cfg.tta, cfg.tta_kind)
        results[split] = evaluate(net, loader, device, cfg.amp, saved_value(t.config, "loss"), ddp.gather_eval(d),
                                  tta=cfg.tta, tta_kind=cfg.tta_kind, agree=ddp.agreement(d))
        if results[split] is None:
            raise Stopped(STOP.signal, f"stopped by {STOP.signal} while evaluating the best model; training is "
                                       f"complete (checkpoints in {run_dir / runs.CHECKPOINTS}); re-run the same "
                                       "command to resume")
    return results


def _finish(cfg: TrainConfig, d: ddp.Dist, device: torch.device, history: list, wall: float,
            run_dir: Path) -> dict:
    """Evaluate the best model on val and test; write metrics, predictions, curves, then the completion mark; a
    replacement built beside the run is swapped in last."""
    best_epoch = ckpt.load(runs.best_checkpoint(run_dir))["epoch"]
    results = _evaluate_best(cfg, d, device, run_dir)
    metrics = _record(cfg, device, history, wall, run_dir, best_epoch, results) if d.main else {}
    # The other ranks wait for rank 0's files: one that exited first (a signal after the last safe point exits 143)
    # would have torchrun stop rank 0 while it writes them
    ddp.barrier(d)
    return metrics


def _record(cfg: TrainConfig, device: torch.device, history: list, wall: float, run_dir: Path, best_epoch: int,
            results: dict) -> dict:
    """Rank 0: the finished run's metrics, predictions and curves, then its completion mark."""
    samples = sum(h["images_per_s"] * h["seconds"] for h in history)
    secs = sum(h["seconds"] for h in history)
    trained = tasks_with_labels(cfg.shards)  # a question with no train label was never learned: predicted empty
    for r in results.values():
        r.pred = blank_untrained(r.pred, trained)
        if "plain" in r.extra:
            r.extra["plain"] = blank_untrained(r.extra["plain"], trained)
    metrics = {
        "backbone": cfg.backbone,
        "tasks_trained": trained,
        "metrics_cover": runs.metrics_cover(trained),
        "input": runs.input_of_shards(cfg.shards),
        **{split: {"loss": r.loss, **compute_metrics(r.pred, r.target, r.mask)} for split, r in results.items()},
        "tta": {"views": cfg.tta, "kind": cfg.tta_kind},
        **{f"{split}_without_tta": compute_metrics(r.extra["plain"], r.target, r.mask)
           for split, r in results.items() if "plain" in r.extra},
        "epochs_run": len(history),
        "best_epoch": best_epoch,
        "stopped_early": bool(history) and len(history) < cfg.epochs,
        "wall_time_s": wall,
        "images_per_s": samples / secs if secs else None,
        "device": str(device),
        "history": history,
    }
    for split, r in results.items():
        runs.write_predictions(run_dir, split, r.ids, r.pred)
    write_json(run_dir / runs.METRICS, metrics)
    if history:
        training_curves(history, best_epoch, f"{cfg.backbone} on {Path(cfg.shards).name}",
                        run_dir / "training_curves.png")
    runs.mark_complete(run_dir, runs.BACKBONE, f"{cfg.backbone}: best epoch {best_epoch} of {len(history)}; test MAE "
                                               f"{metrics['test']['mae']:.5f}, accuracy {metrics['test']['accuracy']:.4f}")
    final = cfg.run_dir
    replaced = run_dir != final and final.exists()
    if run_dir != final:
        swap_in(run_dir, final)
    print(f"{cfg.backbone}: test MAE {metrics['test']['mae']:.4f}  MSE {metrics['test']['mse']:.5f}  "
          f"accuracy {metrics['test']['accuracy']:.4f}  -> {final}" + (" (replaced)" if replaced else ""), flush=True)
    return metrics
