"""One epoch of training and one pass of evaluation, as plain functions.

Precision is one switch (``gzpipe.device.precision``): bf16 autocast (or fp16 with a GradScaler) on CUDA, plain
fp32 on the CPU, where bf16 autocast is 10-50x slower on this hardware. Both stop at a safe point (after a whole
optimizer step, between evaluation batches) once a stop is asked for (``gzpipe.stopping.STOP``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from gzpipe.device import precision as amp_context
from gzpipe.loaders import Loader
from gzpipe.progress import progress_bar
from gzpipe.stopping import STOP, ends_loading


def masked_loss(pred: torch.Tensor, logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                kind: str = "mse") -> tuple[torch.Tensor, torch.Tensor]:
    """Mean loss over valid entries only; returns (loss, number of valid entries). Masked targets never
    contribute, whatever value they hold.

    ``l1`` (absolute error) is the study's headline metric itself, MAE: it is minimised by the median of a galaxy's
    plausible fractions where ``mse`` is minimised by their mean, and GZ2's fractions pile up near 0 and 1."""
    if kind == "cumulative":
        return cumulative_loss(pred, target, mask)
    if kind == "mse_reach":
        return reach_weighted_loss(pred, target, mask)
    m = mask.to(pred.dtype)
    n = m.sum()
    if kind == "mse":
        per = (pred.float() - target) ** 2
    elif kind == "l1":
        per = (pred.float() - target).abs()
    else:  # soft-target binary cross-entropy on the sigmoid logits
        per = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none")
    per = torch.where(mask, per, torch.zeros_like(per))
    return per.sum() / n.clamp_min(1.0), n


def _cumulative(cond: torch.Tensor) -> torch.Tensor:
    """Conditional fractions (N, 30) multiplied down the decision tree (``schema.conditional_to_cumulative``)."""
    from gzpipe import schema

    parts = [None] * schema.N_TARGETS
    for t in schema.TASKS:
        s, p = schema.TASK_SLICES[t.name], schema.PARENT_INDEX[t.name]
        reach = 1.0 if p is None else parts[p]
        for j in range(s.start, s.stop):
            parts[j] = cond[:, j:j + 1] * reach
    return torch.cat(parts, dim=1)


def cumulative_known(target: torch.Tensor, mask: torch.Tensor, cum_target: torch.Tensor) -> torch.Tensor:
    """Which cumulative values are known (``gzpipe.metrics.cumulative_known``, on the device): a task's where its
    answers are labelled and its parent's is known, or where its parent's is known to be 0 (nobody reached it)."""
    from gzpipe import schema

    known = [None] * schema.N_TARGETS
    for t in schema.TASKS:
        s, p = schema.TASK_SLICES[t.name], schema.PARENT_INDEX[t.name]
        for j in range(s.start, s.stop):
            m = mask[:, j:j + 1]
            known[j] = m if p is None else known[p] & (m | (cum_target[:, p:p + 1] <= 0))
    return torch.cat(known, dim=1)


def cumulative_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared error of the cumulative fractions (each answer's share of all volunteers: the conditional fraction
    times the chance of reaching its question), over the known ones: the quantity Kaggle's Galaxy Challenge metric
    takes the root of. A deep question's conditional fraction, often from a handful of volunteers, weighs as much as
    the volunteers who reached it."""
    t = torch.where(mask, target, torch.zeros_like(target))
    ct = _cumulative(t)
    known = cumulative_known(t, mask, ct)
    per = torch.where(known, (_cumulative(pred.float()) - ct) ** 2, torch.zeros_like(ct))
    n = known.to(pred.dtype).sum()
    return per.sum() / n.clamp_min(1.0), n


def reach_weights(target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(N, 30) weights: the share of volunteers who reached each answer's question (its parent's cumulative target
    fraction; 1 for the first questions and where the parent's share is unknown, as for a catalogue that lacks the
    parent question). A conditional fraction is the mean of the votes of those who reached the question, so its
    variance is about inversely proportional to that share: these are inverse-variance weights."""
    from gzpipe import schema

    t = torch.where(mask, target, torch.zeros_like(target))
    ct = _cumulative(t)
    known = cumulative_known(t, mask, ct)
    cols = []
    for task in schema.TASKS:
        s, p = schema.TASK_SLICES[task.name], schema.PARENT_INDEX[task.name]
        w = torch.ones_like(t[:, :1]) if p is None else torch.where(known[:, p:p + 1], ct[:, p:p + 1],
                                                                       torch.ones_like(t[:, :1]))
        cols.append(w.expand(-1, s.stop - s.start))
    return torch.cat(cols, dim=1)


