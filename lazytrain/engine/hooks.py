"""The standard hooks, each with one job and its period: timing, EMA, LR schedule, checkpoints (periodic and
best), evaluation, writers.

Hooks read what they need from ``self.trainer`` when they run, so a hook list can be built (and printed by
``lazytrain hooks``) from a config alone.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import time
from collections.abc import Sequence
from typing import Any, Optional

from .. import __version__, comm
from ..checkpoint import Checkpointer
from ..errors import ConfigError, TrainingError, did_you_mean
from ..evaluation import flatten_results
from ..events import EventWriter
from ..fileio import atomic_write, describe_write_error
from ..iterations import last_iteration_run
from ..rng import get_rng_state
from .hook_api import HookBase, HookTrainer
from .trainer import unwrap_model

__all__ = [
    "BestCheckpointer",
    "EMAHook",
    "EvalHook",
    "IterationTimer",
    "LRScheduler",
    "PeriodicCheckpointer",
    "PeriodicWriter",
]

logger = logging.getLogger(__name__)


class IterationTimer(HookBase):
    """Puts the wall time of each step as ``time`` and the throughput as ``samples_per_second`` (batch size x
    gradient accumulation x world size / step time); logs the total at the end (the steps that finished: all of
    them, or those before a stop)."""

    _train_start: Optional[float] = None  # None: training stopped before this hook's before_train ran
    _done = 0

    def before_train(self) -> None:
        self._train_start = time.perf_counter()
        self._done = 0

    def before_step(self) -> None:
        self._step_start = time.perf_counter()

    def after_step(self) -> None:
        seconds = time.perf_counter() - self._step_start
        self.trainer.storage.put_scalar("time", seconds)
        samples = self._samples_per_step()
        if samples and seconds > 0:
            self.trainer.storage.put_scalar("samples_per_second", samples / seconds)
        self._done += 1  # a step that finished (a stop requested after it, as on SIGTERM, still counts)

    def _samples_per_step(self) -> int:
        """Samples in one optimizer step over all ranks (0: the loader has no batch size to tell)."""
        batch_size = getattr(self.trainer.data_loader, "batch_size", None)
        if not isinstance(batch_size, int):
            return 0
        return batch_size * int(getattr(self.trainer, "grad_accum", 1)) * comm.get_world_size()

    def after_train(self) -> None:
        done = self._done
        if self._train_start is None:
            return
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


class EMAHook(HookBase):
    """Updates ``trainer.ema`` (torch's AveragedModel with ``get_ema_multi_avg_fn(decay)``, fp32, on the
    model's device) after each optimizer step. Evaluation then uses the EMA weights; every checkpoint holds
    them (key ``ema``), so a resume continues the same average."""

    def __init__(self, decay: float) -> None:
        self.decay = decay

    def after_step(self) -> None:
        ema = self.trainer.ema
        assert ema is not None, "EMAHook needs trainer.ema (build_trainer makes it when train.ema.enabled)"
        ema.update_parameters(unwrap_model(self.trainer.model))

    def __repr__(self) -> str:
        return f"EMAHook(decay={self.decay})"


class PeriodicCheckpointer(HookBase):
    """Saves ``model_<N>.pth`` after every ``period`` iterations (``model_0000100.pth`` after 100) and
    ``model_final.pth`` when training completes, with everything an exact resume needs, and keeps the newest
    ``keep_last`` periodic ones (0: all). Every rank joins (RNG states are gathered); rank 0 writes."""

    def __init__(self, period: int, keep_last: int = 3) -> None:
        self.period = period
        self.keep_last = keep_last

    def after_step(self) -> None:
        if _due_before_the_end(self.trainer, self.period):
            self.save(f"model_{self.trainer.iter + 1:07d}")

    def after_train(self) -> None:
        if self.trainer.completed:
            self.save("model_final")

    def save(self, name: str) -> None:
        save_training_state(self.trainer, name)
        require_checkpointer(self.trainer).remove_old(self.keep_last)

    def __repr__(self) -> str:
        return f"PeriodicCheckpointer(period={self.period}, keep_last={self.keep_last}, and at the end)"


class EvalHook(HookBase):
    """Runs ``trainer.test()`` every ``period`` iterations (0: never during training) and when training
    completes; puts each result as a scalar. An evaluator with a ``pictures()`` method (``-> dict[str, (H, W, 3)
    uint8 array]``, the same on every rank after ``evaluate()``) also gets its pictures put as images
    (``val/<name>`` in TensorBoard), by the main process."""

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
            for name, value in flatten_results(results).items():
                # every rank has rank 0's results (inference_on_dataset): nothing to average
                self.trainer.storage.put_scalar(name, value, smoothing_hint=False, group="val", same_on_every_rank=True)
        pictures = getattr(self.trainer.evaluator, "pictures", None)
        if callable(pictures) and comm.is_main_process():
            for name, image in pictures().items():
                self.trainer.storage.put_image(name, image, group="val")
        comm.synchronize()

    def __repr__(self) -> str:
        when = f"period={self.period}, and at the end" if self.period > 0 else "at the end only (eval_period=0)"
        return f"EvalHook({when})"


class BestCheckpointer(HookBase):
    """After each evaluation, writes ``checkpoints/model_best.pth`` (and ``model_best.json`` with the metric,
    its value and the iteration: N after N iterations) when ``metric`` improved on the best so far (``mode``
    "max" or "min"). The best value is part of every checkpoint, so after ``--resume`` a worse evaluation
    never replaces it; the file does not move ``last_checkpoint`` and keep_last never deletes it. It reads the
    evaluation EvalHook ran (``trainer.latest_eval``), so it comes after EvalHook in the hook list."""

    runs_after = (EvalHook,)

    def __init__(self, metric: str, mode: str = "max") -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"train.best.mode must be 'max' or 'min', got {mode!r}.")
        self.metric, self.mode = metric, mode
        self.best: Optional[tuple[float, int]] = None  # (value, index of its iteration)
        self._checked_iter: Optional[int] = None

    def after_step(self) -> None:
        self._check()

    def after_train(self) -> None:
        if self.trainer.completed:
            self._check()

    def _check(self) -> None:
        latest = self.trainer.latest_eval
        if latest is None or latest[0] == self._checked_iter:
            return
        iteration, results = latest
        self._checked_iter = iteration
        if self.metric not in results:
            raise ConfigError(
                f"the evaluation returned no metric '{self.metric}'; it returned {', '.join(map(repr, results))}.",
                key="train.best.metric",
                hint=did_you_mean(self.metric, results) or "Use one of those names.",
            )
        value = float(results[self.metric])
        if self.best is not None and not (value > self.best[0] if self.mode == "max" else value < self.best[0]):
            return
        previous = self.best
        self.best = (value, iteration)
        save_training_state(self.trainer, "model_best", tag_last=False)
        checkpointer = require_checkpointer(self.trainer)
        if checkpointer.save_to_disk and checkpointer.save_dir:
            record = {"metric": self.metric, "mode": self.mode, "value": value, "iteration": iteration + 1}
            atomic_write(os.path.join(checkpointer.save_dir, "model_best.json"), json.dumps(record) + "\n")
        was = f" (was {previous[0]:.4f} at iteration {previous[1] + 1})" if previous is not None else ""
        what = f"{self.metric} = {value:.4f} at iteration {iteration + 1}{was}"
        logger.info("New best %s: wrote model_best.pth", what)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = tuple(state["best"]) if state.get("best") is not None else None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"BestCheckpointer(metric={self.metric!r}, mode={self.mode!r}: checkpoints/model_best.pth)"


class PeriodicWriter(HookBase):
    """Calls each writer every ``period`` iterations and at the end (other ranks than 0 get no writers, but
    still check their losses at each period); with ``first_step=True`` also after the run's first step (the
    terminal's, so that a run speaks from step 1). A write that fails (a full disk) stops training with one
    paragraph naming the file, the free space and the checkpoint to resume from."""

    def __init__(self, writers: Sequence[EventWriter], period: int = 20, first_step: bool = False) -> None:
        self.writers = list(writers)
        self.period = period
        self.first_step = first_step

    def before_train(self) -> None:
        for writer in self.writers:
            self._call(writer, writer.open, self.trainer.start_iter)

    def after_step(self) -> None:
        next_iter = self.trainer.iter + 1
        first = self.first_step and self.trainer.iter == self.trainer.start_iter
        if first or next_iter % self.period == 0 or next_iter == self.trainer.max_iter:
            # the one collective per log period: logged values are means over ranks; a diverged loss stops here
            self.trainer.average_over_ranks_and_check_finite()
            self._write()

    def after_train(self) -> None:
        # when training stops on an error already (perhaps this same full disk), that error is the one shown:
        # each writer still gets its last write and its close, and what they raise is dropped
        stopping = self.trainer.failure is not None
        errors: list[TrainingError] = []
        for method in ("write", "close"):
            for writer in self.writers:
                try:
                    self._call(writer, getattr(writer, method), *([self.trainer.storage] if method == "write" else []))
                except TrainingError as e:
                    errors.append(e)
        if errors and not stopping:
            raise errors[0]

    def _write(self) -> None:
        for writer in self.writers:
            self._call(writer, writer.write, self.trainer.storage)

    def _call(self, writer: EventWriter, method: Any, *args: Any) -> None:
        try:
            method(*args)
        except OSError as e:
            path = e.filename if isinstance(e.filename, str) else writer.path or os.getcwd()
            checkpointer = getattr(self.trainer, "checkpointer", None)  # a bare TrainerBase has none
            hint = checkpointer.write_error_hint() if checkpointer is not None else "Free some space."
            raise TrainingError(describe_write_error(e, path) + ".", hint=hint) from e

    def __repr__(self) -> str:
        names = ", ".join(type(w).__name__ for w in self.writers)
        first = ", and after the first step" if self.first_step else ""
        return f"PeriodicWriter(period={self.period}{first}, writers=[{names}])"


def save_training_state(trainer: HookTrainer, name: str, tag_last: bool = True) -> None:
    """Write ``checkpoints/<name>.pth`` with everything an exact resume needs, as of the iteration that just
    ran, hooks' own state included (those with ``state_dict``). A collective: every rank joins (losses are
    checked, RNG states gathered); rank 0 writes. Its ``iteration`` is that iteration's index (see
    :mod:`lazytrain.iterations`)."""
    trainer.average_over_ranks_and_check_finite()  # never save a diverged state
    with trainer.storage.working(f"saving checkpoint {name}"):  # a large save is one long call: not a hang
        rng_states = comm.all_gather(get_rng_state())
        hook_states = {type(h).__name__: h.state_dict() for h in trainer.hooks if hasattr(h, "state_dict")}
        require_checkpointer(trainer).save(
            name,
            tag_last=tag_last,
            hooks=hook_states,
            iteration=last_iteration_run(trainer.iter, trainer.start_iter, trainer.max_iter),
            rng_states=rng_states,
            config=trainer.config_yaml,
            num_threads=trainer.num_threads,
            lazytrain_version=__version__,
        )


def require_checkpointer(trainer: HookTrainer) -> Checkpointer:
    """``trainer.checkpointer``, which the hooks that save need (build_trainer always makes one)."""
    checkpointer = trainer.checkpointer
    assert checkpointer is not None, "the checkpoint hooks need trainer.checkpointer (build_trainer makes it)"
    return checkpointer


def _due_before_the_end(trainer: HookTrainer, period: int) -> bool:
    """Whether the iteration that just ran completes a ``period`` (0: never) and is not the last one (what
    happens at the end is each hook's ``after_train``)."""
    next_iter = trainer.iter + 1
    return period > 0 and next_iter % period == 0 and next_iter < trainer.max_iter
