"""Type checks before anything is built: each ``L(...)`` argument against its target's annotations. An error
names the key, where it was set (file:line or the command line), the expected type and the value. (The run
settings, ``train.*``, are checked by type and range in ``lazytrain.engine.settings``.)
"""

from __future__ import annotations

import collections.abc as abc
import enum
import inspect
import numbers
import sys
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Optional, Union

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from ..errors import ConfigError
from .interpolation import check_interpolations, omegaconf_reason
from .lazy import ARGS_KEY, SEQUENCE_CONFIGS, TARGET_KEY, is_structured_class, is_tuple_config, locate, target_name
from .provenance import key_line, set_on_command_line

__all__ = ["check_types", "matches_type", "type_name"]

_NOT_CHECKED = inspect.Parameter.empty
_SEQUENCES = (list, tuple, abc.Sequence, abc.MutableSequence, abc.Collection, abc.Iterable)
_MAPPINGS = (dict, abc.Mapping, abc.MutableMapping)
# arguments that lazytrain fills when a config leaves them None (engine/build.py, build_optimizer): the
# model's parameters, and the model given to a parameter-groups call such as params=L(groups)(model=None)
FILLED_WHEN_NONE = frozenset({"optimizer.params", "optimizer.params.model"})


def check_types(cfg: DictConfig) -> None:
    """Raise a ConfigError for the first argument of an ``L(...)`` call whose value does not have the type
    the target's annotation names. Values are checked after interpolation; a nested call config is checked
    by its target's return type (a class: the class itself) and accepted when that is not annotated.
    Unannotated parameters, ``Any`` and annotations that do not resolve are not checked; None is accepted
    where lazytrain fills the value (``optimizer.params``: the model's parameters), and a value not set yet
    (``'???'``) anywhere. An interpolation that does not resolve is a ConfigError too (as
    :meth:`LazyConfig.check` names it), never omegaconf's own exception."""
    try:
        _check_tree(cfg, cfg, "")
    except InterpolationResolutionError as e:
        check_interpolations(cfg)  # raises the ConfigError naming key, file and line
        key = str(e.full_key) if getattr(e, "full_key", None) else None
        raise ConfigError(f"bad interpolation: {omegaconf_reason(e)}.", key=key) from None


def matches_type(value: Any, expected: Any) -> bool:
    """Whether a config value fits the annotation ``expected``; a call config fits when its target's return
    type does (or is unknown). Annotations this cannot decide are taken to fit."""
    if expected is _NOT_CHECKED or expected is Any or isinstance(expected, (str, typing.TypeVar)):
        return True
    if value is _NOT_SET:
        return True
    if _is_call(value):
        returned = return_type(value._get_node(TARGET_KEY)._value())  # type: ignore[union-attr]
        return returned is _NOT_CHECKED or _type_fits(returned, expected)
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if expected is None or expected is type(None):
        return value is None
    if origin in (Union, types.UnionType):
        return any(matches_type(value, arg) for arg in args)
    if origin is Literal:
        return any(type(value) is type(arg) and value == arg for arg in args)
    if expected is float:  # an int is a float; numpy's numbers are numbers too (numpy's bool is not)
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if origin in _SEQUENCES or expected in _SEQUENCES:
        return _matches_sequence(value, origin or expected, args)
    if origin in _MAPPINGS or expected in _MAPPINGS:
        return _matches_mapping(value, args)
    if origin is type:
        return isinstance(value, type) and (not args or not isinstance(args[0], type) or issubclass(value, args[0]))
    if origin in (abc.Callable,) or expected is abc.Callable:
        return callable(value)
    if isinstance(value, DictConfig) and is_structured_class(OmegaConf.get_type(value)):
        return isinstance(expected, type) and issubclass(OmegaConf.get_type(value), expected)  # type: ignore[arg-type]
    if origin is not None:
        expected = origin
    if not isinstance(expected, type):
        return True
    if isinstance(value, (DictConfig, *SEQUENCE_CONFIGS)):
        return issubclass(_plain_type(value), expected) or _is_abstract_container(expected, value)
    try:
        return isinstance(value, expected)
    except TypeError:  # a Protocol that is not runtime-checkable, and the like
        return True


