"""What ``lazytrain hooks`` prints after the hooks: the run settings that are no hook but change training."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from .build import build_model, freeze_parameters
from .memory import amp_modules, apply_memory_settings

__all__ = ["run_settings"]


def run_settings(cfg: DictConfig) -> list[tuple[str, str]]:
    """``(key, what it does)`` for the run settings that are no hook but change training (what ``lazytrain
    hooks`` prints after the hooks): freezing (with the parameters its patterns match: the model is built,
    on the CPU), torch.compile, the weights training starts from, and the EMA."""
    t = cfg.train
    rows: list[tuple[str, str]] = []
    patterns = list(t.freeze)
    if patterns:
        model = build_model(cfg, torch.device("cpu"))
        freeze_parameters(model, patterns)  # a pattern that matches nothing is a ConfigError, as in training
        params = list(model.named_parameters())
        frozen = [(name, p) for name, p in params if not p.requires_grad]
        total = sum(p.numel() for _, p in params)
        counts = f"{len(frozen)} of {len(params)} parameter tensors, {sum(p.numel() for _, p in frozen):,} of {total:,}"
        rows.append(("train.freeze", f"{patterns}: {counts} parameters frozen"))
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


def memory_settings_rows(cfg: DictConfig) -> list[tuple[str, str]]:
    """``(key, what it does)`` for ``lazytrain hooks``: the modules each setting matches (the model is built
    on the CPU, with ``train.freeze`` applied, as training builds it)."""
    t = cfg.train
    model = build_model(cfg, torch.device("cpu"))
    freeze_parameters(model, list(t.freeze))
    done = apply_memory_settings(model, cfg, torch.device("cpu"))
    rows = []
    patterns = list(t.activation_checkpointing)
    if patterns:
        rows.append(
            ("train.activation_checkpointing", f"{patterns}: {_counted(done.checkpointed)} recomputed in backward")
        )
    else:
        rows.append(("train.activation_checkpointing", "[] (every activation kept for backward)"))
    patterns = amp_modules(cfg)
    if not t.amp.enabled:
        off = f"{patterns} (unused: train.amp.enabled=False)" if patterns else "[] (train.amp.enabled=False: all fp32)"
        rows.append(("train.amp.modules", off))
    elif patterns:
        rows.append(
            (
                "train.amp.modules",
                f"{patterns}: {t.amp.dtype} autocast inside {_counted(done.autocast)}; the rest in fp32",
            )
        )
    else:
        rows.append(("train.amp.modules", f"[] ({t.amp.dtype} autocast over the whole step)"))
    if not t.freeze_norm_eval:
        rows.append(("train.freeze_norm_eval", "False (norm layers of frozen modules train: their statistics move)"))
    elif done.held_norm_layers:
        rows.append(
            (
                "train.freeze_norm_eval",
                f"True: {_counted(done.held_norm_layers, 'norm layer')} of frozen "
                "modules held in eval mode (statistics kept)",
            )
        )
    else:
        rows.append(("train.freeze_norm_eval", "True (no frozen norm layer)"))
    return rows


def _counted(names: list[str], what: str = "module", shown: int = 6) -> str:
    listed = ", ".join(names[:shown]) + (f", ... ({len(names) - shown} more)" if len(names) > shown else "")
    return f"{len(names)} {what}{'s' if len(names) != 1 else ''} ({listed})"
