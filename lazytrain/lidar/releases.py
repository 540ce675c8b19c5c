"""Reading the authors' released weights of a range-image model (``{'state_dict': ...}`` files, DataParallel's
``module.`` prefix or not, alone or in the folder the authors' infer scripts read) into the model's own keys."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import torch

from ..errors import ConfigError

__all__ = ["read_state_dict_release"]


def _load(path: str) -> Any:
    try:
        # the authors' files also hold the optimizer and scheduler (torch objects among them): not weights only
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise ConfigError(
            f"cannot read '{path}' as a PyTorch file: {type(e).__name__}: {e}",
            hint="The file is truncated or not a checkpoint; download it again.",
        ) from e


def read_state_dict_release(
    path: str,
    file_names: Sequence[str],
    expected: Mapping[str, torch.Size],
    model_name: str,
) -> Optional[dict[str, torch.Tensor]]:
    """The state dict of an authors' release at ``path``: a file holding ``{'state_dict': {key: tensor}}``, or a
    folder holding one of ``file_names`` (the first found). Keys lose DataParallel's ``module.``. ``expected``:
    the model's keys and shapes. None when ``path`` is not such a release of this model (not a dict with
    'state_dict', or a folder without those files, or keys that share none of the model's: another model's
    file). A release whose keys overlap the model's but differ (missing, unexpected, other shapes) is a
    ConfigError naming the file and the first differences."""
    if os.path.isdir(path):
        found = [os.path.join(path, name) for name in file_names if os.path.isfile(os.path.join(path, name))]
        if not found:
            return None
        path = found[0]
    elif not os.path.isfile(path):
        return None
    data = _load(path)
    if not isinstance(data, dict) or not isinstance(data.get("state_dict"), Mapping):
        return None
    raw = data["state_dict"]
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in raw.items()):
        return None
    state = {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in raw.items()}
    if not set(state) & set(expected):
        return None
    for key in expected:  # files of a PyTorch before 0.4.1 have no BatchNorm step counters
        if key.endswith(".num_batches_tracked") and key not in state:
            state[key] = torch.tensor(0, dtype=torch.long)
    missing = sorted(k for k in expected if k not in state)
    unexpected = sorted(k for k in state if k not in expected)
    mismatched = [
        f"{k}: {tuple(state[k].shape)} in the file, {tuple(shape)} in the model"
        for k, shape in expected.items()
        if k in state and tuple(state[k].shape) != tuple(shape)
    ]
    problems = [
        f"{what}: {_few(keys)}"
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("other shapes", mismatched))
        if keys
    ]
    if problems:
        raise ConfigError(
            f"'{path}' is a {model_name} release ({{'state_dict': ...}}) whose weights do not fit {model_name}: "
            f"{'; '.join(problems)}.",
            hint=f"Use the authors' {model_name} weights for SemanticKITTI (20 classes) as they were released, or "
            "check that the model's settings (num_classes, ...) are the ones they were trained with.",
        )
    return state


def _few(items: Sequence[str], n: int = 3) -> str:
    shown = ", ".join(items[:n])
    return shown + (f" (and {len(items) - n} more)" if len(items) > n else "")
