"""Hooks that inject failures into multi-process runs (importable by spawned workers)."""

from __future__ import annotations

import os
import signal
from typing import Optional

from lazytrain import comm
from lazytrain.engine import HookBase


class FailAt(HookBase):
    """At ``iteration``, on ``rank`` (every rank when None): raise an error (``how="raise"``) or SIGKILL the
    process (``how="kill"``)."""

    def __init__(self, iteration: int, rank: Optional[int] = None, how: str = "raise") -> None:
        self.iteration, self.rank, self.how = iteration, rank, how

    def after_step(self) -> None:
        if self.trainer.iter != self.iteration or (self.rank is not None and comm.get_rank() != self.rank):
            return
        if self.how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError(f"injected failure at iteration {self.iteration}")
