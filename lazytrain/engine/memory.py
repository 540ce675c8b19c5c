"""Memory and fine-tuning settings applied to the built model, before DDP and compile: activation checkpointing
(``train.activation_checkpointing``), autocast inside chosen modules only (``train.amp.modules``), and the norm
layers of frozen modules held in eval mode (``train.freeze_norm_eval``).

None of them changes the module tree: a matched module keeps its place and its class, and gets an instance
``forward`` (or, for a held norm layer, an instance ``train``) that does the extra work. Parameter names and
state-dict keys are the same with and without them, so a checkpoint written with one setting loads without it
and ``train.freeze`` patterns, optimizer groups, resume, eval and export do not see them.
"""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..config.provenance import key_line, set_on_command_line
from ..errors import ConfigError, did_you_mean
from .trainer import amp_torch_dtype, autocast_context

__all__ = [
    "MemorySettings",
    "amp_modules",
    "apply_memory_settings",
    "autocast_modules",
    "checkpoint_modules",
    "hold_frozen_norm_layers",
    "inference_autocast",
    "match_modules",
]


@dataclass
class MemorySettings:
    """What :func:`apply_memory_settings` did: the names of the modules it changed."""

    checkpointed: list[str] = field(default_factory=list)
    autocast: list[str] = field(default_factory=list)
    held_norm_layers: list[str] = field(default_factory=list)


def apply_memory_settings(model: nn.Module, cfg: DictConfig, device: torch.device) -> MemorySettings:
    """The ``train`` settings of this module applied to ``model`` (in place; after ``train.freeze``, before DDP
    and compile). ``train.amp.modules`` applies only with ``train.amp.enabled``; the caller then leaves the
    whole-step autocast off. A pattern that matches no module is a ConfigError naming where it was set."""
    t = cfg.train
    done = MemorySettings()
    if t.freeze_norm_eval:
        done.held_norm_layers = hold_frozen_norm_layers(model, list(t.freeze))
    if t.activation_checkpointing:
        key = "train.activation_checkpointing"
        done.checkpointed = match_modules(model, list(t.activation_checkpointing), key, _where(cfg, key))
        checkpoint_modules(model, done.checkpointed)
    if t.amp.enabled and amp_modules(cfg):
        key = "train.amp.modules"
        done.autocast = match_modules(model, amp_modules(cfg), key, _where(cfg, key))
        autocast_modules(model, done.autocast, device.type, amp_torch_dtype(t.amp.dtype))
    return done


def inference_autocast(model: nn.Module, cfg: DictConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast of ``eval`` / ``predict`` / ``analyze``: with ``train.amp.modules``, autocast inside the
    matching modules of ``model`` (applied here) and no context around the rest; else ``train.amp`` over the
    whole forward (a no-op context without AMP)."""
    amp = cfg.train.amp
    if amp.enabled and amp_modules(cfg):
        key = "train.amp.modules"
        names = match_modules(model, amp_modules(cfg), key, _where(cfg, key))
        autocast_modules(model, names, device.type, amp_torch_dtype(amp.dtype))
        return contextlib.nullcontext()
    return autocast_context(device, amp.enabled, amp.dtype)


def amp_modules(cfg: DictConfig) -> list[str]:
    """``train.amp.modules`` (absent from a ``train.amp`` that an interpolation gives whole: ``[]``)."""
    return list(cfg.train.amp.get("modules") or [])


def _where(cfg: DictConfig, key: str) -> tuple[Optional[str], Optional[int]]:
    if set_on_command_line(cfg, key):
        return "command line", None
    return key_line(cfg, key)


def match_modules(
    model: nn.Module,
    patterns: Sequence[str],
    key: str,
    where: tuple[Optional[str], Optional[int]] = (None, None),
) -> list[str]:
    """The names of the submodules of ``model`` matched by a glob of ``patterns`` (``fnmatch``: ``*`` crosses
    dots), outermost only (a module inside a matched one runs as part of it), in the model's order. A pattern
    that matches no submodule name is a ConfigError at ``key.<i>`` with the close names. A matched container
    that is never called itself (``down``, a ModuleList) stands for the modules in it."""
    names = [name for name, _ in model.named_modules() if name]  # "" is the model itself: not a choice
    matched: set[str] = set()
    for i, pattern in enumerate(patterns):
        hits = [name for name in names if fnmatch.fnmatchcase(name, pattern)]
        if not hits:
            raise _no_match(model, names, pattern, f"{key}.{i}", where)
        matched.update(hits)
    modules = dict(model.named_modules())
    outermost = [name for name in names if name in matched and not _inside_one_of(name, matched)]
    return [name for top in outermost for name in _callable_modules(top, modules[top])]


def _callable_modules(name: str, module: nn.Module) -> list[str]:
    """``[name]``, or for a container that is never called (a ModuleList, a ModuleDict) the modules in it."""
    if type(module).forward is not nn.Module.forward:
        return [name]
    return [found for child, sub in module.named_children() for found in _callable_modules(f"{name}.{child}", sub)]


def _inside_one_of(name: str, names: set[str]) -> bool:
    parts = name.split(".")
    return any(".".join(parts[:i]) in names for i in range(1, len(parts)))


def _no_match(
    model: nn.Module, names: list[str], pattern: str, key: str, where: tuple[Optional[str], Optional[int]]
) -> ConfigError:
    close = did_you_mean(pattern.rstrip("*."), names)
    parameters = [name for name, _ in model.named_parameters()]
    if any(fnmatch.fnmatchcase(name, pattern) for name in parameters):
        close = f"It matches parameter names: these patterns match module names (no '.weight'). {close}".strip()
    top = [name for name, _ in model.named_children()]
    return ConfigError(
        f"the pattern {pattern!r} matches no module of {type(model).__name__}.",
        file=where[0],
        line=where[1],
        key=key,
        hint=(close + " " if close else "") + f"Its top-level modules are {', '.join(top) or '(none)'}.",
    )


def checkpoint_modules(model: nn.Module, names: Sequence[str]) -> None:
    """Each named submodule's forward recomputed in backward (torch's non-reentrant checkpointing; the RNG
    state is restored for the recomputation, so dropout draws the same mask). Only when gradients are
    enabled: evaluation runs the plain forward."""
    modules = dict(model.named_modules())
    for name in names:
        _wrapped_forward(modules[name]).checkpoint = True


def autocast_modules(model: nn.Module, names: Sequence[str], device_type: str, dtype: torch.dtype) -> None:
    """Each named submodule's forward under ``torch.autocast(device_type, dtype)``; its floating outputs in
    ``dtype`` are cast to float32 on the way out, so the modules outside run in fp32 on fp32 inputs."""
    modules = dict(model.named_modules())
    for name in names:
        wrapped = _wrapped_forward(modules[name])
        wrapped.autocast = (device_type, dtype)


def _wrapped_forward(module: nn.Module) -> _MemoryForward:
    current = module.__dict__.get("forward")
    if isinstance(current, _MemoryForward):
        return current
    wrapped = _MemoryForward(module, current)
    module.forward = wrapped  # type: ignore[method-assign]
    return wrapped


class _MemoryForward:
    """A module's instance ``forward``: its class's forward (or the instance forward it replaced), under
    autocast and / or checkpointed. It holds the module, not a bound method, so that ``copy.deepcopy`` (the
    EMA's AveragedModel) gives the copy a forward of its own."""

    def __init__(self, module: nn.Module, previous: Optional[Any]) -> None:
        self.module = module
        self.previous = previous
        self.checkpoint = False
        self.autocast: Optional[tuple[str, torch.dtype]] = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not (self.checkpoint and torch.is_grad_enabled()):
            return self.run(*args, **kwargs)
        if torch.compiler.is_compiling():  # a compiled graph applies the statistics' update once by itself
            return checkpoint(self.run, *args, use_reentrant=False, **kwargs)
        first_call = [True]

        def forward_then_recompute(*a: Any, **k: Any) -> Any:
            if first_call[0]:
                first_call[0] = False
                return self.run(*a, **k)
            with _running_stats_kept(self.module):  # one update per step, as without checkpointing
                return self.run(*a, **k)

        return checkpoint(forward_then_recompute, *args, use_reentrant=False, **kwargs)

    def run(self, *args: Any, **kwargs: Any) -> Any:
        forward = self.previous if self.previous is not None else type(self.module).forward.__get__(self.module)
        if self.autocast is None:
            return forward(*args, **kwargs)
        device_type, dtype = self.autocast
        with torch.autocast(device_type=device_type, dtype=dtype):
            output = forward(*args, **kwargs)
        return _to_float32(output, dtype)


def _to_float32(value: Any, dtype: torch.dtype) -> Any:
    if isinstance(value, torch.Tensor):
        return value.float() if value.dtype == dtype else value
    if isinstance(value, dict):
        return {k: _to_float32(v, dtype) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and type(value) in (list, tuple):
        return type(value)(_to_float32(v, dtype) for v in value)
    return value


@contextlib.contextmanager
def _running_stats_kept(module: nn.Module) -> Any:
    """The running statistics of the norm layers in ``module`` as they were before the block (the
    recomputation in backward runs batch norm in train mode a second time)."""
    saved = [
        (buffer, buffer.clone())
        for layer in module.modules()
        if _has_running_stats(layer) and layer.training
        for buffer in layer.buffers(recurse=False)
    ]
    try:
        yield
    finally:  # also when torch stops the recomputation early, once it has every tensor it needs
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


def _has_running_stats(layer: nn.Module) -> bool:
    return bool(getattr(layer, "track_running_stats", False)) and getattr(layer, "running_mean", None) is not None


def hold_frozen_norm_layers(model: nn.Module, freeze_patterns: Sequence[str]) -> list[str]:
    """The norm layers with running statistics (batch norm, instance norm with ``track_running_stats``) whose
    parameters are all frozen (``train.freeze`` ran), or, without affine parameters, whose ``running_mean``
    a pattern of ``freeze_patterns`` matches: held in eval mode (normalised by their running statistics,
    which stay as loaded), as mmengine's ``norm_eval`` and detectron2's FrozenBatchNorm. Their names.

    Held by an instance ``train`` that always sets eval mode: ``model.train()`` reaches every layer through
    ``train``, so the trainer's ``model.train()`` and evaluation's ``eval()`` / ``train()`` keep them held."""
    held = []
    for name, layer in model.named_modules():
        if not _has_running_stats(layer):
            continue
        params = list(layer.parameters(recurse=False))
        if params:
            frozen = not any(p.requires_grad for p in params)
        else:
            frozen = any(fnmatch.fnmatchcase(f"{name}.running_mean", p) for p in freeze_patterns)
        if frozen:
            hold = _TrainHeldInEval(layer)
            layer.train = hold  # type: ignore[method-assign]
            hold()
            held.append(name)
    return held


class _TrainHeldInEval:
    """A held norm layer's instance ``train(mode)``: eval mode whatever ``mode`` says."""

    def __init__(self, layer: nn.Module) -> None:
        self.layer = layer

    def __call__(self, mode: bool = True) -> nn.Module:
        return nn.Module.train(self.layer, False)