def reach_weighted_loss(pred: torch.Tensor, target: torch.Tensor,
                        mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared error of the conditional fractions, each weighted by the share of volunteers who reached its question
    (``reach_weights``): between ``mse`` (every reached answer alike, however few voted) and ``cumulative`` (the
    error of the product, which weighs a deep answer by about the square of that share)."""
    w = torch.where(mask, reach_weights(target, mask), torch.zeros_like(target))
    per = w * (pred.float() - torch.where(mask, target, torch.zeros_like(target))) ** 2
    n = w.sum()
    return per.sum() / n.clamp_min(1e-8), n


def lr_lambda(warmup_steps: int, total_steps: int):
    """Linear warm-up, then cosine decay to zero at ``total_steps``."""

    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


@dataclass
class EpochState:
    """What a mid-epoch checkpoint needs to carry on exactly where it stopped."""

    batches_done: int = 0
    loss_sum: float = 0.0
    count: float = 0.0
    samples: int = 0
    seconds: float = 0.0


@dataclass
class EvalResult:
    loss: float
    ids: list[str]
    pred: np.ndarray
    target: np.ndarray
    mask: np.ndarray
    extra: dict = field(default_factory=dict)


# Steps between reads of the running loss. Each read (``.item()``) waits for the GPU to finish every queued kernel;
# once a step (twice, with the valid-entry count) drained the queue before every batch. Read every this many steps,
# at checkpoints and at the end of the epoch, the queue stays full.
LOSS_READ_EVERY = 25


class _RunningLoss:
    """The epoch's loss sum and valid-entry count, accumulated on the device (float64, so a run read at other
    steps - a resumed one - sums to the same value) and moved into the ``EpochState`` only when read."""

    def __init__(self, device):
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.count = torch.zeros((), dtype=torch.float64, device=device)
        self.pending = 0

    def add(self, loss: torch.Tensor, n: torch.Tensor) -> None:
        self.loss += loss.detach().double() * n.double()
        self.count += n.double()
        self.pending += 1

    def read_into(self, state: EpochState) -> None:
        """The one sync: the sums since the last read, into ``state``."""
        if self.pending:
            state.loss_sum += float(self.loss)
            state.count += float(self.count)
            self.loss.zero_()
            self.count.zero_()
            self.pending = 0


def train_one_epoch(model, loader: Loader, optimizer, scheduler, scaler, device, amp, cfg, epoch: int,
                    max_batches: int, state: EpochState, checkpoint_fn, on_step=None, agree=None) -> EpochState:
    """Train over ``max_batches`` batches of ``loader`` (skipping the ``state.batches_done`` already done by an
    interrupted run); ``checkpoint_fn(state)`` is called when a mid-epoch checkpoint is due; returns early, with
    ``state`` up to date, once a stop is asked for (the caller saves and stops). The loss is read back from the
    device every ``LOSS_READ_EVERY`` steps only (``_RunningLoss``). Under DDP, ``agree``
    (``gzpipe.train.distributed.agreement``) makes the stop and the timed checkpoint one decision of all ranks, taken
    after every step: each rank deciding on its own signal or clock would leave one in a collective the others
    never join."""
    model.train()
    autocast = amp_context(device, amp)
    loader.set_epoch(epoch)
    last_ckpt = time.monotonic()
    t0 = time.perf_counter() - state.seconds
    running = _RunningLoss(device)
    with progress_bar(f"epoch {epoch + 1}", total=max_batches, unit="batch") as bar:
        bar.advance(state.batches_done)
        with ends_loading(quiet=True):
            for i, batch in enumerate(loader):
                if STOP and agree is None:  # before the step: a stop that came while the batch loaded loses nothing
                    break
                if i >= max_batches:
                    break  # under DDP every rank runs the same number of steps, or the all-reduce would hang
                if i < state.batches_done:
                    continue  # replay: the loader yields the same batches for this (seed, epoch)
                pred, logits = _forward(model, batch.images, autocast, _heads(model, batch.ids, device))
                loss, n = masked_loss(pred, logits, batch.targets, batch.mask, cfg.loss)
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                else:
                    loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                scheduler.step()
                if on_step is not None:  # e.g. the moving average of the weights
                    on_step()
                running.add(loss, n)  # no sync: the sums stay on the device
                state.samples += len(batch)
                state.batches_done = i + 1
                bar.advance(1)
                if running.pending >= LOSS_READ_EVERY:
                    running.read_into(state)
                    bar.update(description=f"epoch {epoch + 1} loss {state.loss_sum / max(state.count, 1):.4f}")
                due = cfg.checkpoint_minutes > 0 and time.monotonic() - last_ckpt > 60 * cfg.checkpoint_minutes
                stop, due = agree(due) if agree is not None else (bool(STOP), due)
                if stop:
                    break
                if due:
                    running.read_into(state)
                    state.seconds = time.perf_counter() - t0
                    checkpoint_fn(state)
                    last_ckpt = time.monotonic()
    running.read_into(state)
    state.seconds = time.perf_counter() - t0
    return state


def unwrap(model):
    """The ``LogitsModel`` inside whatever wraps it: ``torch.compile`` (``_orig_mod``) around DDP (``module``), in
    either order."""
    core = model
    while True:
        if hasattr(core, "_orig_mod"):
            core = core._orig_mod
        elif isinstance(core, torch.nn.parallel.DistributedDataParallel):
            core = core.module
        else:
            return core


def _heads(model, ids, device):
    """Each row's head index (a model with a head per catalogue), or None."""
    core = unwrap(model)
    return core.catalogue_index(ids, device) if hasattr(core, "catalogue_index") else None


