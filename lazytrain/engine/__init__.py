"""The training engine: TrainerBase and its hooks, the train step, and building a run from a config.

Where a batch goes, in three files: ``lazytrain/data.py`` (``TrainLoader`` yields it), ``trainer.py``
(``Trainer.run_step``: to the device, the model's forward returns the losses, backward, optimizer step) and
``train_loop.py`` (``TrainerBase.train``: the loop and the hooks around each step).
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .build import build_trainer
    from .hook_list import build_hooks, default_hooks
    from .hooks import (
        BestCheckpointer,
        EMAHook,
        EvalHook,
        IterationTimer,
        LRScheduler,
        PeriodicCheckpointer,
        PeriodicWriter,
    )
    from .lr import LRMultiplier, WarmupParamScheduler
    from .preemption import EXIT_PREEMPTED, GracefulStop, Preempted
    from .profiler import ProfilerHook
    from .resume import resume_or_load
    from .run import evaluate_main, prepare_output_dir, save_run_config, train_main
    from .settings import TRAIN_DEFAULTS, add_train_defaults, load_run_config
    from .train_loop import HookBase, TrainerBase
    from .trainer import Trainer

__all__ = [
    "EXIT_PREEMPTED",
    "TRAIN_DEFAULTS",
    "BestCheckpointer",
    "EMAHook",
    "EvalHook",
    "GracefulStop",
    "HookBase",
    "IterationTimer",
    "LRMultiplier",
    "LRScheduler",
    "PeriodicCheckpointer",
    "PeriodicWriter",
    "Preempted",
    "ProfilerHook",
    "Trainer",
    "TrainerBase",
    "WarmupParamScheduler",
    "add_train_defaults",
    "build_hooks",
    "build_trainer",
    "default_hooks",
    "evaluate_main",
    "load_run_config",
    "prepare_output_dir",
    "resume_or_load",
    "save_run_config",
    "train_main",
]

# where each public name is defined: the package imports a module (and torch) only when one of its names is
# used, so `lazytrain config` of a config that imports nothing heavy does not pay for torch (PEP 562)
_HOME = {
    "BestCheckpointer": ".hooks",
    "EMAHook": ".hooks",
    "EXIT_PREEMPTED": ".preemption",
    "EvalHook": ".hooks",
    "GracefulStop": ".preemption",
    "HookBase": ".train_loop",
    "IterationTimer": ".hooks",
    "LRMultiplier": ".lr",
    "LRScheduler": ".hooks",
    "PeriodicCheckpointer": ".hooks",
    "PeriodicWriter": ".hooks",
    "Preempted": ".preemption",
    "ProfilerHook": ".profiler",
    "TRAIN_DEFAULTS": ".settings",
    "Trainer": ".trainer",
    "TrainerBase": ".train_loop",
    "WarmupParamScheduler": ".lr",
    "add_train_defaults": ".settings",
    "build_hooks": ".hook_list",
    "build_trainer": ".build",
    "default_hooks": ".hook_list",
    "evaluate_main": ".run",
    "load_run_config": ".settings",
    "prepare_output_dir": ".run",
    "resume_or_load": ".resume",
    "save_run_config": ".run",
    "train_main": ".run",
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name], __name__), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value
