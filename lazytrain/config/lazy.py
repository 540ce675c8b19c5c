"""`LazyCall` records a call as a DictConfig with a `_target_`; helpers to name, locate and check targets."""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable, Iterable
from typing import Any, Optional, Union

from omegaconf import DictConfig

from ..errors import ConfigError, did_you_mean

__all__ = ["LazyCall", "check_arguments", "locate", "target_name", "target_signature"]

TARGET_KEY = "_target_"
ARGS_KEY = "_args_"  # positional arguments a signature cannot name (builtins, *args)


class LazyCall:
    """``LazyCall(target)(**kwargs)`` returns a config of the call instead of making it.

    The result is an omegaconf ``DictConfig`` with a ``_target_`` key; :func:`instantiate` builds it.
    Positional arguments are bound to parameter names now, so every argument is a key users can override::

        optimizer = L(torch.optim.SGD)(lr=0.1, momentum=0.9)
        optimizer.lr = 0.05            # still a config
    """

    def __init__(self, target: Union[Callable[..., Any], str]) -> None:
        if not (callable(target) or isinstance(target, str)):
            raise ConfigError(f"LazyCall needs a class or a function to call, got {type(target).__name__} {target!r}.")
        self._target = target

    def __call__(self, *args: Any, **kwargs: Any) -> DictConfig:
        target = self._target
        if callable(target):
            kwargs = _bind_positional(target, args, kwargs)
            check_arguments(target, kwargs)
            args = ()
        content: dict[str, Any] = {TARGET_KEY: target}
        if args:
            content[ARGS_KEY] = list(args)
        content.update(kwargs)
        return DictConfig(content=content, flags={"allow_objects": True})


def target_signature(target: Callable[..., Any]) -> Optional[inspect.Signature]:
    """The signature to check arguments against, or None when Python cannot tell (some builtins)."""
    try:
        return inspect.signature(target)
    except (TypeError, ValueError):
        return None


def _bind_positional(target: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    if not args:
        return kwargs
    sig = target_signature(target)
    if sig is None:
        raise ConfigError(
            f"{target_name(target)}() takes positional arguments whose names Python cannot inspect; "
            "pass them as keyword arguments."
        )
    positional = [
        p
        for p in sig.parameters.values()
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    if len(args) > len(positional):
        raise ConfigError(
            f"{target_name(target)}() takes at most {len(positional)} positional arguments "
            f"({', '.join(p.name for p in positional) or 'none'}), got {len(args)}."
        )
    bound = dict(kwargs)
    for param, value in zip(positional, args):
        if param.name in bound:
            raise ConfigError(f"{target_name(target)}() got two values for argument '{param.name}'.")
        bound[param.name] = value
    return bound


def check_arguments(target: Callable[..., Any], names: Iterable[str]) -> None:
    """Raise a ConfigError naming any argument the target does not accept, with close matches.

    Targets that take ``**kwargs`` accept anything and are not checked.
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
        raise ConfigError(f"{target_name(target)}() got an unexpected argument '{name}'.", hint=hint)


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
