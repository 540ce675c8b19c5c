"""`instantiate`: build the objects a config describes, depth first, naming the key path on any failure."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

from ..errors import ConfigError, LazytrainError
from .interpolation import omegaconf_reason
from .lazy import (
    ARGS_KEY,
    SEQUENCE_CONFIGS,
    TARGET_KEY,
    check_arguments,
    is_structured_class,
    is_tuple_config,
    locate,
    positional_call_arguments,
    target_name,
)
from .provenance import key_line, set_on_command_line

__all__ = ["instantiate"]


def instantiate(cfg: Any, key: str = "") -> Any:
    """Build ``cfg``: every ``_target_`` node is called with its instantiated arguments.

    Dicts, lists and tuples without a target come back as a new plain ``dict`` / ``list`` / ``tuple`` of
    instantiated values (a tuple in a config stays a tuple, on omegaconf 2.4; 2.3 stores it as a list); a
    dataclass (or attrs) value comes back as an instance of its class; anything else is returned as it is.
    ``key`` is the path of ``cfg`` in its config, used in errors.
    """
    if isinstance(cfg, SEQUENCE_CONFIGS):
        if cfg._is_none():
            return None
        items = [instantiate(_child(cfg, i, key), _join(key, i)) for i in range(len(cfg))]
        return tuple(items) if is_tuple_config(cfg) else items
    if isinstance(cfg, (list, tuple)) and not _is_namedtuple(cfg):
        return type(cfg)(instantiate(v, _join(key, i)) for i, v in enumerate(cfg))
    if isinstance(cfg, DictConfig):
        if cfg._is_none():
            return None
        if is_structured_class(OmegaConf.get_type(cfg)):
            return _structured(cfg, key)
        values = {k: _child(cfg, k, key) for k in cfg}
    elif isinstance(cfg, Mapping):
        values = dict(cfg)
    else:
        return cfg

    if TARGET_KEY not in values:
        return {k: instantiate(v, _join(key, k)) for k, v in values.items()}
    return _call(values, key, cfg if isinstance(cfg, DictConfig) else None)


def _call(values: dict[Any, Any], key: str, node: Optional[DictConfig] = None) -> Any:
    target = values.pop(TARGET_KEY)
    where = key or "<config>"
    built_by = None  # for a call config as the target: the name of what builds the object that is called
    if isinstance(target, DictConfig) and is_structured_class(OmegaConf.get_type(target)) and TARGET_KEY not in target:
        target = OmegaConf.get_type(target)  # a dataclass assigned to _target_ after L(), stored as its fields
    elif isinstance(target, Mapping):
        inner = target.get(TARGET_KEY)
        built_by = f"the object built by _target_ ({target_name(inner) if callable(inner) else inner}(...))"
        target = instantiate(target, _join(key, TARGET_KEY))  # a call config: call what it builds
    if isinstance(target, str):
        try:
            target = locate(target)
        except ConfigError as e:
            raise e.with_key(_join(key, TARGET_KEY)) from None
    if not callable(target):
        what = built_by or f"_target_ is {target!r}, which"
        raise ConfigError(f"{what} cannot be called.", key=where)
    args = [instantiate(v, _join(key, f"{ARGS_KEY}.{i}")) for i, v in enumerate(values.pop(ARGS_KEY, []))]
    kwargs = {k: instantiate(v, _join(key, k)) for k, v in values.items()}
    try:
        check_arguments(target, kwargs, who=built_by)
    except ConfigError as e:
        raise e.with_key(where) from None
    args, kwargs = positional_call_arguments(target, args, kwargs)
    try:
        return target(*args, **kwargs)
    except LazytrainError as e:
        raise e.with_key(where) from e
    except Exception as e:
        file, line = _where_set(node, key, e)
        raise ConfigError(
            f"building {built_by or target_name(target) + '(...)'} failed: {type(e).__name__}: {e}",
            file=file,
            line=line,
            key=where,
            hint="Check the arguments under this key (run with --traceback for the full stack).",
        ) from e


def _where_set(node: Optional[DictConfig], key: str, error: Exception) -> tuple[Optional[str], Optional[int]]:
    """The file:line of the argument a build error names (a target taking ``**kwargs`` passes a misspelled
    name on, which only the call finds: ``unexpected keyword argument 'num_clases'``), else of the call."""
    if node is None or not key:
        return None, None
    root = node._get_root()
    if not isinstance(root, DictConfig) or set_on_command_line(root, key):
        return None, None
    named = re.search(r"unexpected keyword argument '(\w+)'", str(error))
    if named and named[1] in node:
        file, line = key_line(root, _join(key, named[1]))
        if file is not None:
            return file, line
    return key_line(root, key)


def _structured(cfg: DictConfig, key: str) -> Any:
    """A dataclass / attrs instance from its typed config node, fields instantiated first."""
    cls = OmegaConf.get_type(cfg)
    assert cls is not None
    values = {str(k): instantiate(_child(cfg, k, key), _join(key, k)) for k in cfg}
    if not dataclasses.is_dataclass(cls):
        return cls(**values)
    init = {f.name for f in dataclasses.fields(cls) if f.init}
    obj = cls(**{k: v for k, v in values.items() if k in init})
    for k, v in values.items():
        if k not in init:
            object.__setattr__(obj, k, v)  # frozen dataclasses too, as omegaconf's to_object does
    return obj


def _child(cfg: Any, k: Any, key: str) -> Any:
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
        raise ConfigError(f"cannot resolve {raw!r}: {omegaconf_reason(e)}.", key=_join(key, k)) from None


def _join(key: str, k: Any) -> str:
    return f"{key}.{k}" if key else str(k)


def _is_namedtuple(x: Sequence) -> bool:
    return isinstance(x, tuple) and hasattr(x, "_fields")
