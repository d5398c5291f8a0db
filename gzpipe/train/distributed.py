"""torchrun / DistributedDataParallel plumbing: set-up, rank-0 checks, reductions and gathers."""

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


def setup(device_kind: str) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_kind == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def cleanup(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def sum_floats(d: Dist, *values: float) -> list[float]:
    if not d.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def min_int(d: Dist, value: int) -> int:
    if not d.enabled:
        return value
    t = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def gather_eval(d: Dist):
    if not d.enabled:
        return None

    def gather(ids, pred, target, mask):
        parts = [None] * d.world
        dist.all_gather_object(parts, (ids, pred, target, mask))
        return ([i for p in parts for i in p[0]], np.concatenate([p[1] for p in parts]),
                np.concatenate([p[2] for p in parts]), np.concatenate([p[3] for p in parts]))

    return gather
