"""Building a run from its config: device and seeds, the model (DDP-wrapped in a process group), optimizer,
loaders, LR schedule, evaluator, checkpointer and hooks, handed to the :class:`Trainer`."""

from __future__ import annotations

import fnmatch
import inspect
import logging
import os
import random
import time
from typing import Any, Optional

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .. import comm
from ..checkpoint import Checkpointer
from ..compile_off import disable_marked_methods
from ..config import LazyConfig, instantiate
from ..config.lazy import TARGET_KEY, locate, target_signature
from ..errors import ConfigError, did_you_mean
from ..fileio import format_bytes
from .hook_list import build_hooks
from .lr import LRMultiplier
from .memory import MemorySettings, apply_memory_settings
from .trainer import Trainer, make_grad_scaler

logger = logging.getLogger(__name__)


def announce_compile(compiled: torch.nn.Module, settings: str) -> None:
    """Log when the compiled module's first call starts compiling, and how long that call took: torch.compile
    works in that call, for tens of seconds on 2 cores, and after "Starting training" silence reads as a hang."""
    started: list[float] = []

    def before(module: torch.nn.Module, args: Any) -> None:
        pre.remove()
        logger.info("Compiling the model with torch.compile (%s): the first step waits for it.", settings)
        started.append(time.perf_counter())

    def after(module: torch.nn.Module, args: Any, output: Any) -> None:
        post.remove()
        seconds = time.perf_counter() - started[0]
        logger.info("Compiled: the first forward pass took %.1f s, compiling included.", seconds)

    pre = compiled.register_forward_pre_hook(before)
    post = compiled.register_forward_hook(after)


__all__ = [
    "build_ema",
    "build_evaluation",
    "build_loader",
    "build_model",
    "build_optimizer",
    "build_trainer",
    "freeze_parameters",
    "resolve_device",
    "seed_everything",
    "wrap_ddp",
]


def build_trainer(cfg: DictConfig) -> Trainer:
    """Build model, optimizer, loaders, schedule, evaluator, checkpointer and hooks from ``cfg``."""
    t = cfg.train
    seed_everything(t.seed + comm.get_rank(), t.deterministic)
    device = resolve_device(t.device)
    model = build_model(cfg, device)
    freeze_parameters(model, list(t.freeze))  # before DDP and the optimizer: they see trainable ones only
    memory = apply_memory_settings(model, cfg, device)  # before DDP and compile; state-dict keys unchanged
    log_parameter_counts(model)
    log_memory_settings(memory)
    train_model: torch.nn.Module = model
    if comm.get_world_size() > 1:
        train_model = wrap_ddp(model, device, t.ddp.find_unused_parameters, t.ddp.broadcast_buffers)
    if t.compile.enabled:  # the train step runs the compiled module; checkpoints, eval and export the plain one
        disable_marked_methods(model)  # methods that read files on their first call stay out of the graph
        train_model = torch.compile(train_model, mode=t.compile.mode, backend=t.compile.backend)  # type: ignore[assignment]
        announce_compile(train_model, f"mode={t.compile.mode}, backend={t.compile.backend!r}")
    optimizer = build_optimizer(cfg, model)
    train_loader = build_loader(cfg.dataloader.train, "dataloader.train", device)
    lr_scheduler = None
    if cfg.get("lr_multiplier") is not None:
        multiplier = instantiate(cfg.lr_multiplier, key="lr_multiplier")
        lr_scheduler = LRMultiplier(optimizer, multiplier, t.max_iter)
    evaluator, test_loader = build_evaluation(cfg, device)
    grad_scaler = make_grad_scaler(device, t.amp.enabled, t.amp.dtype)
    ema = build_ema(model, t.ema.decay) if t.ema.enabled else None

    checkpointables: dict[str, Any] = {"optimizer": optimizer}
    if lr_scheduler is not None:
        checkpointables["lr_scheduler"] = lr_scheduler
    if grad_scaler.is_enabled():  # a disabled scaler has no state (and an enabled one refuses an empty one)
        checkpointables["grad_scaler"] = grad_scaler
    if ema is not None:
        checkpointables["ema"] = ema
    if hasattr(train_loader, "state_dict"):
        checkpointables["train_loader"] = train_loader
    checkpointer = Checkpointer(
        model, os.path.join(t.output_dir, "checkpoints"), save_to_disk=comm.is_main_process(), **checkpointables
    )
    trainer = Trainer(
        train_model,
        train_loader,
        optimizer,
        device=device,
        amp_enabled=t.amp.enabled and not memory.autocast,  # with amp.modules, autocast is inside those only
        amp_dtype=t.amp.dtype,
        grad_accum=t.grad_accum,
        clip_max_norm=t.clip_grad.max_norm,
        clip_norm_type=t.clip_grad.norm_type,
        grad_scaler=grad_scaler,
        lr_scheduler=lr_scheduler,
        checkpointer=checkpointer,
        evaluator=evaluator,
        test_loader=test_loader,
        ema=ema,
        cfg=cfg,
        config_yaml=LazyConfig.to_yaml(cfg, resolve=True),
    )
    trainer.register_hooks(build_hooks(cfg))
    return trainer


