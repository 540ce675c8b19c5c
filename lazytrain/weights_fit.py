"""Weights that do not fit the model are an error where they are used as they are (eval, predict, export,
analyze): one paragraph naming the missing, unexpected and mis-shaped keys, never random weights."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .errors import ConfigError

__all__ = ["check_weights_fit", "optional_weight_keys"]


def optional_weight_keys(model: torch.nn.Module) -> frozenset[str]:
    """The state-dict keys ``model`` may lack in a checkpoint or may not have itself: its class attribute
    ``optional_weight_keys`` (buffers only the loss uses, such as class weights computed from the data)."""
    return frozenset(getattr(type(model), "optional_weight_keys", ()))


def check_weights_fit(
    model: torch.nn.Module,
    path: str,
    missing: Sequence[str],
    unexpected: Sequence[str],
    mismatched: Sequence[tuple[str, tuple[int, ...], tuple[int, ...]]],
) -> None:
    """Raise a ConfigError listing (the first few and a count of) the keys of checkpoint ``path`` that do
    not fit ``model``; keys of the model's ``optional_weight_keys`` may be missing or unexpected."""
    optional = optional_weight_keys(model)

    def required(key: str) -> bool:
        return key not in optional and key.removeprefix("module.") not in optional

    missing = sorted(k for k in missing if required(k))
    unexpected = sorted(k for k in unexpected if required(k))
    shapes = [f"{k}: {tuple(saved)} in the checkpoint, {tuple(own)} in the model" for k, saved, own in mismatched]
    problems = [
        f"{len(keys)} {name} ({_few(keys)})"
        for name, keys in (("missing", missing), ("unexpected", unexpected), ("of another shape", shapes))
        if keys
    ]
    if problems:
        raise ConfigError(
            f"the weights of '{path}' do not fit the model {type(model).__name__}: " + "; ".join(problems) + ". "
            "Loading them would leave those weights random.",
            hint="Use the config the checkpoint was trained with (its run folder's config.yaml) and its model "
            "settings; to fine-tune from a partial fit, train with train.init_checkpoint instead.",
        )


def _few(items: Sequence[str], n: int = 3) -> str:
    shown = "; ".join(items[:n]) if any(":" in i for i in items[:n]) else ", ".join(items[:n])
    return shown + (f" (and {len(items) - n} more)" if len(items) > n else "")
