"""`LazyCall` records a call as a DictConfig with a `_target_`; helpers to name, locate and check targets."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import sys
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Optional, Union

import omegaconf
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.nodes import AnyNode

from ..errors import ConfigError, did_you_mean

__all__ = [
    "SEQUENCE_CONFIGS",
    "LazyCall",
    "check_arguments",
    "config_dict",
    "flat_keys",
    "locate",
    "raw_value",
    "target_name",
    "target_signature",
]

TARGET_KEY = "_target_"
ARGS_KEY = "_args_"  # positional arguments a signature cannot name (builtins, *args)

# omegaconf 2.4 keeps a tuple as a TupleConfig (immutable, not a ListConfig); 2.3 turns it into a ListConfig
TUPLE_CONFIG: Optional[type] = getattr(omegaconf, "TupleConfig", None)
# the config nodes that hold a sequence: test with isinstance(node, SEQUENCE_CONFIGS), never ListConfig alone
SEQUENCE_CONFIGS: tuple[Any, ...] = (ListConfig,) if TUPLE_CONFIG is None else (ListConfig, TUPLE_CONFIG)


def is_tuple_config(node: Any) -> bool:
    """Whether ``node`` is omegaconf 2.4's config of a tuple (always False on omegaconf 2.3)."""
    return TUPLE_CONFIG is not None and isinstance(node, TUPLE_CONFIG)


def config_dict(values: Optional[Mapping[str, Any]] = None, /, **kwargs: Any) -> DictConfig:
    """``dict(...)`` as the DictConfig a config file's dict becomes when it is loaded, for parts that other
    config files change by attribute (``train.max_iter = 300`` after ``from .common.train import train``):
    typed so, an editor (pyright, Pylance) checks that access as it runs. The loader treats both the same."""
    created = OmegaConf.create({**(values or {}), **kwargs}, flags={"allow_objects": True})  # as the loader does
    return typing.cast(DictConfig, created)


def raw_value(cfg: DictConfig, key: str) -> Any:
    """The value at the dotted ``key`` as written, interpolations not resolved (``'${train.seed}'``), or None
    where a part of the key is absent. A part below a value that is not a config node raises."""
    node: Any = cfg
    for part in key.split("."):
        node = node._get_node(int(part) if isinstance(node, SEQUENCE_CONFIGS) else part)
        if node is None:
            return None
    return node._value()


def flat_keys(cfg: Any, prefix: str = "") -> Iterator[str]:
    """Every key path in the tree (``train.amp.enabled``), parents before children."""
    if isinstance(cfg, DictConfig):
        for k in cfg:
            path = f"{prefix}.{k!s}" if prefix else str(k)
            yield path
            yield from flat_keys(cfg._get_node(k), path)
    elif isinstance(cfg, SEQUENCE_CONFIGS):
        for i in range(len(cfg)):
            path = f"{prefix}.{i}"
            yield path
            yield from flat_keys(cfg._get_node(i), path)


class LazyCall:
    """``LazyCall(target)(*args, **kwargs)`` returns a config of the call instead of making it.

    The result is an omegaconf ``DictConfig`` with a ``_target_`` key; :func:`instantiate` builds it.
    Positional arguments are bound to parameter names now, so every argument is a key users can override::

        optimizer = L(torch.optim.SGD)(lr=0.1, momentum=0.9)
        optimizer.lr = 0.05            # still a config

    Positional arguments that no parameter name takes (``*args``, as in ``L(torch.nn.Sequential)(a, b)``)
    are kept in order under ``_args_``. The target may itself be a call config: it is built first and
    what it returns is called with these arguments (checked against that object when it is built).
    """

    def __init__(self, target: Union[Callable[..., Any], str, DictConfig]) -> None:
        if isinstance(target, Mapping) and TARGET_KEY not in target:
            raise ConfigError(
                f"LazyCall got a dict as its target, {dict(target)!r}; a target is a class, a function, "
                "its dotted import path, or a call config L(...)(...) whose result is called.",
                hint="To add arguments to a call config, set them on it: cfg = L(Cls)(a=1); cfg.b = 2.",
            )
        if not (callable(target) or isinstance(target, (str, Mapping))):
            raise ConfigError(f"LazyCall needs a class or a function to call, got {type(target).__name__} {target!r}.")
        self._target = target

    def __call__(self, *args: Any, **kwargs: Any) -> DictConfig:
        target = self._target
        if callable(target) and not isinstance(target, Mapping):
            kwargs, args = _bind_positional(target, args, kwargs)
            check_arguments(target, kwargs)
        content: dict[str, Any] = {TARGET_KEY: target_node(target)}
        if args:
            content[ARGS_KEY] = list(args)
        content.update(kwargs)
        try:
            return DictConfig(content=content, flags={"allow_objects": True})
        except omegaconf.errors.OmegaConfBaseException as e:  # e.g. '???' inside a tuple (omegaconf 2.4)
            text = str(getattr(e, "msg", None) or e).strip().splitlines()[0].rstrip(".")
            raise ConfigError(f"cannot record the call of {target_name(target)}(...): {text}.") from None


