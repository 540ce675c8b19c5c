"""The hook list of a run, in the order it runs: the one place where a run's hooks are chosen (and what
``lazytrain hooks`` prints)."""

from __future__ import annotations

import os
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from .. import comm
from ..config import LazyConfig, instantiate
from ..errors import ConfigError
from ..events import JSONWriter, TensorboardWriter, TerminalWriter
from .hooks import (
    BestCheckpointer,
    EMAHook,
    EvalHook,
    IterationTimer,
    LRScheduler,
    PeriodicCheckpointer,
    PeriodicWriter,
)
from .memory import memory_settings_rows
from .preemption import GracefulStop
from .profiler import ProfilerHook
from .train_loop import HookBase
from .watchdog import HangWatchdog

__all__ = ["build_hooks", "default_hooks", "run_settings"]


def default_hooks(cfg: DictConfig) -> list[HookBase]:
    """The standard hooks for the ``train`` settings: timer, EMA (``train.ema``), LR schedule, evaluation,
    best checkpoint (``train.best``), checkpoints, writers (rank 0 alone gets writers), profiler
    (``train.profile``)."""
    t = cfg.train
    writers = []
    if comm.is_main_process():
        writers = [
            TerminalWriter(t.max_iter, window=t.log_period),
            JSONWriter(os.path.join(t.output_dir, "metrics.jsonl")),
            TensorboardWriter(t.output_dir, LazyConfig.to_yaml(cfg, resolve=True), key_settings(cfg)),
        ]
    hooks: list[Optional[HookBase]] = [
        HangWatchdog(t.hang_timeout) if t.hang_timeout > 0 else None,
        IterationTimer(),
        EMAHook(t.ema.decay) if t.ema.enabled else None,
        LRScheduler(),
        # evaluation before the periodic checkpoint: a checkpoint taken at an evaluation's iteration holds the
        # best value that evaluation set, so a resume from it never lets a worse score replace model_best.pth
        EvalHook(t.eval_period),
        BestCheckpointer(t.best.metric, t.best.mode) if t.best.metric else None,
        PeriodicCheckpointer(t.checkpoint_period, keep_last=t.keep_last),
        PeriodicWriter(writers, period=t.log_period),
        ProfilerHook(t.profile.start_iter, t.profile.num_iters, t.output_dir) if t.profile.enabled else None,
    ]
    return [h for h in hooks if h is not None]


def key_settings(cfg: DictConfig) -> dict[str, Any]:
    """A few settings that tell runs apart, for TensorBoard's HParams tab."""
    t = cfg.train
    out: dict[str, Any] = {"max_iter": t.max_iter, "seed": t.seed, "amp": t.amp.dtype if t.amp.enabled else "off",
                           "grad_accum": t.grad_accum, "ema": t.ema.decay if t.ema.enabled else "off"}  # fmt: skip
    for key in ("model._target_", "optimizer._target_", "optimizer.lr", "optimizer.weight_decay",
                "dataloader.train.batch_size"):  # fmt: skip
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None:
            out[key.replace("._target_", "")] = value if isinstance(value, (int, float, str, bool)) else _name(value)
    return out


def _name(target: Any) -> str:
    return f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', target)}".lstrip(".")


def run_settings(cfg: DictConfig) -> list[tuple[str, str]]:
    """``(key, what it does)`` for the run settings that are no hook but change training (what ``lazytrain
    hooks`` prints after the hooks): freezing (with the parameters its patterns match: the model is built,
    on the CPU), torch.compile, the weights training starts from, and the EMA."""
    t = cfg.train
    rows: list[tuple[str, str]] = []
    patterns = list(t.freeze)
    if patterns:
        import torch

        from .build import build_model, freeze_parameters

        model = build_model(cfg, torch.device("cpu"))
        freeze_parameters(model, patterns)  # a pattern that matches nothing is a ConfigError, as in training
        params = list(model.named_parameters())
        frozen = [(name, p) for name, p in params if not p.requires_grad]
        total = sum(p.numel() for _, p in params)
        rows.append(("train.freeze", f"{patterns}: {len(frozen)} of {len(params)} parameter tensors, "
                     f"{sum(p.numel() for _, p in frozen):,} of {total:,} parameters frozen"))  # fmt: skip
    else:
        rows.append(("train.freeze", "[] (every parameter trains)"))
    c = t.compile
    rows.append(("train.compile", f"on (mode={c.mode}, backend={c.backend!r})" if c.enabled else "off"))
    rename = [list(pair) for pair in t.init_rename]
    if t.init_checkpoint:
        rows.append(("train.init_checkpoint", f"{t.init_checkpoint} (its model weights; a --resume loads all instead)"))
        rows.append(
            ("train.init_rename", f"{rename} (regex, replacement) on its keys" if rename else "[] (keys as they are)")
        )
        strict = "True (any key that does not match is an error)" if t.init_strict else "False (the tensors that fit)"
        rows.append(("train.init_strict", strict))
    else:
        rows.append(("train.init_checkpoint", "'' (the model's own initialisation)"))
        unused = " (unused without init_checkpoint)"
        rows += [("train.init_rename", f"{rename}{unused}"), ("train.init_strict", f"{t.init_strict}{unused}")]
    ema = f"on (decay {t.ema.decay}: EMAHook; evaluation uses the average)" if t.ema.enabled else "off"
    rows.append(("train.ema", ema))
    rows += memory_settings_rows(cfg)  # activation checkpointing, amp.modules, held norm layers
    return rows


def build_hooks(cfg: DictConfig) -> list[HookBase]:
    """Default hooks, the config's ``hooks``, then :class:`GracefulStop` (last, so that the step it stops
    after has run every hook); with ``train.hooks_replace=True`` only the config's hooks."""
    user = instantiate(cfg.get("hooks") or [], key="hooks")
    if isinstance(user, dict):
        user = list(user.values())
    for i, hook in enumerate(user):
        if not isinstance(hook, HookBase):
            raise ConfigError(
                f"a hook must subclass lazytrain.engine.HookBase, got {type(hook).__name__}.", key=f"hooks.{i}"
            )
    return user if cfg.train.hooks_replace else [*default_hooks(cfg), *user, GracefulStop()]
