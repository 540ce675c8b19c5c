"""Hooks that inject failures into multi-process runs, and a model whose loss is its rank (importable by spawned
workers)."""

from __future__ import annotations

import os
import signal
import time
from typing import Optional

import torch

from lazytrain import comm
from lazytrain.engine import HookBase


class FailAt(HookBase):
    """At ``iteration`` (``trainer.iter``, 0-based: the iteration users call ``iteration + 1``), on ``rank``
    (every rank when None): raise an error (``how="raise"``) or SIGKILL the process (``how="kill"``)."""

    def __init__(self, iteration: int, rank: Optional[int] = None, how: str = "raise") -> None:
        self.iteration, self.rank, self.how = iteration, rank, how

    def after_step(self) -> None:
        if self.trainer.iter != self.iteration or (self.rank is not None and comm.get_rank() != self.rank):
            return
        if self.how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError(f"injected failure in iteration {self.iteration + 1}")


class RankLoss(torch.nn.Module):
    """A model whose loss is its rank (plus 0 x a parameter, so that there is something to train)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        return {"loss_rank": (self.w * 0).sum() + float(comm.get_rank()), "loss_one": (self.w * 0).sum() + 1.0}


class HangAt(HookBase):
    """At ``iteration``, on ``rank``: says so on stdout, then loops forever (a rank stuck in Python code; its
    peers block in the next collective)."""

    def __init__(self, iteration: int, rank: int) -> None:
        self.iteration, self.rank = iteration, rank

    def after_step(self) -> None:
        if self.trainer.iter == self.iteration and comm.get_rank() == self.rank:
            print(f"rank {self.rank} hangs at iteration {self.iteration}", flush=True)
            while True:
                time.sleep(0.05)


class PutNonFiniteFloatAt(HookBase):
    """At ``iteration`` on ``rank``: puts a float loss that is NaN, with ``check_finite=True`` (a loss computed
    in Python by a user's hook)."""

    def __init__(self, iteration: int, rank: int) -> None:
        self.iteration, self.rank = iteration, rank

    def after_step(self) -> None:
        bad = self.trainer.iter == self.iteration and comm.get_rank() == self.rank
        self.trainer.storage.put_scalar("loss_python", float("nan") if bad else 1.0, check_finite=True)


class SlowOnRank1(torch.utils.data.Dataset):
    """Blobs whose samples take ``seconds`` each to load on rank 1 only (a rank with a slow disk)."""

    def __init__(self, dataset: torch.utils.data.Dataset, seconds: float) -> None:
        self.dataset, self.seconds = dataset, seconds

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> object:
        if comm.get_rank() == 1:
            time.sleep(self.seconds)
        return self.dataset[i]


class FailOnceAt(HookBase):
    """At ``iteration`` on ``rank``, raise unless the file ``marker`` exists, creating it first: a fault that
    fires in one attempt of a job only (a restarted attempt passes the same iteration)."""

    def __init__(self, iteration: int, rank: int, marker: str) -> None:
        self.iteration, self.rank, self.marker = iteration, rank, marker

    def after_step(self) -> None:
        if self.trainer.iter != self.iteration or comm.get_rank() != self.rank or os.path.exists(self.marker):
            return
        open(self.marker, "w").close()
        raise RuntimeError(f"injected failure in iteration {self.iteration + 1}")
