"""`TrainerBase` runs the loop and calls its hooks, in the order of the list, around each step."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Optional, cast

import torch
import torch.distributed as dist

from .. import comm
from ..errors import LazytrainError, TrainingError, UserCodeError
from ..events import EventStorage
from ..iterations import last_iteration_run
from .hook_api import HookBase, HookTrainer

__all__ = ["HookBase", "TrainerBase"]

logger = logging.getLogger(__name__)


class TrainerBase:
    """``before_train``; per iteration ``before_step`` / :meth:`run_step` / ``after_step``; ``after_train``.

    ``after_train`` runs even when a step raises; :attr:`completed` tells hooks whether training finished,
    :attr:`failure` what stopped it. ``start_iter`` and ``iter`` count as :mod:`lazytrain.iterations` says. An
    exception a hook's ``after_train`` raises while training is already stopping on another one is logged, and
    the first stays the error shown. On a completed run every hook's ``after_train`` runs too: the first one
    that raises is re-raised after the last hook, the others are logged. Subclasses implement :meth:`run_step`.

    An exception a hook raises in ``before_step`` / ``after_step`` is the user's (a :class:`UserCodeError`
    naming the hook and iteration, with the user's traceback), unless the hook is one of lazytrain's own: those
    raise one-paragraph errors themselves, or a bug of lazytrain's as it is.
    """

    def __init__(self) -> None:
        self._hooks: list[HookBase] = []
        self.iter = 0
        self.start_iter = 0
        self.max_iter = 0
        self.completed = False
        self.failure: Optional[BaseException] = None  # what stopped training, for hooks' after_train
        self._storage: Optional[EventStorage] = None

    @property
    def storage(self) -> EventStorage:
        """The run's event storage: opened by :meth:`train` (and kept after it, for reading)."""
        if self._storage is None:
            raise RuntimeError("trainer.storage exists once train() has started.")
        return self._storage

    @property
    def hooks(self) -> list[HookBase]:
        return list(self._hooks)

    def register_hooks(self, hooks: Sequence[Optional[HookBase]]) -> None:
        for hook in hooks:
            if hook is None:
                continue
            if not isinstance(hook, HookBase):
                raise TypeError(f"hooks must subclass lazytrain.engine.HookBase, got {type(hook).__name__}.")
            # a TrainerBase subclass gives what its own hooks read; Trainer gives all of HookTrainer
            hook.trainer = cast(HookTrainer, self)
            self._hooks.append(hook)

    def train(self, start_iter: int, max_iter: int) -> None:
        self.iter = self.start_iter = start_iter
        self.max_iter = max_iter
        self.completed = False
        self.failure = None
        logger.info("Starting training from iteration %d to %d", start_iter, max_iter)
        distributed = comm.get_world_size() > 1
        gather = comm.all_gather if distributed else None
        all_reduce = _all_reduce_sum if distributed else None
        with EventStorage(start_iter, gather=gather, all_reduce_sum=all_reduce) as self._storage:
            try:
                self.before_train()
                for self.iter in range(start_iter, max_iter):
                    self.before_step()
                    self.run_step()
                    self.after_step()
                self.iter = max_iter
                self.average_over_ranks_and_check_finite()
                self.completed = True
            except BaseException as e:
                self.failure = e
                raise
            finally:
                self.after_train()

    def average_over_ranks_and_check_finite(self) -> None:
        """A collective: every rank must call it at the same points, as the standard hooks do.

        The tensors put since the last call become floats, averaged over the ranks in a process group (the
        logged losses are those of the global batch; see :meth:`EventStorage.flush`). Then it raises if a loss
        put with ``check_finite=True`` was NaN or infinite on any rank (checked here, lazily, not with a sync
        per step): hooks call this before they save or log, so no checkpoint holds a diverged state."""
        self.storage.flush()
        if self.storage.first_nonfinite is None:
            return
        iteration, terms = self.storage.first_nonfinite
        values = ", ".join(f"{name}={value}" for name, value in terms.items())
        error = TrainingError(
            f"non-finite loss at iteration {iteration + 1}: {values}. Training stopped; no checkpoint of this state "
            "was written.",
            hint="Lower optimizer.lr, clip gradients (train.clip_grad.max_norm=1.0), or check the inputs.",
        )
        error.speaks_for_the_job = True  # the values are means over ranks: every rank raises this, together
        raise error

    def run_step(self) -> None:
        raise NotImplementedError

    def before_train(self) -> None:
        for h in self._hooks:
            h.before_train()

    def before_step(self) -> None:
        self.storage.iter = self.iter
        for h in self._hooks:
            self._call_step_hook(h, h.before_step)

    def after_step(self) -> None:
        for h in self._hooks:
            self._call_step_hook(h, h.after_step)

    def _call_step_hook(self, hook: HookBase, method: Callable[[], None]) -> None:
        try:
            method()
        except LazytrainError:
            raise
        except Exception as e:
            if _is_lazytrains(hook):
                raise
            raise UserCodeError.wrap(self.iter + 1, f"hook {type(hook).__name__}.{method.__name__}", e) from e

    def after_train(self) -> None:
        # what the final hooks put (evaluation, last metrics) belongs to the last iteration that ran
        self.storage.iter = last_iteration_run(self.iter, self.start_iter, self.max_iter)
        # every hook's after_train runs (writers close, GracefulStop puts the signal handlers back) even when an
        # earlier one raised; the first error is the one shown, the others are logged
        first: Optional[BaseException] = None
        for h in self._hooks:
            try:
                h.after_train()
            except Exception as e:
                if self.failure is None and first is None:
                    first = e
                    continue
                shown = (
                    f"training was stopping on {type(self.failure).__name__}"
                    if self.failure is not None
                    else (f"an earlier after_train raised {type(first).__name__}, the error shown")
                )
                logger.warning("%s.after_train raised %s: %s (while %s)", type(h).__name__, type(e).__name__, e, shown)
        if first is not None:
            raise first


def _is_lazytrains(hook: HookBase) -> bool:
    """Whether ``hook`` is one of lazytrain's own hooks (not user code, nor a user's subclass of one)."""
    return type(hook).__module__.split(".")[0] == "lazytrain"


def _all_reduce_sum(tensor: torch.Tensor) -> None:
    """In place: the sum over ranks (a CPU tensor: on GPUs the group has gloo for CPU tensors beside NCCL, see
    ``lazytrain.launch.process_group_backend``)."""
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
