"""From a config to a run: `train` defaults, required keys, the default hook list, building the trainer,
resuming, and the train / eval entry points used by the CLI and the launcher."""

from __future__ import annotations

import inspect
import json
import logging
import os
import random
from typing import Any, Optional

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from .. import comm
from ..checkpoint import Checkpointer, set_rng_state
from ..config import LazyConfig, instantiate
from ..config.lazy_config import resolved_copy, source_line
from ..data import resolve_pin_memory
from ..errors import ConfigError, did_you_mean
from ..evaluation import format_results, inference_on_dataset
from ..events import JSONWriter, TensorboardWriter, TerminalWriter
from .hooks import EvalHook, IterationTimer, LRScheduler, PeriodicCheckpointer, PeriodicWriter, flatten_results
from .logger import setup_logger
from .lr import LRMultiplier
from .train_loop import HookBase
from .trainer import Trainer, autocast_context

__all__ = [
    "TRAIN_DEFAULTS",
    "add_train_defaults",
    "build_trainer",
    "check_required",
    "default_hooks",
    "evaluate_main",
    "train_main",
]

logger = logging.getLogger("lazytrain")

TRAIN_DEFAULTS: dict[str, Any] = dict(
    output_dir=None,  # None: output/<config file name>
    max_iter="???",
    seed=0,
    device="auto",
    amp=dict(enabled=False, dtype="bf16"),
    grad_accum=1,
    clip_grad=dict(max_norm=None, norm_type=2.0),
    log_period=20,
    checkpoint_period=1000,
    keep_last=3,
    eval_period=0,
    init_checkpoint="",
    ddp=dict(find_unused_parameters=False, broadcast_buffers=False),
    deterministic=False,
    hooks_replace=False,
)


def add_train_defaults(cfg: DictConfig, config_path: Optional[str] = None) -> DictConfig:
    """Fill every missing ``train.*`` key with its default (in place); a misspelled key is an error."""
    user = cfg.get("train")
    if user is None:
        user = OmegaConf.create({}, flags={"allow_objects": True})
    if not isinstance(user, DictConfig):
        raise ConfigError(
            "'train' must be a dict of run settings.", key="train", hint="e.g. train = dict(max_iter=100)"
        )
    _check_known(user, TRAIN_DEFAULTS, "train", cfg)
    merged = OmegaConf.merge(OmegaConf.create(TRAIN_DEFAULTS, flags={"allow_objects": True}), user)
    if merged.output_dir is None:
        name = os.path.splitext(os.path.basename(config_path))[0] if config_path else "run"
        merged.output_dir = os.path.join("output", name)
    cfg.train = merged
    return cfg


def _check_known(user: DictConfig, defaults: dict[str, Any], prefix: str, root: DictConfig) -> None:
    for key in user:
        if key not in defaults:
            file, line = source_line(root, str(key))
            raise ConfigError(
                "unknown train setting.",
                file=file,
                line=line,
                key=f"{prefix}.{key!s}",
                hint=did_you_mean(str(key), defaults) or f"Known settings: {', '.join(defaults)}.",
            )
        if isinstance(defaults[key], dict) and isinstance(user._get_node(key), DictConfig):
            _check_known(user[key], defaults[key], f"{prefix}.{key}", root)


_REQUIRED = {
    "model": "model = L(MyModel)(...): the torch.nn.Module to train",
    "optimizer": "optimizer = L(torch.optim.AdamW)(lr=1e-3): its params are filled with the model's",
    "dataloader.train": "dataloader = dict(train=L(build_train_loader)(dataset=..., batch_size=...))",
    "train.max_iter": "train.max_iter = 1000 (or the override train.max_iter=1000)",
}


def check_required(cfg: DictConfig, keys: tuple[str, ...] = tuple(_REQUIRED)) -> None:
    """A ConfigError naming the first required key the config lacks and what to add (or an unknown
    ``train`` setting, e.g. one added with ``+train.max_iters=...``)."""
    if isinstance(cfg.get("train"), DictConfig):
        _check_known(cfg.train, TRAIN_DEFAULTS, "train", cfg)
    for key in keys:
        parent_key, _, leaf = key.rpartition(".")
        parent = OmegaConf.select(cfg, parent_key, default=None) if parent_key else cfg
        if not isinstance(parent, DictConfig) or leaf not in parent or OmegaConf.is_missing(parent, leaf):
            raise ConfigError("this config has no value for this required key.", key=key, hint=f"Add {_REQUIRED[key]}.")


def default_hooks(cfg: DictConfig) -> list[HookBase]:
    """The hook list of a run, in the order it runs: the one place where a run's hooks are chosen."""
    t = cfg.train
    writers = []
    if comm.is_main_process():
        writers = [
            TerminalWriter(t.max_iter, window=t.log_period),
            JSONWriter(os.path.join(t.output_dir, "metrics.jsonl")),
            TensorboardWriter(t.output_dir),
        ]
    hooks: list[HookBase] = [
        IterationTimer(),
        LRScheduler(),
        PeriodicCheckpointer(t.checkpoint_period, keep_last=t.keep_last),
        EvalHook(t.eval_period),
        PeriodicWriter(writers, period=t.log_period),
    ]
    return hooks


