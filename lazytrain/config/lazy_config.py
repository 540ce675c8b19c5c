"""`LazyConfig`: load a config (.py or .yaml), apply ``key=value`` overrides, save to YAML that loads back."""

from __future__ import annotations

import ast
import contextlib
import os
import re
import warnings
import weakref
from collections.abc import Iterator, Sequence
from typing import Any, Optional, Union

import cloudpickle
import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from ..errors import ConfigError, did_you_mean
from ..fileio import atomic_write
from .lazy import TARGET_KEY, accepts_argument, check_arguments, is_importable, locate, target_name
from .loader import _rel, load_python_config

__all__ = ["LazyConfig"]

PathLike = Union[str, "os.PathLike[str]"]
_YAML_SCALARS = (int, float, str, bool, type(None))
# the config files each loaded root came from, to put file:line on interpolation errors found later
_SOURCE_FILES: dict[int, tuple[weakref.ref, list[str]]] = {}
_PICKLED = "<cloudpickle>"


class LazyConfig:
    """Load, override and save lazytrain configs. All methods are static; configs are plain DictConfigs."""

    @staticmethod
    def load(path: PathLike, check: bool = True) -> DictConfig:
        """Load a ``.py`` config (executed, relative imports allowed) or a ``.yaml`` saved by :meth:`save`.

        With ``check``, interpolations are checked against the whole config: a reference to a missing key is
        an error naming file:line. Pass ``check=False`` to add keys first, then call :meth:`check`.
        """
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise ConfigError(f"config file '{path}' does not exist.", hint="Check the path.")
        if path.endswith((".yaml", ".yml")):
            cfg = _load_yaml(path)
            files = [path]
        elif path.endswith(".py"):
            cfg, files = load_python_config(path)
        else:
            raise ConfigError(f"config file '{path}' must end in .py or .yaml.")
        key = id(cfg)
        _SOURCE_FILES[key] = (weakref.ref(cfg), files)
        weakref.finalize(cfg, _SOURCE_FILES.pop, key, None)
        if check:
            LazyConfig.check(cfg)
        return cfg

    @staticmethod
    def check(cfg: DictConfig) -> None:
        """Raise a ConfigError for the first interpolation that does not resolve (key, file:line, close matches)."""
        check_interpolations(cfg, _source_files(cfg))

    @staticmethod
    def apply_overrides(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
        """Apply ``key=value`` strings in place (values parse as Python / YAML literals) and return ``cfg``.

        A key must exist, or be an argument that the target of its parent ``L(...)`` call accepts;
        ``+key=value`` adds a new key.
        """
        for override in overrides:
            key, sep, text = override.partition("=")
            key = key.strip()
            if not sep or not key:
                raise ConfigError(
                    f"override '{override}' is not of the form KEY=VALUE.", hint="Example: train.max_iter=100"
                )
            add = key.startswith("+")
            key = key.lstrip("+")
            if not add:
                _check_override_key(cfg, key)
            value = parse_value(text)
            try:
                OmegaConf.update(cfg, key, value, merge=False, force_add=True)
            except Exception as e:
                raise ConfigError(f"cannot set this key to {value!r}: {e}", key=key) from None
        return cfg

    @staticmethod
    def save(cfg: DictConfig, path: PathLike) -> None:
        """Write ``cfg`` as YAML; targets become dotted import paths.

        Values YAML cannot hold (a lambda, a local class, a tensor) go to a cloudpickle file beside it
        (``<name>.pkl``), with a warning naming each key. :meth:`load` puts them back.
        """
        path = os.fspath(path)
        pickled: dict[str, Any] = {}
        text = _to_yaml(cfg, pickled)
        side = side_file(path)
        if pickled:
            for key, value in pickled.items():
                warnings.warn(
                    f"config key '{key}' holds {value!r}, which YAML cannot store; "
                    f"saved it with cloudpickle to '{side}'.",
                    stacklevel=2,
                )
            atomic_write(side, cloudpickle.dumps(pickled))
        elif os.path.exists(side):
            os.remove(side)
        atomic_write(path, text.encode())

    @staticmethod
    def to_yaml(cfg: DictConfig, resolve: bool = False) -> str:
        """The config as YAML text (``resolve=True`` replaces interpolations by their values)."""
        if resolve:
            cfg = resolved_copy(cfg)
        return _to_yaml(cfg, {})


def source_line(cfg: DictConfig, name: str) -> tuple[Optional[str], Optional[int]]:
    """The first ``file, line`` of the config files ``cfg`` was loaded from where ``name`` is written as a
    word (to point at a misspelled key), or ``(None, None)``."""
    return _first_line(_source_files(cfg), re.compile(rf"\b{re.escape(name)}\b"))


def _source_files(cfg: DictConfig) -> list[str]:
    """The config files ``cfg`` was loaded from (empty for a config built in code or changed since)."""
    ref, files = _SOURCE_FILES.get(id(cfg), (None, []))
    return files if ref is not None and ref() is cfg else []


def _first_line(files: Sequence[str], pattern: re.Pattern[str]) -> tuple[Optional[str], Optional[int]]:
    """``(file, line)`` of the first line in ``files`` that ``pattern`` matches, or ``(None, None)``."""
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    if pattern.search(line):
                        return _rel(path), lineno
        except OSError:
            continue
    return None, None


def resolved_copy(cfg: DictConfig) -> DictConfig:
    """A copy of ``cfg`` with every interpolation replaced by its value."""
    copy = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False), flags={"allow_objects": True})
    assert isinstance(copy, DictConfig)
    OmegaConf.resolve(copy)
    return copy