def _matches_sequence(value: Any, kind: Any, args: tuple[Any, ...]) -> bool:
    if not isinstance(value, (list, tuple, *SEQUENCE_CONFIGS)):
        return False
    items = [_item(value, i) for i in range(len(typing.cast(abc.Sized, value)))]
    if kind is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        return len(items) == len(args) and all(matches_type(v, a) for v, a in zip(items, args))
    return not args or all(matches_type(v, args[0]) for v in items)


def _matches_mapping(value: Any, args: tuple[Any, ...]) -> bool:
    if _is_call(value) or not isinstance(value, (dict, DictConfig)):
        return False
    if isinstance(value, DictConfig) and is_structured_class(OmegaConf.get_type(value)):
        return False
    if len(args) != 2:
        return True
    return all(matches_type(k, args[0]) and matches_type(_item(value, k), args[1]) for k in value)


_NOT_SET = object()  # an item whose value is '???': not known yet, so it fits any type


def _item(container: Any, k: Any) -> Any:
    """``container[k]``, or ``_NOT_SET`` when a config holds '???' there."""
    if OmegaConf.is_config(container):
        node = container._get_node(k)
        if node is not None and node._is_missing():
            return _NOT_SET
    return container[k]


def _is_abstract_container(expected: type, value: Any) -> bool:
    try:
        return isinstance(value, expected)
    except TypeError:
        return True


def _type_fits(returned: Any, expected: Any) -> bool:
    """Whether what a call returns (an annotation) fits ``expected``; undecidable cases fit."""
    if expected is Any or returned is Any:
        return True
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if origin in (Union, types.UnionType):
        return any(_type_fits(returned, arg) for arg in args)
    if typing.get_origin(returned) in (Union, types.UnionType):
        return all(_type_fits(arg, expected) for arg in typing.get_args(returned))
    if origin is Literal:
        return False
    returned = typing.get_origin(returned) or returned
    expected = origin or expected
    if expected is float and returned is int:
        return True
    if not (isinstance(returned, type) and isinstance(expected, type)):
        return True
    try:
        return issubclass(returned, expected)
    except TypeError:
        return True


def return_type(target: Any) -> Any:
    """What calling ``target`` gives, as an annotation: a class gives itself, a function its annotated
    return type; ``inspect.Parameter.empty`` when not known."""
    if isinstance(target, str):
        try:
            target = locate(target)
        except ConfigError:
            return _NOT_CHECKED
    if isinstance(target, type):
        return target
    if not callable(target) or isinstance(target, Mapping):
        return _NOT_CHECKED
    return _hints(target).get("return", _NOT_CHECKED)


def parameter_types(target: Any) -> dict[str, Any]:
    """The annotation of each parameter of ``target`` that has one that resolves (string annotations
    included); parameters without one are absent."""
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return {}
    hints = _hints(typing.cast(Any, target).__init__ if isinstance(target, type) else target)
    if not hints and is_structured_class(target):
        hints = _hints(target)  # a dataclass's fields
    out = {}
    for name, param in sig.parameters.items():
        hint = hints.get(name, param.annotation)
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or hint is _NOT_CHECKED or isinstance(hint, str):
            continue
        if param.default is None and hint is not None:
            hint = Optional[hint]  # `x: int = None`: the default is always allowed
        out[name] = hint
    return out


