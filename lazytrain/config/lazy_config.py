"""`LazyConfig`: load a config (.py or .yaml), apply ``key=value`` overrides, save to YAML that loads back."""

from __future__ import annotations

import ast
import copy
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Union, overload

import cloudpickle
import yaml
from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError, did_you_mean
from ..fileio import atomic_write
from .interpolation import check_interpolations, omegaconf_reason
from .lazy import TARGET_KEY, accepts_argument, check_arguments, flat_keys, is_tuple_config, raw_value
from .loader import load_python_config, load_within_config, shown_path
from .provenance import remember_overrides, remember_source_files
from .typecheck import check_types
from .yaml_io import load_yaml as _load_yaml
from .yaml_io import side_file
from .yaml_io import to_yaml as _to_yaml

__all__ = ["LazyConfig"]

PathLike = Union[str, "os.PathLike[str]"]


class LazyConfig:
    """Load, override and save lazytrain configs. All methods are static; configs are plain DictConfigs."""

    @overload
    @staticmethod
    def load(path: PathLike, keys: None = None, *, check: bool = True) -> DictConfig: ...
    @overload
    @staticmethod
    def load(path: PathLike, keys: str, *, check: bool = True) -> Any: ...
    @overload
    @staticmethod
    def load(path: PathLike, keys: tuple[str, ...], *, check: bool = True) -> tuple[Any, ...]: ...
    @staticmethod
    def load(path: PathLike, keys: Union[str, tuple[str, ...], None] = None, *, check: bool = True) -> Any:
        """Load a ``.py`` config (executed, relative imports allowed) or a ``.yaml`` saved by :meth:`save`.

        ``keys`` picks top-level keys, as detectron2's ``load``: a name gives that value, a tuple of names a
        tuple of values. With ``check``, the whole config is checked (:meth:`check`). Pass ``check=False``
        to add keys or apply overrides first, then call :meth:`check`. Any file name works (``my-exp.py``).
        """
        path = os.fspath(path)
        if os.path.isdir(path):
            raise ConfigError(f"config file '{path}' is a directory, not a config file.", hint=_configs_in(path))
        if not os.path.isfile(path):
            raise ConfigError(f"config file '{path}' does not exist.", hint="Check the path.")
        if path.endswith((".yaml", ".yml")):
            cfg = _load_yaml(path)
            files = [path]
        elif path.endswith(".py"):
            cfg, files = load_python_config(path)
        else:
            raise ConfigError(f"config file '{path}' must end in .py or .yaml.")
        remember_source_files(cfg, files)
        if check:
            LazyConfig.check(cfg)
        return cfg if keys is None else select_keys(cfg, keys, path)

    @staticmethod
    def load_rel(filename: PathLike, keys: Union[str, tuple[str, ...], None] = None, *, check: bool = True) -> Any:
        """:meth:`load` with ``filename`` relative to the file that calls it, as detectron2's ``load_rel``.

        Inside a config file it works like a relative import whose name need not be a Python identifier
        (``LazyConfig.load_rel("base-exp.py", "model")``): errors and import cycles name the calling line.
        """
        caller = sys._getframe(1)
        caller_file = caller.f_globals.get("__file__") or caller.f_code.co_filename
        if not caller_file or caller_file.startswith("<"):
            raise ConfigError(
                f"LazyConfig.load_rel('{os.fspath(filename)}') was called from code that is not in a file.",
                hint="Use LazyConfig.load with a path instead.",
            )
        path = os.path.join(os.path.dirname(os.path.abspath(caller_file)), os.fspath(filename))
        values = load_within_config(caller.f_globals, path, caller.f_lineno) if path.endswith(".py") else None
        if values is not None:
            return values if keys is None else select_keys(values, keys, path)
        return LazyConfig.load(path, keys, check=check)

    @staticmethod
    def check(cfg: DictConfig) -> None:
        """Check the config after overrides: every interpolation resolves (key, file:line, close matches) and
        every argument of every ``L(...)`` call has the type its target's annotations ask for."""
        check_interpolations(cfg)
        check_types(cfg)

    @staticmethod
    def apply_overrides(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
        """Apply ``key=value`` strings in place (values parse as Python / YAML literals) and return ``cfg``.

        A key must exist, or be an argument that the target of its parent ``L(...)`` call accepts;
        ``+key=value`` adds a new key. A dict value merges into the node there, as omegaconf's
        ``update(merge=True)`` and detectron2 do: ``optimizer={'lr': 0.5}`` sets ``optimizer.lr`` and keeps
        the other keys (each of its keys is checked as its own override). Any other value replaces the node.
        The keys set are remembered, so that errors about them say "command line".
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
            value = parse_value(text)
            set_keys = _merged_keys(cfg, key, value)
            if not add:
                for set_key in set_keys:
                    _check_override_key(cfg, set_key)
            _check_not_in_tuple(cfg, key, value)
            try:
                OmegaConf.update(cfg, key, value, merge=True, force_add=True)
            except Exception as e:
                reason = omegaconf_reason(e)
                raise ConfigError(f"cannot set this key to {value!r}: {reason}.", key=key) from None
            remember_overrides(cfg, set_keys)
        return cfg

    @staticmethod
    def to_py(cfg: DictConfig, prefix: str = "") -> str:
        """The config as the text of a Python config file that :meth:`load` turns back into an equal config.

        detectron2's ``to_py`` writes readable code that need not run; this one runs. ``prefix`` is written
        before each top-level name (detectron2 uses ``"cfg."``); only the empty default gives a loadable file.
        A value Python source cannot spell (a lambda, a tensor) is a ConfigError naming its key. A tuple is
        written as a tuple; omegaconf 2.3 stores tuples as lists, so there it is written (and comes back) as
        a list.
        """
        from .python_writer import config_to_python

        return config_to_python(cfg, prefix)

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
                warnings.warn(  # the type, not the repr: a model object's repr is its whole module tree
                    f"config key '{key}' holds {_what(value)}, which YAML cannot store; "
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


def _what(value: Any) -> str:
    """``a torch.nn.Linear object``, ``the function <lambda>``: one line, whatever the value's repr."""
    if isinstance(value, type):
        return f"the class {value.__module__}.{value.__qualname__}"
    if callable(value) and hasattr(value, "__qualname__"):
        return f"the function {value.__qualname__}"
    return f"a {type(value).__module__}.{type(value).__qualname__} object"


def select_keys(cfg: DictConfig, keys: Union[str, tuple[str, ...]], path: str) -> Any:
    """``cfg[keys]`` for one name, a tuple of values for a tuple of names (``LazyConfig.load(path, keys)``)."""
    names = (keys,) if isinstance(keys, str) else tuple(keys)
    for name in names:
        if name not in cfg:
            raise ConfigError(
                f"config file '{shown_path(path)}' has no top-level key '{name}'.",
                hint=did_you_mean(name, [str(k) for k in cfg]) or f"It has: {', '.join(str(k) for k in cfg)}.",
            )
    return cfg[keys] if isinstance(keys, str) else tuple(cfg[name] for name in names)


def _merged_keys(cfg: DictConfig, key: str, value: Any) -> list[str]:
    """The keys an override sets: a dict merged into an existing node sets each of its leaves."""
    node = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
    if not isinstance(value, Mapping) or not value or not isinstance(node, DictConfig) or node._is_none():
        return [key]
    keys = []
    for k, v in value.items():
        keys.extend(_merged_keys(cfg, f"{key}.{k}", v) if isinstance(v, Mapping) else [f"{key}.{k}"])
    return keys


def resolved_copy(cfg: DictConfig) -> DictConfig:
    """A copy of ``cfg`` with every interpolation replaced by its value."""
    # a deep copy, not a rebuilt tree: a rebuilt tree would turn dataclass targets and values into dicts
    resolved = copy.deepcopy(cfg)
    OmegaConf.resolve(resolved)
    return resolved


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


_MISSING = object()


def _is_unset(cfg: DictConfig, key: str) -> bool:
    """Whether ``key`` exists and holds '???' (a required value not set yet)."""
    try:
        return raw_value(cfg, key) == "???"
    except Exception:  # a part of the key is not a config node
        return False


def _check_not_in_tuple(cfg: DictConfig, key: str, value: Any) -> None:
    """An item of a tuple (immutable in omegaconf 2.4) cannot be set: say how to set the whole tuple."""
    parent_key, _, last = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key, default=None, throw_on_resolution_failure=False)
    if not is_tuple_config(parent) or not last.isdigit() or int(last) >= len(parent):
        return
    items = list(OmegaConf.to_container(parent, resolve=False))  # type: ignore[arg-type]
    items[int(last)] = value
    raise ConfigError(
        f"'{parent_key}' is a tuple, whose items cannot be set one by one.",
        key=key,
        hint=f"Set the whole tuple: {parent_key}={items!r}",
    )


def _check_override_key(cfg: DictConfig, key: str) -> None:
    if OmegaConf.select(cfg, key, default=_MISSING, throw_on_resolution_failure=False) is not _MISSING:
        return
    if _is_unset(cfg, key):  # select gives the default for '???' too: a required value is a key to set
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


def _configs_in(directory: str) -> str:
    """The hint for a directory given as the config: a few of the configs it holds."""
    names = sorted(n for n in os.listdir(directory) if n.endswith((".py", ".yaml", ".yml")) and n != "__init__.py")
    if not names:
        return "Give the path of a .py or .yaml config file."
    shown = [os.path.join(directory, n) for n in names[:3]]
    if len(names) == 1:
        return f"Give the config file in it: {shown[0]}."
    return f"Give one of the {len(names)} config files in it, such as {', '.join(shown[:-1])} or {shown[-1]}."
