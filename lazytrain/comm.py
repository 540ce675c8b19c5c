"""Thin helpers over torch.distributed that also work when no process group exists (one process)."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "all_gather",
    "broadcast_from_main",
    "get_backend",
    "get_local_gpu",
    "get_local_rank",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "reduce_sum",
    "synchronize",
]


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_backend() -> str:
    """The process group's backend ("nccl", "gloo", ...), or "none" without one."""
    return str(dist.get_backend()) if is_distributed() else "none"


def get_local_rank() -> int:
    """This process's rank on its machine: ``LOCAL_RANK``, which torchrun sets and lazytrain's launcher sets
    in the workers it spawns (0 in a single process)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def get_local_gpu() -> int:
    """The index of this rank's GPU among the GPUs it sees: ``LOCAL_RANK`` modulo their number. The launcher
    makes it the current GPU and the trainer builds on it, one rule for both: under SLURM with
    ``--gpus-per-task=1`` every task sees one GPU, index 0, whatever its local rank."""
    return get_local_rank() % max(torch.cuda.device_count(), 1)


def is_main_process() -> bool:
    return get_rank() == 0


def synchronize() -> None:
    """A barrier across ranks; nothing with one process."""
    if get_world_size() > 1:
        dist.barrier()


def all_gather(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (any picklable object), in rank order, on every rank."""
    world = get_world_size()
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def broadcast_from_main(obj: Any) -> Any:
    """Rank 0's ``obj`` (any picklable object), on every rank; ``obj`` itself with one process."""
    if get_world_size() == 1:
        return obj
    box = [obj if is_main_process() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over ranks (a new tensor; the input is not changed)."""
    if get_world_size() == 1:
        return tensor.clone()
    out = tensor.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out