def _forward(model, x, autocast, catalogue=None):
    """(predictions in [0, 1], logits) from one forward pass. The model's ``forward`` returns logits while
    training (see ``LogitsModel``), so the DDP wrapper sees the call and synchronises gradients. ``catalogue``: each
    row's head, for a model with a head per catalogue."""
    with autocast():
        logits = model(x) if catalogue is None else model(x, catalogue)
    return unwrap(model).activate(logits.float()), logits


@torch.inference_mode()
def evaluate(model, loader: Loader, device, amp, loss_kind: str, gather_fn=None, tta: int = 1,
             tta_kind: str = "dihedral", agree=None) -> EvalResult | None:
    """Predictions and loss over ``loader``; None when a stop was asked for while it ran. With ``tta`` > 1 the
    predictions are averaged over that many views (``gzpipe.loaders.tta``), and ``extra["plain"]`` holds those of
    the plain view alone, for the with / without comparison; ``loader`` is a ``ViewLoader`` for the views warped
    from the stored pixels (the ``angles`` kind)."""
    from gzpipe.loaders.tta import view_batches

    model.eval()
    autocast = amp_context(device, amp)
    ids, preds, targets, masks, plain = [], [], [], [], []
    # Evaluate through the unwrapped module: DDP's forward broadcasts buffers (a collective), and a rank with
    # fewer (or no) evaluation batches would leave the others waiting in it forever. And through the uncompiled
    # one: eval mode, inference mode, a partial last batch and TTA's rotated (non-contiguous) views would each make
    # torch.compile trace the model again, for a pass that runs once an epoch.
    core = unwrap(model)
    with ends_loading(quiet=True):
        for batch, vs in view_batches(loader, tta, tta_kind):
            if STOP and agree is None:  # under DDP the ranks agree once, after the pass (they hold uneven batches)
                break
            outs = []
            heads = core.catalogue_index(batch.ids, device) if hasattr(core, "catalogue_index") else None
            for v in vs:
                with autocast():
                    logits = core(v) if heads is None else core(v, heads)
                outs.append(core.activate(logits.float()))
            preds.append(torch.stack(outs).mean(0).cpu())
            plain.append(outs[0].cpu())
            targets.append(batch.targets.cpu())
            masks.append(batch.mask.cpu())
            ids += batch.ids
    if (agree(False)[0] if agree is not None else bool(STOP)):
        return None  # every rank, or none: the gather below is a collective
    pred = torch.cat(preds).numpy() if preds else np.zeros((0, 30), np.float32)
    target = torch.cat(targets).numpy() if targets else np.zeros((0, 30), np.float32)
    mask = torch.cat(masks).numpy() if masks else np.zeros((0, 30), bool)
    plain_pred = torch.cat(plain).numpy() if plain else pred
    if gather_fn is not None:  # DDP: every rank gets every rank's part, so all agree on the val loss
        ids2, pred, target, mask = gather_fn(ids, pred, target, mask)
        plain_pred = gather_fn(ids, plain_pred, plain_pred, plain_pred)[1] if tta > 1 else pred
        ids = ids2
    p, t, m = torch.from_numpy(pred), torch.from_numpy(target), torch.from_numpy(mask)
    logit = torch.logit(p.clamp(1e-6, 1 - 1e-6))
    loss, _ = masked_loss(p, logit, t, m, loss_kind)
    return EvalResult(float(loss), ids, pred, target, mask, {"plain": plain_pred} if tta > 1 else {})


class LogitsModel(torch.nn.Module):
    """Training view of a ``GZModel``: ``forward`` returns logits (what DDP wraps and the loss needs);
    ``activate`` maps them to predictions in [0, 1]."""

    def __init__(self, model, channels_last: bool | None = None):
        super().__init__()
        self.model = model
        self.channels_last = channels_last  # None: inputs as the loader gives them (channels-last)

    def forward(self, x: torch.Tensor, catalogue: torch.Tensor | None = None) -> torch.Tensor:
        if self.channels_last is False:  # the loaders deliver channels-last, and a convolution follows its input's
            x = x.contiguous()  # format: a backbone whose default is off (regnety on CUDA) would run channels-last
        return self.model.logits(x, catalogue)

    def catalogue_index(self, ids, device) -> torch.Tensor | None:
        """Each row's head (its catalogue's, by its id's prefix) for a model with a head per catalogue; else None."""
        from gzpipe.boost.catalogues import catalogue_of

        idx = self.model.catalogue_index(catalogue_of(ids))
        return idx.to(device, non_blocking=True) if idx is not None else None

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        return self.model.head.activate(logits)
