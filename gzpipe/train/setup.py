"""The pieces a training run is set up from (``gzpipe.train.run`` runs it): seeding and the RNG states a checkpoint
keeps, the moving average's step, DDP and compile around the model, the heads per catalogue, the figure the best
epoch follows, and what ``--weights`` is read from."""

from __future__ import annotations

import random

import numpy as np
import torch

from gzpipe.errors import GzpipeError
from gzpipe.train.config import TrainConfig


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state(device: torch.device) -> dict:
    return {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def restore_rng(s: dict, device: torch.device) -> None:
    torch.set_rng_state(s["torch"])
    random.setstate((3, tuple(s["python"]), None))
    if s.get("cuda") is not None and device.type == "cuda":
        torch.cuda.set_rng_state(s["cuda"], device)


def ema_update(decay: float):
    """The EMA step for ``AveragedModel``, with the decay warmed up as min(decay, (1 + n) / (10 + n)) after n steps.

    A fixed decay keeps decay^n of the first weights, and with them BatchNorm's first running statistics (variance
    ~1 where the data's is ~0.04): after 255 steps at 0.99, 8% of them were left and the EMA model's val MAE was 0.29
    against the raw model's 0.18 (benchmarks/RESULTS.md). Integer buffers (BatchNorm's batch counts) follow the
    model's."""

    @torch.no_grad()
    def update(ema_params: list, model_params: list, n_averaged) -> None:
        floating = torch.is_floating_point(ema_params[0]) or torch.is_complex(ema_params[0])
        if floating and n_averaged.device.type != "cpu":
            # on a GPU the decay stays a tensor: ``float(n_averaged)`` was a sync per parameter group and step
            n = n_averaged.to(ema_params[0].dtype)
            d = torch.clamp((1.0 + n) / (10.0 + n), max=decay)
            torch._foreach_mul_(ema_params, d)
            torch._foreach_add_(ema_params, torch._foreach_mul(model_params, 1.0 - d))
            return
        n = float(n_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        if floating:
            torch._foreach_lerp_(ema_params, model_params, 1.0 - d)
        else:
            for e, m in zip(ema_params, model_params, strict=True):
                e.copy_(m)

    return update




def wrap(net, distributed: bool, device, compile_: bool):
    """DDP around the model, then torch.compile around DDP: compiling the DDP module lets its gradient all-reduce
    overlap the backward (DDPOptimizer splits the graph at bucket boundaries); DDP around a compiled module waits for
    the whole backward before it reduces a byte."""
    if distributed:
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    return torch.compile(net) if compile_ else net


def catalogue_heads(shards: str) -> list[str]:
    """The catalogue formats of the train split, the one with the most galaxies first (the default head)."""
    from gzpipe.boost.catalogues import catalogue_rows
    from gzpipe.labels import split_labels

    rows = catalogue_rows(split_labels(shards, "train").index.tolist())
    formats = sorted((f for f in rows if f), key=lambda f: (-rows[f], f))
    if len(formats) < 2:
        raise GzpipeError(f"catalogue_heads: the train split of {shards} holds one catalogue format "
                          f"({', '.join(f or 'ids without a format prefix' for f in rows)}); a head per catalogue is for "
                          "shards that join several (gzpipe shard --catalog A --catalog B)")
    return formats


def selection(cfg: TrainConfig):
    """The figure the best epoch and early stopping follow (``TrainConfig.select``), lower is better: the val loss,
    or the val Kaggle RMSE over every known cumulative value of the shards' random-draw val galaxies (all of them
    where the shards name none)."""
    if cfg.select == "loss":
        return lambda val: val.loss
    from gzpipe.labels import random_draw_ids
    from gzpipe.metrics import kaggle_rmse

    chosen = random_draw_ids(cfg.shards, "val")
    chosen = set(chosen) if chosen else None

    def kaggle(val) -> float:
        rows = np.array([i in chosen for i in val.ids]) if chosen else np.ones(len(val.ids), bool)
        r = kaggle_rmse(val.pred[rows], val.target[rows], val.mask[rows])["rmse_known"]
        return float(r) if r is not None else float(val.loss)

    return kaggle


def weights_inputs(weights: str | None) -> dict:
    """The files ``--weights`` is read from, each with its own label (``weights``, or ``weights:NAME`` for a
    folder's): their digests make a retrained source visible."""
    if not weights:
        return {}
    from gzpipe.models.weights import locate

    w = locate(weights)
    if len(w.files) == 1 and w.files[0] == w.given:
        return {"weights": w.given}
    return {f"weights:{f.name}": f for f in w.files}