def resolve_device(name: str) -> torch.device:
    """``train.device``: "auto" is this rank's GPU when CUDA is there, else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", comm.get_local_gpu())  # the GPU the launcher made current
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


def freeze_parameters(model: torch.nn.Module, patterns: list[str]) -> None:
    """``requires_grad=False`` for every parameter whose name matches one of the glob ``patterns``
    (``train.freeze``); a pattern that matches nothing is a ConfigError with close names."""
    names = [name for name, _ in model.named_parameters()]
    for i, pattern in enumerate(patterns):
        matched = [name for name in names if fnmatch.fnmatchcase(name, pattern)]
        if not matched:
            stem = pattern.rstrip("*.")
            close = did_you_mean(stem, sorted({n.rsplit(".", 1)[0] for n in names} | set(names)))
            raise ConfigError(
                f"the pattern {pattern!r} matches no parameter of {type(model).__name__}.",
                key=f"train.freeze.{i}",
                hint=(close + " " if close else "") + f"Parameter names look like {', '.join(names[:3])}.",
            )
        for name, param in model.named_parameters():
            if name in matched:
                param.requires_grad_(False)


def log_parameter_counts(model: torch.nn.Module) -> None:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    logger.info(
        "Model %s: %s parameters (%s trainable, %s frozen), %s",
        type(model).__name__,
        f"{total:,}",
        f"{trainable:,}",
        f"{total - trainable:,}",
        format_bytes(size, decimals=1),
    )


def log_memory_settings(memory: MemorySettings) -> None:
    for names, what in (
        (memory.checkpointed, "Activation checkpointing (recomputed in backward)"),
        (memory.autocast, "Autocast inside (the rest in fp32)"),
        (memory.held_norm_layers, "Norm layers of frozen modules held in eval mode"),
    ):
        if names:
            logger.info("%s: %s", what, ", ".join(names))


def build_ema(model: torch.nn.Module, decay: float) -> AveragedModel:
    """torch's AveragedModel with an exponential moving average of the weights and buffers (``train.ema``),
    on the model's device and in its dtype (fp32: AMP keeps fp32 weights)."""
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def build_optimizer(cfg: DictConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """``cfg.optimizer`` with ``params`` filled when absent or None: the model's parameters, or ``model=``
    given to a call config such as ``params=L(param_groups)(weight_decay_norm=0.0)`` (absent or None)."""
    optimizer_cfg = cfg.optimizer.copy()
    params = optimizer_cfg.get("params")
    if params is None:
        optimizer_cfg.params = [p for p in model.parameters() if p.requires_grad]
    elif isinstance(params, DictConfig) and TARGET_KEY in params and params.get("model") is None:
        params.model = model
    optimizer = instantiate(optimizer_cfg, key="optimizer")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ConfigError(f"'optimizer' must build a torch.optim.Optimizer, got {type(optimizer).__name__}.")
    return optimizer


def build_loader(loader_cfg: Any, key: str, device: torch.device) -> Any:
    """Instantiate a loader config whose batches go to ``device``. A loader whose ``pin_memory`` defaults to
    None ("auto", as lazytrain's) and is not set gets ``pin_memory=(device is CUDA)``: pinning costs time and
    a CUDA context per process, and pays only when batches are copied to a GPU."""
    if isinstance(loader_cfg, DictConfig) and TARGET_KEY in loader_cfg and _pin_memory_is_auto(loader_cfg):
        loader_cfg = loader_cfg.copy()
        loader_cfg.pin_memory = device.type == "cuda"
    return instantiate(loader_cfg, key=key)


def _pin_memory_is_auto(loader_cfg: DictConfig) -> bool:
    if loader_cfg.get("pin_memory") is not None:
        return False
    target = loader_cfg[TARGET_KEY]
    signature = target_signature(locate(target) if isinstance(target, str) else target)
    param = signature.parameters.get("pin_memory") if signature is not None else None
    return param is not None and param.default is None


def build_evaluation(cfg: DictConfig, device: torch.device) -> tuple[Optional[Any], Optional[Any]]:
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
    test_loader = build_loader(test_cfg, "dataloader.test", device)
    return instantiate(cfg.evaluator, key="evaluator"), test_loader