def side_file(path: str) -> str:
    """Where :meth:`LazyConfig.save` puts the values YAML cannot hold."""
    return os.path.splitext(path)[0] + ".pkl"


def parse_value(text: str) -> Any:
    """Parse an override value: ``0.1`` → float, ``[1, 2]`` → list, ``true``/``True`` → bool,
    ``null``/``None`` → None, anything else → the string itself."""
    text = text.strip()
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        pass
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if value is not None or text in ("null", "~", "") else text


def flat_keys(cfg: Any, prefix: str = "") -> Iterator[str]:
    """Every key path in the tree (``train.amp.enabled``), parents before children."""
    if isinstance(cfg, DictConfig):
        for k in cfg:
            path = f"{prefix}.{k!s}" if prefix else str(k)
            yield path
            yield from flat_keys(cfg._get_node(k), path)
    elif isinstance(cfg, ListConfig):
        for i in range(len(cfg)):
            path = f"{prefix}.{i}"
            yield path
            yield from flat_keys(cfg._get_node(i), path)


def check_interpolations(cfg: DictConfig, files: Sequence[str]) -> None:
    """Raise a ConfigError for the first ``${...}`` that does not resolve, naming the key and file:line."""
    try:
        OmegaConf.to_container(cfg, resolve=True)
    except InterpolationResolutionError as e:
        key = str(e.full_key) if e.full_key else None
        raw = _raw_value(cfg, key) if key else None
        file, line = _first_line(files, re.compile(re.escape(raw))) if isinstance(raw, str) else (None, None)
        refs = re.findall(r"\$\{([^}:]+)\}", raw) if isinstance(raw, str) else []
        missing = [r for r in refs if OmegaConf.select(cfg, r, default=_MISSING) is _MISSING]
        if missing:
            what = f"'{missing[0]}' is not a key of this config"
            hint = did_you_mean(missing[0], flat_keys(cfg))
        else:
            what, hint = e.msg or str(e), ""
        raise ConfigError(f"bad interpolation {raw!r}: {what}.", file=file, line=line, key=key, hint=hint) from None


_MISSING = object()


def _raw_value(cfg: DictConfig, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = node._get_node(int(part) if isinstance(node, ListConfig) else part)
        if node is None:
            return None
    return node._value()


def _check_override_key(cfg: DictConfig, key: str) -> None:
    if OmegaConf.select(cfg, key, default=_MISSING, throw_on_resolution_failure=False) is not _MISSING:
        return
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key, default=None) if parent_key else cfg
    if isinstance(parent, DictConfig) and TARGET_KEY in parent:
        target = parent._get_node(TARGET_KEY)._value()  # type: ignore[union-attr]
        if accepts_argument(target, leaf):
            return
        if callable(target):
            try:
                check_arguments(target, [leaf])
            except ConfigError as e:
                raise e.with_key(key) from None
    # siblings first: a misspelled leaf is closest to its neighbours, not to any key in the tree
    if isinstance(parent, DictConfig):
        siblings = [f"{parent_key}.{k!s}" if parent_key else str(k) for k in parent if k != TARGET_KEY]
        hint = did_you_mean(key, siblings)
    else:
        hint = ""
    hint = hint or did_you_mean(key, [k for k in flat_keys(cfg) if not k.endswith(TARGET_KEY)])
    raise ConfigError(
        "unknown config key in override.",
        key=key,
        hint=(hint or "Run `lazytrain config CONFIG` to see the keys.") + " Prefix it with '+' to add a new key.",
    )


class _Import(str):
    """The dotted path of an importable function or class that is a value (not a ``_target_``): YAML writes
    it as ``!import path`` and loading imports it again."""


class _Dumper(yaml.SafeDumper):
    pass


class _Loader(yaml.SafeLoader):
    pass


_Dumper.add_representer(_Import, lambda dumper, value: dumper.represent_scalar("!import", str(value)))


def _construct_import(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    path = loader.construct_scalar(node)  # type: ignore[arg-type]
    try:
        return locate(str(path))
    except ConfigError as e:
        raise ConfigError(e.message, file=node.start_mark.name, line=node.start_mark.line + 1) from None


_Loader.add_constructor("!import", _construct_import)


def _to_yaml(cfg: DictConfig, pickled: dict[str, Any]) -> str:
    container = OmegaConf.to_container(cfg, resolve=False)
    plain = _yaml_ready(container, "", pickled)
    return yaml.dump(plain, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)


def _yaml_ready(value: Any, key: str, pickled: dict[str, Any]) -> Any:
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
        return [_yaml_ready(v, f"{key}.{i}", pickled) for i, v in enumerate(value)]
    if isinstance(value, _YAML_SCALARS):
        return value
    if callable(value) and is_importable(value):
        return _Import(target_name(value))
    pickled[key] = value
    return _PICKLED


def _load_yaml(path: str) -> DictConfig:
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
                OmegaConf.update(cfg, key, value, merge=False, force_add=True)
    _resolve_targets(cfg)
    return cfg


def _resolve_targets(cfg: Any) -> None:
    """Turn ``_target_`` strings back into the objects they name, so a loaded YAML equals the saved config.

    A target that cannot be imported here stays a string; instantiate reports it if it is ever built.
    """
    if isinstance(cfg, DictConfig):
        for k in cfg:
            node = cfg._get_node(k)
            if k == TARGET_KEY and isinstance(node._value(), str):  # type: ignore[union-attr]
                with contextlib.suppress(ConfigError):
                    cfg[k] = locate(node._value())  # type: ignore[union-attr]
            else:
                _resolve_targets(node)
    elif isinstance(cfg, ListConfig):
        for i in range(len(cfg)):
            _resolve_targets(cfg._get_node(i))
