"""The standard hooks, each with one job and its period: timing, LR schedule, checkpoints, evaluation, writers.

Hooks read what they need from ``self.trainer`` when they run, so a hook list can be built (and printed by
``lazytrain hooks``) from a config alone.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Sequence
from typing import Any

from .. import __version__, comm
from ..checkpoint import get_rng_state
from ..evaluation import flatten_results
from ..events import EventWriter
from .train_loop import HookBase

__all__ = [
    "EvalHook",
    "IterationTimer",
    "LRScheduler",
    "PeriodicCheckpointer",
    "PeriodicWriter",
]

logger = logging.getLogger("lazytrain")


class IterationTimer(HookBase):
    """Puts the wall time of each step as ``time``; logs the total at the end."""

    def before_train(self) -> None:
        self._train_start = time.perf_counter()

    def before_step(self) -> None:
        self._step_start = time.perf_counter()

    def after_step(self) -> None:
        self.trainer.storage.put_scalar("time", time.perf_counter() - self._step_start)

    def after_train(self) -> None:
        done = self.trainer.iter - self.trainer.start_iter
        total = time.perf_counter() - self._train_start
        if done > 0:
            logger.info(
                "Trained %d iterations in %s (%.4f s / it)",
                done,
                datetime.timedelta(seconds=int(total)),
                total / done,
            )


class LRScheduler(HookBase):
    """Puts each step's LR as ``lr``, then steps ``trainer.lr_scheduler`` (if the config has an lr_multiplier)."""

    def after_step(self) -> None:
        self.trainer.storage.put_scalar("lr", self.trainer.optimizer.param_groups[0]["lr"], smoothing_hint=False)
        if self.trainer.lr_scheduler is not None:
            self.trainer.lr_scheduler.step()


class PeriodicCheckpointer(HookBase):
    """Saves ``model_<iter>.pth`` after every ``period`` iterations and ``model_final.pth`` when training
    completes, with everything an exact resume needs, and keeps the newest ``keep_last`` periodic ones (0: all).
    Every rank joins (RNG states are gathered); rank 0 writes."""

    def __init__(self, period: int, keep_last: int = 3) -> None:
        self.period = period
        self.keep_last = keep_last

    def after_step(self) -> None:
        if _due_before_the_end(self.trainer, self.period):
            self.save(f"model_{self.trainer.iter:07d}")

    def after_train(self) -> None:
        if self.trainer.completed:
            self.save("model_final")

    def save(self, name: str) -> None:
        save_training_state(self.trainer, name)
        self.trainer.checkpointer.remove_old(self.keep_last)

    def __repr__(self) -> str:
        return f"PeriodicCheckpointer(period={self.period}, keep_last={self.keep_last}, and at the end)"


class EvalHook(HookBase):
    """Runs ``trainer.test()`` every ``period`` iterations (0: never during training) and when training
    completes; puts each result as a scalar."""

    def __init__(self, period: int) -> None:
        self.period = period

    def after_step(self) -> None:
        if _due_before_the_end(self.trainer, self.period):
            self._evaluate()

    def after_train(self) -> None:
        if self.trainer.completed:
            self._evaluate()

    def _evaluate(self) -> None:
        self.trainer.average_over_ranks_and_check_finite()
        results = self.trainer.test()
        if results:
            self.trainer.storage.put_scalars(**flatten_results(results), smoothing_hint=False)
        comm.synchronize()

    def __repr__(self) -> str:
        when = f"period={self.period}, and at the end" if self.period > 0 else "at the end only (eval_period=0)"
        return f"EvalHook({when})"


class PeriodicWriter(HookBase):
    """Calls each writer every ``period`` iterations and at the end (other ranks than 0 get no writers, but
    still check their losses at each period)."""

    def __init__(self, writers: Sequence[EventWriter], period: int = 20) -> None:
        self.writers = list(writers)
        self.period = period

    def before_train(self) -> None:
        for writer in self.writers:
            writer.open(self.trainer.start_iter)

    def after_step(self) -> None:
        next_iter = self.trainer.iter + 1
        if next_iter % self.period == 0 or next_iter == self.trainer.max_iter:
            # the one collective per log period: logged values are means over ranks; a diverged loss stops here
            self.trainer.average_over_ranks_and_check_finite()
            self._write()

    def after_train(self) -> None:
        try:
            self._write()
        finally:
            for writer in self.writers:
                writer.close()

    def _write(self) -> None:
        for writer in self.writers:
            writer.write(self.trainer.storage)

    def __repr__(self) -> str:
        names = ", ".join(type(w).__name__ for w in self.writers)
        return f"PeriodicWriter(period={self.period}, writers=[{names}])"


def save_training_state(trainer: Any, name: str) -> None:
    """Write ``checkpoints/<name>.pth`` with everything an exact resume needs, as of the iteration that just
    ran. A collective: every rank joins (losses are checked, RNG states gathered); rank 0 writes."""
    trainer.average_over_ranks_and_check_finite()  # never save a diverged state
    rng_states = comm.all_gather(get_rng_state())
    trainer.checkpointer.save(
        name,
        iteration=min(trainer.iter, trainer.max_iter - 1),
        rng_states=rng_states,
        config=trainer.config_yaml,
        num_threads=trainer.num_threads,
        lazytrain_version=__version__,
    )


def _due_before_the_end(trainer: Any, period: int) -> bool:
    """Whether the iteration that just ran completes a ``period`` (0: never) and is not the last one (what
    happens at the end is each hook's ``after_train``)."""
    next_iter = trainer.iter + 1
    return period > 0 and next_iter % period == 0 and next_iter < trainer.max_iter
