"""The hook list of a run, in the order it runs: the one place where a run's hooks are chosen (and what
``lazytrain hooks`` prints)."""

from __future__ import annotations

import os
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from .. import comm
from ..config import LazyConfig, instantiate
from ..errors import ConfigError
from ..events import EventWriter, JSONWriter, TensorboardWriter, TerminalWriter
from .hook_api import HookBase
from .hooks import (
    BestCheckpointer,
    EMAHook,
    EvalHook,
    IterationTimer,
    LRScheduler,
    PeriodicCheckpointer,
    PeriodicWriter,
)
from .preemption import GracefulStop
from .profiler import ProfilerHook
from .watchdog import HangWatchdog

__all__ = ["build_hooks", "check_hook_order", "default_hooks", "key_settings"]


def default_hooks(cfg: DictConfig) -> list[HookBase]:
    """The standard hooks for the ``train`` settings: timer, EMA (``train.ema``), LR schedule, the terminal
    writer, evaluation, best checkpoint (``train.best``), checkpoints, the file writers (metrics.jsonl and
    TensorBoard; rank 0 alone gets writers), profiler
    (``train.profile``)."""
    before_files, files_on = _default_hooks_around_the_files(cfg)
    return [*before_files, *files_on]


def _default_hooks_around_the_files(cfg: DictConfig) -> tuple[list[HookBase], list[HookBase]]:
    """The default hooks split before the file writers' PeriodicWriter: a config's hooks go between, so what
    they put at an iteration is in that iteration's row of metrics.jsonl (after the writer, it came one log
    period late, as a second row of an iteration already written)."""
    t = cfg.train
    terminal: list[EventWriter] = []
    files: list[EventWriter] = []
    if comm.is_main_process():
        terminal = [TerminalWriter(t.max_iter, window=t.log_period)]
        files = [
            JSONWriter(os.path.join(t.output_dir, "metrics.jsonl")),
            TensorboardWriter(t.output_dir, LazyConfig.to_yaml(cfg, resolve=True), key_settings(cfg)),
        ]
    hooks: list[Optional[HookBase]] = [
        HangWatchdog(t.hang_timeout) if t.hang_timeout > 0 else None,
        IterationTimer(),
        EMAHook(t.ema.decay) if t.ema.enabled else None,
        LRScheduler(),
        # the terminal line before the evaluation of its iteration (which prints the results table), and after
        # the first step as well; the files after evaluation, so metrics.jsonl has one row per iteration
        PeriodicWriter(terminal, period=t.log_period, first_step=True),
        # evaluation before the periodic checkpoint: a checkpoint taken at an evaluation's iteration holds the
        # best value that evaluation set, so a resume from it never lets a worse score replace model_best.pth
        EvalHook(t.eval_period),
        BestCheckpointer(t.best.metric, t.best.mode) if t.best.metric else None,
        PeriodicCheckpointer(t.checkpoint_period, keep_last=t.keep_last),
    ]
    files_on: list[Optional[HookBase]] = [
        PeriodicWriter(files, period=t.log_period),
        ProfilerHook(t.profile.start_iter, t.profile.num_iters, t.output_dir) if t.profile.enabled else None,
    ]
    return [h for h in hooks if h is not None], [h for h in files_on if h is not None]


_KEY_SETTINGS = (
    "model._target_",
    "optimizer._target_",
    "optimizer.lr",
    "optimizer.weight_decay",
    "dataloader.train.batch_size",
)


def key_settings(cfg: DictConfig) -> dict[str, Any]:
    """A few settings that tell runs apart, for TensorBoard's HParams tab."""
    t = cfg.train
    out: dict[str, Any] = {
        "max_iter": t.max_iter,
        "seed": t.seed,
        "amp": t.amp.dtype if t.amp.enabled else "off",
        "grad_accum": t.grad_accum,
        "ema": t.ema.decay if t.ema.enabled else "off",
    }
    for key in _KEY_SETTINGS:
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None:
            out[key.replace("._target_", "")] = value if isinstance(value, (int, float, str, bool)) else _name(value)
    return out


def _name(target: Any) -> str:
    return f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', target)}".lstrip(".")


def build_hooks(cfg: DictConfig) -> list[HookBase]:
    """Default hooks with the config's ``hooks`` before the file writers (metrics.jsonl, TensorBoard) and the
    profiler, then :class:`GracefulStop` (last, so that the step it stops after has run every hook); with
    ``train.hooks_replace=True`` only the config's hooks. A hook that reads what another one sets (its
    ``runs_after``: BestCheckpointer reads EvalHook's evaluation) must come after it: a list that breaks that
    is a ConfigError (see :func:`check_hook_order`)."""
    user = instantiate(cfg.get("hooks") or [], key="hooks")
    if isinstance(user, dict):
        user = list(user.values())
    for i, hook in enumerate(user):
        if not isinstance(hook, HookBase):
            raise ConfigError(
                f"a hook must subclass lazytrain.engine.HookBase, got {type(hook).__name__}.", key=f"hooks.{i}"
            )
    if cfg.train.hooks_replace:
        check_hook_order(user, first_user_hook=0)
        return user
    before_files, files_on = _default_hooks_around_the_files(cfg)
    hooks = [*before_files, *user, *files_on, GracefulStop()]
    check_hook_order(hooks, first_user_hook=len(before_files))
    return hooks


def check_hook_order(hooks: list[HookBase], first_user_hook: int = 0) -> None:
    """Raise a ConfigError when a hook comes before a hook it ``runs_after`` (or without one): it would read
    nothing, silently. ``first_user_hook``: the position of the config's ``hooks[0]`` in ``hooks``, to name the
    config key."""
    for i, hook in enumerate(hooks):
        for needed in hook.runs_after:
            if any(isinstance(h, needed) for h in hooks[:i]):
                continue
            where = "after it" if any(isinstance(h, needed) for h in hooks[i:]) else "and there is none"
            key = f"hooks.{i - first_user_hook}" if i >= first_user_hook else "hooks"
            raise ConfigError(
                f"{type(hook).__name__} reads what {needed.__name__} sets, so it must come after {needed.__name__} in "
                f"the hook list, but it is at position {i} {where} (`lazytrain hooks CONFIG` prints the list).",
                key=key,
                hint=f"Put L({needed.__name__})(...) before {type(hook).__name__} in hooks.",
            )
