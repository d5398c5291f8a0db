"""torchrun / DistributedDataParallel plumbing: set-up, rank-0 checks, reductions and gathers.

On CUDA the process group is ``cpu:gloo,cuda:nccl``: DDP's gradient all-reduce (CUDA tensors) goes through NCCL,
and the small reductions of Python numbers, the object gathers and the barriers through gloo on CPU tensors. A pure
NCCL group refuses CPU tensors ("No backend type associated with device type cpu"), and moving each number to the
GPU for its reduction would add a device sync per call. Reductions put their tensor on ``collective_device()``, so a
group made before gzpipe (pure NCCL) still gets CUDA tensors."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


GROUP_BACKEND = {"cuda": "cpu:gloo,cuda:nccl", "cpu": "gloo"}


def setup(device_kind: str) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world <= 1:
        return Dist()
    local = int(os.environ.get("LOCAL_RANK", 0))
    if device_kind == "cuda":
        torch.cuda.set_device(local)  # NCCL's communicator binds to the current device: this rank's own GPU
    if not dist.is_initialized():
        dist.init_process_group(GROUP_BACKEND[device_kind])
    return Dist(dist.get_rank(), dist.get_world_size(), local)


def collective_device() -> torch.device:
    """The device of the tensors the default group's backend takes for a reduction: the CPU where the group has a
    CPU backend (gloo, or the gloo half of ``cpu:gloo,cuda:nccl``), else this rank's current CUDA device."""
    backend = str(dist.get_backend()).lower()
    if backend == "gloo" or "cpu:" in backend:
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())


def cleanup(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def sum_floats(d: Dist, *values: float) -> list[float]:
    if not d.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=collective_device())
    dist.all_reduce(t)
    return t.tolist()


def min_int(d: Dist, value: int) -> int:
    if not d.enabled:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def max_ints(d: Dist, values: list[int]) -> list[int]:
    """The largest of each value over the ranks (gloo on CPU tensors under ``cpu:gloo,cuda:nccl``: no GPU sync)."""
    if not d.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.int64, device=collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [int(v) for v in t.tolist()]


_SIGNALS = {"SIGINT": 1, "SIGTERM": 2}


def agreement(d: Dist):
    """For a distributed run, ``agree(due) -> (stop, due)``: every rank's answer to "stop now?" (a stop any rank saw:
    a signal reaches the ranks at different steps) and "checkpoint now?" (rank 0's clock decides: each rank's own
    clock would decide at its own step, and a rank sitting in the checkpoint's barrier while another runs the next
    step's all-reduce waits forever). Called by every rank at the same step, so all act at that step. A rank that
    learns of another's stop records it as its own (``STOP``), so every later check agrees too. None for one process
    (its own ``STOP`` and clock are the answer)."""
    if not d.enabled:
        return None
    from gzpipe.stopping import STOP

    def agree(due: bool) -> tuple[bool, bool]:
        due_all, sig = max_ints(d, [int(due) if d.main else 0, _SIGNALS.get(STOP.signal or "", 0)])
        if sig and not STOP:
            STOP.request("SIGTERM" if sig == 2 else "SIGINT")
        return bool(sig), bool(due_all)

    return agree


def gather_eval(d: Dist):
    if not d.enabled:
        return None

    def gather(ids, pred, target, mask):
        parts = [None] * d.world
        dist.all_gather_object(parts, (ids, pred, target, mask))
        return ([i for p in parts for i in p[0]], np.concatenate([p[1] for p in parts]),
                np.concatenate([p[2] for p in parts]), np.concatenate([p[3] for p in parts]))

    return gather