def _hints(obj: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(obj)
    except Exception:
        pass
    # one annotation that does not resolve leaves the others checked
    annotations = getattr(obj, "__annotations__", None) or {}
    namespace = getattr(inspect.unwrap(obj), "__globals__", None) or vars(sys.modules.get(obj.__module__, sys))
    out = {}
    for name, hint in annotations.items():
        if isinstance(hint, str):
            try:
                hint = eval(hint, dict(namespace))
            except Exception:
                continue
        out[name] = hint
    return out


def type_name(expected: Any) -> str:
    """An annotation as users write it: ``int``, ``Optional[float]``, ``list[int]``, ``torch.nn.Module``."""
    if expected is None or expected is type(None):
        return "None"
    if expected is Ellipsis:
        return "..."
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if origin in (Union, types.UnionType):
        others = [a for a in args if a is not type(None)]
        if len(others) == 1 and len(args) == 2:
            return f"Optional[{type_name(others[0])}]"
        return "Union[" + ", ".join(type_name(a) for a in args) + "]"
    if origin is Literal:
        return "Literal[" + ", ".join(repr(a) for a in args) + "]"
    if origin is not None and args:
        return f"{_short_name(origin)}[{', '.join(_arg_name(a) for a in args)}]"
    if isinstance(expected, type):
        return _short_name(expected)
    return repr(expected).replace("typing.", "")


def _arg_name(arg: Any) -> str:
    """An argument of a generic: a type, or the parameter list of a Callable (``[int, str]``)."""
    if isinstance(arg, (list, tuple)):
        return "[" + ", ".join(type_name(a) for a in arg) + "]"
    return type_name(arg)


def _short_name(obj: Any) -> str:
    """``dict``, ``Sequence``, ``torch.nn.Module``: builtins and abstract collections by their own name."""
    if getattr(obj, "__module__", None) in ("builtins", "collections.abc", "typing"):
        return str(getattr(obj, "__qualname__", obj))
    return target_name(obj)


def _check_tree(root: DictConfig, node: Any, key: str) -> None:
    if isinstance(node, DictConfig):
        if node._is_none() or node._is_missing():
            return
        if _is_call(node):
            _check_call(root, node, key)
        for k in node:
            if k != TARGET_KEY:
                _check_tree(root, node._get_node(k), _join(key, k))
    elif isinstance(node, SEQUENCE_CONFIGS):
        if node._is_none() or node._is_missing():
            return
        for i in range(len(node)):
            _check_tree(root, node._get_node(i), _join(key, i))


def _check_call(root: DictConfig, node: DictConfig, key: str) -> None:
    target = node._get_node(TARGET_KEY)._value()  # type: ignore[union-attr]
    if isinstance(target, str):
        try:
            target = locate(target)
        except ConfigError:
            return  # instantiate reports a target that does not import
    if not callable(target) or isinstance(target, Mapping):
        return
    for name, expected in parameter_types(target).items():
        if name not in node or name == ARGS_KEY:
            continue
        child = node._get_node(name)
        if child is None or child._is_missing():  # type: ignore[union-attr]
            continue
        value = node[name]
        path = _join(key, name)
        if value is None and path in FILLED_WHEN_NONE:
            continue
        if not matches_type(value, expected):
            _fail(root, path, value, expected, raw=child._value(), target=target)  # type: ignore[union-attr]


def _fail(root: DictConfig, key: str, value: Any, expected: Any, raw: Any, target: Any) -> None:
    what = f"{_short_name(target)}() argument '{key.rsplit('.', 1)[-1]}'"
    message = f"{what} expects {type_name(expected)}, got {_show(value)}"
    if isinstance(raw, str) and raw != value and "${" in raw:
        message += f" (from {raw!r})"
    file, line = (None, None)
    if set_on_command_line(root, key):
        message += ", set on the command line"
    else:
        file, line = key_line(root, key)
    hint = _hint(expected)
    raise ConfigError(message + ".", file=file, line=line, key=key, hint=hint)


def _hint(expected: Any) -> Optional[str]:
    if typing.get_origin(expected) is Literal:
        return "Use one of: " + ", ".join(repr(a) for a in typing.get_args(expected)) + "."
    if isinstance(expected, type) and issubclass(expected, enum.Enum):
        return "Use one of: " + ", ".join(f"{target_name(expected)}.{m.name}" for m in expected) + "."
    return None


def _show(value: Any) -> str:
    if _is_call(value):
        return f"a call of {_short_name(value._get_node(TARGET_KEY)._value())}(...)"
    if isinstance(value, (DictConfig, *SEQUENCE_CONFIGS)):
        plain = OmegaConf.to_container(value, resolve=True)
        return f"{plain!r} ({_plain_type(value).__name__})"
    if type(value).__module__ == "numpy" and hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return f"{value.item()!r} (numpy.{type(value).__name__})"  # 1.5 (numpy.float64), not np.float64(1.5)
    return f"{value!r} ({type(value).__name__})"


def _plain_type(node: Any) -> type:
    """What a config node stands for: ``dict``, ``list`` or ``tuple`` (omegaconf 2.4's TupleConfig)."""
    if isinstance(node, DictConfig):
        return dict
    return tuple if is_tuple_config(node) else list


def _is_call(value: Any) -> bool:
    return isinstance(value, DictConfig) and not value._is_none() and TARGET_KEY in value


def _join(key: str, k: Any) -> str:
    return f"{key}.{k}" if key else str(k)