def build_hooks(cfg: DictConfig) -> list[HookBase]:
    """Default hooks then the config's ``hooks`` (or only those with ``train.hooks_replace=True``)."""
    user = instantiate(cfg.get("hooks") or [], key="hooks")
    if isinstance(user, dict):
        user = list(user.values())
    for i, hook in enumerate(user):
        if not isinstance(hook, HookBase):
            raise ConfigError(
                f"a hook must subclass lazytrain.engine.HookBase, got {type(hook).__name__}.", key=f"hooks.{i}"
            )
    return user if cfg.train.hooks_replace else [*default_hooks(cfg), *user]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", comm.get_local_rank())
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("CUDA is not available on this machine.", key="train.device", hint="Use train.device=cpu.")
    return device


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def build_model(cfg: DictConfig, device: torch.device) -> torch.nn.Module:
    model = instantiate(cfg.model, key="model")
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"'model' must build a torch.nn.Module, but built a {type(model).__name__}.", key="model")
    return model.to(device)


def wrap_ddp(
    model: torch.nn.Module, device: torch.device, find_unused_parameters: bool, broadcast_buffers: bool
) -> torch.nn.Module:
    """DistributedDataParallel with ``train.ddp`` settings. torch 2.13 renamed ``broadcast_buffers`` to
    ``forward_sync_buffers`` (same meaning per step); older versions only know the old name."""
    ddp = torch.nn.parallel.DistributedDataParallel
    sync_buffers: dict[str, Any] = (
        {"forward_sync_buffers": broadcast_buffers}
        if "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters
        else {"broadcast_buffers": broadcast_buffers}
    )
    return ddp(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=find_unused_parameters,
        **sync_buffers,
    )


def build_trainer(cfg: DictConfig) -> Trainer:
    """Build model, optimizer, loaders, schedule, evaluator, checkpointer and hooks from ``cfg``."""
    t = cfg.train
    seed_everything(t.seed + comm.get_rank(), t.deterministic)
    device = resolve_device(t.device)
    model = build_model(cfg, device)
    train_model: torch.nn.Module = model
    if comm.get_world_size() > 1:
        train_model = wrap_ddp(model, device, t.ddp.find_unused_parameters, t.ddp.broadcast_buffers)

    optimizer_cfg = cfg.optimizer.copy()
    params = optimizer_cfg.get("params")
    if params is None:
        optimizer_cfg.params = list(model.parameters())
    elif isinstance(params, DictConfig) and "_target_" in params and "model" not in params:
        params.model = model  # e.g. params=L(param_groups)(weight_decay_norm=0.0): groups built from the model
    optimizer = instantiate(optimizer_cfg, key="optimizer")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ConfigError(f"'optimizer' must build a torch.optim.Optimizer, got {type(optimizer).__name__}.")
    train_loader = instantiate(cfg.dataloader.train, key="dataloader.train")
    resolve_pin_memory(train_loader, device)

    trainer = Trainer(
        train_model,
        train_loader,
        optimizer,
        device=device,
        amp_enabled=t.amp.enabled,
        amp_dtype=t.amp.dtype,
        grad_accum=t.grad_accum,
        clip_max_norm=t.clip_grad.max_norm,
        clip_norm_type=t.clip_grad.norm_type,
        cfg=cfg,
    )
    if cfg.get("lr_multiplier") is not None:
        multiplier = instantiate(cfg.lr_multiplier, key="lr_multiplier")
        trainer.lr_scheduler = LRMultiplier(optimizer, multiplier, t.max_iter)
    trainer.evaluator, trainer.test_loader = build_evaluation(cfg, device)
    checkpointables: dict[str, Any] = {"optimizer": optimizer}
    if trainer.lr_scheduler is not None:
        checkpointables["lr_scheduler"] = trainer.lr_scheduler
    if trainer.grad_scaler is not None:
        checkpointables["grad_scaler"] = trainer.grad_scaler
    if hasattr(train_loader, "state_dict"):
        checkpointables["train_loader"] = train_loader
    trainer.checkpointer = Checkpointer(
        model,
        os.path.join(t.output_dir, "checkpoints"),
        keep_last=t.keep_last,
        save_to_disk=comm.is_main_process(),
        **checkpointables,
    )
    trainer.config_yaml = LazyConfig.to_yaml(cfg, resolve=True)
    trainer.register_hooks(build_hooks(cfg))
    return trainer


def build_evaluation(cfg: DictConfig, device: torch.device) -> tuple[Any, Any]:
    """``(evaluator, test_loader)`` from the config, or ``(None, None)`` when it has no evaluator; the test
    batches will go to ``device``."""
    if cfg.get("evaluator") is None:
        return None, None
    test_cfg = OmegaConf.select(cfg, "dataloader.test", default=None)
    if test_cfg is None:
        raise ConfigError(
            "the config has an evaluator but no test loader.",
            key="dataloader.test",
            hint="Add dataloader.test = L(build_test_loader)(dataset=..., batch_size=...).",
        )
    test_loader = instantiate(test_cfg, key="dataloader.test")
    resolve_pin_memory(test_loader, device)
    return instantiate(cfg.evaluator, key="evaluator"), test_loader