def target_node(target: Any) -> Any:
    """What to store under ``_target_``: omegaconf would turn a dataclass or attrs class into a config of
    its fields (and refuses ``dict``), so a class is stored in a node that holds it as it is."""
    if isinstance(target, type):
        return AnyNode(target, flags={"allow_objects": True})
    return target


def is_structured_class(cls: Any) -> bool:
    """True for a dataclass or attrs class (or instance): omegaconf stores those as typed configs."""
    return dataclasses.is_dataclass(cls) or hasattr(cls, "__attrs_attrs__")


def target_signature(target: Callable[..., Any]) -> Optional[inspect.Signature]:
    """The signature to check arguments against, or None when Python cannot tell (some builtins)."""
    try:
        return inspect.signature(target)
    except (TypeError, ValueError):
        return None


def _bind_positional(target: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> tuple[dict[str, Any], tuple]:
    """Name the positional arguments a parameter takes; return the keyword arguments and the positional
    ones left over for ``*args`` (or all of them when Python cannot inspect the target)."""
    if not args:
        return kwargs, ()
    sig = target_signature(target)
    if sig is None:
        return kwargs, args
    params = sig.parameters.values()
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    takes_varargs = any(p.kind is p.VAR_POSITIONAL for p in params)
    if len(args) > len(positional) and not takes_varargs:
        raise ConfigError(
            f"{target_name(target)}() takes at most {len(positional)} positional arguments "
            f"({', '.join(p.name for p in positional) or 'none'}), got {len(args)}."
        )
    bound = dict(kwargs)
    for param, value in zip(positional, args):
        if param.name in bound:
            raise ConfigError(f"{target_name(target)}() got two values for argument '{param.name}'.")
        bound[param.name] = value
    return bound, args[len(positional) :]


def positional_call_arguments(
    target: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]
) -> tuple[list[Any], dict[str, Any]]:
    """The ``(args, kwargs)`` to call ``target`` with: parameters that must come before ``*args`` (or are
    positional-only) move from ``kwargs`` to the front of ``args``, in order."""
    sig = target_signature(target)
    if sig is None:
        return args, kwargs
    params = list(sig.parameters.values())
    if not args and not any(p.kind is p.POSITIONAL_ONLY for p in params):
        return args, kwargs
    kwargs = dict(kwargs)
    leading = []
    for p in params:
        if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) or p.name not in kwargs:
            break
        if p.kind is p.POSITIONAL_OR_KEYWORD and not args:
            break
        leading.append(kwargs.pop(p.name))
    return [*leading, *args], kwargs


def check_arguments(target: Callable[..., Any], names: Iterable[str], who: Optional[str] = None) -> None:
    """Raise a ConfigError naming any argument the target does not accept, with close matches.

    Targets that take ``**kwargs`` accept anything and are not checked. ``who`` names the target in the
    message (default: ``torch.optim.SGD()``).
    """
    sig = target_signature(target)
    if sig is None:
        return
    params = sig.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if p.kind not in (inspect.Parameter.VAR_POSITIONAL,)]
    for name in names:
        if name in (TARGET_KEY, ARGS_KEY) or name in accepted:
            continue
        hint = did_you_mean(name, accepted) or f"It accepts: {', '.join(accepted) or 'no arguments'}."
        raise ConfigError(f"{who or target_name(target) + '()'} got an unexpected argument '{name}'.", hint=hint)


def accepts_argument(target: Any, name: str) -> bool:
    """Whether a config node's target would take ``name`` (used to allow overrides of defaulted args)."""
    if isinstance(target, str):
        try:
            target = locate(target)
        except ConfigError:
            return False
    sig = target_signature(target) if callable(target) else None
    if sig is None:
        return False
    params = sig.parameters
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def target_name(target: Any) -> str:
    """The shortest public dotted path that imports back to ``target`` (``torch.optim.SGD``)."""
    if isinstance(target, str):
        return target
    module = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", None) or getattr(target, "__name__", None)
    if not module or not qualname:
        return repr(target)
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        prefix = ".".join(parts[:i])
        mod = sys.modules.get(prefix)
        if mod is not None and _getattr_path(mod, qualname) is target:
            return f"{prefix}.{qualname}"
    return f"{module}.{qualname}"


def is_importable(target: Any) -> bool:
    """True when ``locate(target_name(target))`` gives back the same object (YAML can store it)."""
    name = target_name(target)
    if "<" in name:  # <lambda>, <locals>
        return False
    try:
        return locate(name) is target
    except ConfigError:
        return False


def locate(path: str) -> Any:
    """Import ``a.b.C`` (module part and attribute part found automatically)."""
    parts = path.split(".")
    module = None
    split = 0
    for i in range(len(parts), 0, -1):
        name = ".".join(parts[:i])
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name is not None and not name.startswith(e.name) and not e.name.startswith(name):
                raise ConfigError(f"cannot import '{path}': {e}.") from e
            continue
        split = i
        break
    if module is None:
        raise ConfigError(f"cannot import '{path}': no module '{parts[0]}'. Is it installed or on PYTHONPATH?")
    obj = _getattr_path(module, ".".join(parts[split:])) if split < len(parts) else module
    if obj is None:
        raise ConfigError(f"cannot import '{path}': module '{module.__name__}' has no '{parts[split]}'.")
    return obj


def _getattr_path(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj
