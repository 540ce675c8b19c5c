"""Configs as YAML text and back: targets as dotted paths, dataclass values as tagged mappings.

A tuple is written as a sequence tagged ``!tuple`` so that it loads back as a tuple (omegaconf 2.4 keeps
tuples; 2.3 turns them into lists in any case). What YAML cannot hold is collected for a cloudpickle side
file; :func:`load_yaml` puts it back.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import cloudpickle
import yaml
from omegaconf import DictConfig, OmegaConf, SCMode

from ..errors import ConfigError
from .lazy import SEQUENCE_CONFIGS, TARGET_KEY, is_importable, is_tuple_config, locate, target_name, target_node

__all__ = ["load_yaml", "side_file", "to_yaml"]

_YAML_SCALARS = (int, float, str, bool, type(None))
_PICKLED = "<cloudpickle>"
_STRUCTURED_TAG = "!dataclass:"
_TUPLE_TAG = "!tuple"


def side_file(path: str) -> str:
    """Where :meth:`LazyConfig.save` puts the values YAML cannot hold."""
    return os.path.splitext(path)[0] + ".pkl"


class _Import(str):
    """The dotted path of an importable function or class that is a value (not a ``_target_``): YAML writes
    it as ``!import path`` and loading imports it again."""


class _Structured(dict):
    """The fields of a dataclass value; YAML writes them as a mapping tagged ``!dataclass:path``."""

    def __init__(self, path: str, fields: dict[str, Any]) -> None:
        super().__init__(fields)
        self.path = path


class _Tuple(list):
    """The items of a tuple; YAML writes them as a sequence tagged ``!tuple`` (on one line when all are
    scalars: ``kernel_size: !tuple [3, 3]``)."""


class _Dumper(yaml.SafeDumper):
    pass


class _Loader(yaml.SafeLoader):
    pass


_Dumper.add_representer(_Import, lambda dumper, value: dumper.represent_scalar("!import", str(value)))
_Dumper.add_representer(
    _Structured, lambda dumper, value: dumper.represent_mapping(_STRUCTURED_TAG + value.path, dict(value))
)
_Dumper.add_representer(
    _Tuple,
    lambda dumper, value: dumper.represent_sequence(
        _TUPLE_TAG, list(value), flow_style=all(isinstance(v, _YAML_SCALARS) for v in value)
    ),
)


def _construct_import(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    path = loader.construct_scalar(node)  # type: ignore[arg-type]
    try:
        return locate(str(path))
    except ConfigError as e:
        raise ConfigError(e.message, file=node.start_mark.name, line=node.start_mark.line + 1) from None


def _construct_structured(loader: yaml.SafeLoader, path: str, node: yaml.Node) -> Any:
    fields = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    try:
        cls = locate(path)
    except ConfigError as e:
        raise ConfigError(e.message, file=node.start_mark.name, line=node.start_mark.line + 1) from None
    # merge into the class's own typed config: fields may hold interpolations the class would not accept
    return OmegaConf.merge(OmegaConf.structured(cls, flags={"allow_objects": True}), fields)


_Loader.add_constructor("!import", _construct_import)
_Loader.add_constructor(_TUPLE_TAG, lambda loader, node: tuple(loader.construct_sequence(node, deep=True)))
_Loader.add_multi_constructor(_STRUCTURED_TAG, _construct_structured)


def to_yaml(cfg: DictConfig, pickled: dict[str, Any]) -> str:
    """``cfg`` as YAML text; each value YAML cannot hold is put in ``pickled`` under its key path."""
    plain = _yaml_ready(_container(cfg), "", pickled)
    return yaml.dump(plain, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)


def _container(cfg: Any) -> Any:
    # dataclass values stay DictConfigs so their class is known when they are written
    return OmegaConf.to_container(cfg, resolve=False, structured_config_mode=SCMode.DICT_CONFIG)


def structured_fields(node: DictConfig) -> dict[str, Any]:
    """The fields of a dataclass value's node, unresolved; dataclass fields in it stay DictConfigs."""
    fields = {}
    for k in node:
        child = node._get_node(k)
        fields[str(k)] = _container(child) if OmegaConf.is_config(child) else child._value()  # type: ignore[union-attr]
    return fields


def _yaml_ready(value: Any, key: str, pickled: dict[str, Any]) -> Any:
    if isinstance(value, DictConfig):
        cls = OmegaConf.get_type(value)
        if not is_importable(cls):
            pickled[key] = value
            return _PICKLED
        return _Structured(target_name(cls), _yaml_ready(structured_fields(value), key, pickled))
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            path = f"{key}.{k}" if key else str(k)
            if k == TARGET_KEY and callable(v) and is_importable(v):
                out[k] = target_name(v)
            else:
                out[k] = _yaml_ready(v, path, pickled)
        return out
    if isinstance(value, (list, tuple)):
        items = [_yaml_ready(v, f"{key}.{i}", pickled) for i, v in enumerate(value)]
        return _Tuple(items) if isinstance(value, tuple) else items
    if isinstance(value, _YAML_SCALARS):
        return value
    if callable(value) and is_importable(value):
        return _Import(target_name(value))
    pickled[key] = value
    return _PICKLED


def load_yaml(path: str) -> DictConfig:
    """The config a YAML file written by :meth:`LazyConfig.save` holds, its side file's values put back."""
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.load(f, Loader=_Loader) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            raise ConfigError(
                f"invalid YAML: {getattr(e, 'problem', e)}.",
                file=path,
                line=mark.line + 1 if mark else None,
            ) from None
    if not isinstance(data, dict):
        raise ConfigError("a YAML config must be a mapping of keys to values.", file=path)
    cfg = OmegaConf.create(data, flags={"allow_objects": True})
    side = side_file(path)
    if os.path.exists(side):
        with open(side, "rb") as f:
            for key, value in cloudpickle.load(f).items():
                if key == TARGET_KEY or key.endswith("." + TARGET_KEY):
                    value = target_node(value)
                _put_back(cfg, key, value)
    _resolve_targets(cfg)
    return cfg


def _put_back(cfg: DictConfig, key: str, value: Any) -> None:
    """Set ``key`` to ``value``; inside a tuple (immutable in omegaconf 2.4) the tuple is rebuilt."""
    parent_key, _, last = key.rpartition(".")
    parent: Any = cfg
    for part in parent_key.split(".") if parent_key else []:
        parent = parent._get_node(int(part) if isinstance(parent, SEQUENCE_CONFIGS) else part)
    if is_tuple_config(parent):
        items = [parent._get_node(i) for i in range(len(parent))]
        items[int(last)] = value
        _put_back(cfg, parent_key, tuple(items))
    else:
        OmegaConf.update(cfg, key, value, merge=False, force_add=True)


def _resolve_targets(cfg: Any) -> None:
    """Turn ``_target_`` strings back into the objects they name, so a loaded YAML equals the saved config.

    A target that cannot be imported here stays a string; instantiate reports it if it is ever built.
    """
    if isinstance(cfg, DictConfig):
        for k in cfg:
            node = cfg._get_node(k)
            if k == TARGET_KEY and isinstance(node._value(), str):  # type: ignore[union-attr]
                with contextlib.suppress(ConfigError):
                    cfg[k] = target_node(locate(node._value()))  # type: ignore[union-attr]
            else:
                _resolve_targets(node)
    elif isinstance(cfg, SEQUENCE_CONFIGS):
        for i in range(len(cfg)):
            _resolve_targets(cfg._get_node(i))