def resume_or_load(trainer: Trainer, cfg: DictConfig, resume: bool) -> int:
    """Load ``last_checkpoint`` (with ``resume``) or ``train.init_checkpoint`` (weights only); return the
    iteration to start from."""
    checkpointer = trainer.checkpointer
    if resume and checkpointer.has_checkpoint():
        path = checkpointer.get_checkpoint_file()
        extra = checkpointer.load(path)
        rng_states = extra.get("rng_states") or []
        rank = comm.get_rank()
        if len(rng_states) == comm.get_world_size():
            set_rng_state(rng_states[rank])
        else:
            logger.warning(
                "the checkpoint holds RNG states of %d processes, this run has %d: RNG not restored.",
                len(rng_states),
                comm.get_world_size(),
            )
        if extra.get("num_threads") not in (None, torch.get_num_threads()):
            logger.warning(
                "the checkpoint was written with %s CPU threads and this run uses %d: CPU kernels may round "
                "differently, so losses can differ in the last bits from an uninterrupted run.",
                extra["num_threads"],
                torch.get_num_threads(),
            )
        logger.info("Resumed from %s at iteration %d", path, extra["iteration"] + 1)
        return int(extra["iteration"]) + 1
    if resume:
        logger.warning("--resume: no checkpoint in %s; starting from scratch.", checkpointer.save_dir)
    elif checkpointer.has_checkpoint():
        logger.warning(
            "%s already holds checkpoints of an earlier run; this run starts from scratch and will replace "
            "last_checkpoint (add --resume to continue that run, or choose another --output-dir).",
            checkpointer.save_dir,
        )
    if cfg.train.init_checkpoint:
        checkpointer.load(cfg.train.init_checkpoint, checkpointables=[])
    return 0


def prepare_output_dir(cfg: DictConfig) -> None:
    """Create ``output_dir``, the logger (rank 0 writes log.txt) and the resolved ``config.yaml``."""
    out = cfg.train.output_dir
    if comm.is_main_process():
        os.makedirs(out, exist_ok=True)
    setup_logger(out if comm.is_main_process() else None, rank=comm.get_rank())
    if comm.is_main_process():
        LazyConfig.save(resolved_copy(cfg), os.path.join(out, "config.yaml"))


def train_main(cfg: DictConfig, resume: bool = False, eval_only: bool = False) -> dict[str, Any]:
    """Train (or with ``eval_only`` only evaluate) the config. Returns, after training, the newest
    ``(value, iteration)`` of every scalar the run put (losses, lr, evaluation results); with ``eval_only``,
    the evaluator's results."""
    check_required(cfg)
    prepare_output_dir(cfg)
    if comm.get_world_size() > 1:
        logger.info("Process group: %d processes, backend %s.", comm.get_world_size(), comm.get_backend())
    trainer = build_trainer(cfg)
    logger.info("Hooks: %s", ", ".join(repr(h) for h in trainer.hooks))
    start_iter = resume_or_load(trainer, cfg, resume)
    if eval_only:
        if start_iter == 0 and not cfg.train.init_checkpoint:
            logger.warning("--eval-only with no checkpoint loaded: evaluating freshly initialised weights.")
        return trainer.test()
    trainer.train(start_iter, cfg.train.max_iter)
    return dict(trainer.storage.latest()) if trainer.storage else {}


def evaluate_main(cfg: DictConfig, weights: str) -> dict[str, Any]:
    """Load ``weights`` into the config's model and evaluate it; results go to the log and metrics.jsonl."""
    check_required(cfg, ("model",))
    if cfg.get("evaluator") is None:
        raise ConfigError("this config has no evaluator.", key="evaluator", hint="Add evaluator = L(MyEvaluator)(...).")
    prepare_output_dir(cfg)
    seed_everything(cfg.train.seed + comm.get_rank(), cfg.train.deterministic)
    device = resolve_device(cfg.train.device)
    model = build_model(cfg, device)
    extra = Checkpointer(model, save_to_disk=False).load(weights, checkpointables=[])
    evaluator, test_loader = build_evaluation(cfg, device)
    autocast = autocast_context(device, cfg.train.amp.enabled, cfg.train.amp.dtype)
    results = inference_on_dataset(model, test_loader, evaluator, device=device, autocast=autocast)
    iteration = int(extra.get("iteration", -1))
    logger.info("Evaluation of %s (iteration %d):\n%s", weights, iteration, format_results(results))
    if comm.is_main_process():
        record = {"iteration": iteration, "weights": weights, **flatten_results(results)}
        with open(os.path.join(cfg.train.output_dir, "metrics.jsonl"), "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
    return results
