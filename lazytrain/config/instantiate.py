"""`instantiate`: build the objects a config describes, depth first, naming the key path on any failure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

from ..errors import ConfigError, LazytrainError
from .lazy import ARGS_KEY, TARGET_KEY, check_arguments, locate, target_name

__all__ = ["instantiate"]


def instantiate(cfg: Any, key: str = "") -> Any:
    """Build ``cfg``: every ``_target_`` node is called with its instantiated arguments.

    Dicts and lists without a target come back as plain ``dict`` / ``list`` of instantiated values;
    anything else is returned as it is. ``key`` is the path of ``cfg`` in its config, used in errors.
    """
    if isinstance(cfg, ListConfig):
        return [instantiate(_child(cfg, i, key), _join(key, i)) for i in range(len(cfg))]
    if isinstance(cfg, (list, tuple)) and not _is_namedtuple(cfg):
        return type(cfg)(instantiate(v, _join(key, i)) for i, v in enumerate(cfg))
    if isinstance(cfg, DictConfig):
        if cfg._is_none():
            return None
        values = {k: _child(cfg, k, key) for k in cfg}
    elif isinstance(cfg, Mapping):
        values = dict(cfg)
    else:
        return cfg

    if TARGET_KEY not in values:
        return {k: instantiate(v, _join(key, k)) for k, v in values.items()}
    return _call(values, key)


def _call(values: dict[Any, Any], key: str) -> Any:
    target = values.pop(TARGET_KEY)
    where = key or "<config>"
    if isinstance(target, str):
        try:
            target = locate(target)
        except ConfigError as e:
            raise e.with_key(_join(key, TARGET_KEY)) from None
    if not callable(target):
        raise ConfigError(f"_target_ is {target!r}, which cannot be called.", key=where)
    args = [instantiate(v, _join(key, f"{ARGS_KEY}.{i}")) for i, v in enumerate(values.pop(ARGS_KEY, []))]
    kwargs = {k: instantiate(v, _join(key, k)) for k, v in values.items()}
    try:
        check_arguments(target, kwargs)
    except ConfigError as e:
        raise e.with_key(where) from None
    try:
        return target(*args, **kwargs)
    except LazytrainError as e:
        raise e.with_key(where) from e
    except Exception as e:
        raise ConfigError(
            f"building {target_name(target)}(...) failed: {type(e).__name__}: {e}",
            key=where,
            hint="Check the arguments under this key (run with --traceback for the full stack).",
        ) from e


def _child(cfg: DictConfig | ListConfig, k: Any, key: str) -> Any:
    """``cfg[k]`` with interpolation and missing-value errors turned into ConfigErrors naming the key."""
    try:
        return cfg[k]
    except MissingMandatoryValue:
        path = _join(key, k)
        raise ConfigError(
            "this value is required but not set ('???').", key=path, hint=f"Set it with {path}=VALUE."
        ) from None
    except InterpolationResolutionError as e:
        raw = OmegaConf.to_container(cfg, resolve=False)[k]  # type: ignore[index]
        raise ConfigError(f"cannot resolve {raw!r}: {e.msg}", key=_join(key, k)) from None


def _join(key: str, k: Any) -> str:
    return f"{key}.{k}" if key else str(k)


def _is_namedtuple(x: Sequence) -> bool:
    return isinstance(x, tuple) and hasattr(x, "_fields")
