"""The training engine: TrainerBase and its hooks, the train step, and building a run from a config."""

from .defaults import build_trainer, default_hooks, evaluate_main, train_main
from .hooks import EvalHook, IterationTimer, LRScheduler, PeriodicCheckpointer, PeriodicWriter
from .lr import LRMultiplier, WarmupParamScheduler
from .train_loop import HookBase, TrainerBase
from .trainer import Trainer

__all__ = [
    "EvalHook",
    "HookBase",
    "IterationTimer",
    "LRMultiplier",
    "LRScheduler",
    "PeriodicCheckpointer",
    "PeriodicWriter",
    "Trainer",
    "TrainerBase",
    "WarmupParamScheduler",
    "build_trainer",
    "default_hooks",
    "evaluate_main",
    "train_main",
]
