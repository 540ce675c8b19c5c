"""A config back to the text of a Python config file that loads to an equal config (``LazyConfig.to_py``)."""

from __future__ import annotations

import keyword
import math
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf, SCMode

from ..errors import ConfigError
from .lazy import ARGS_KEY, TARGET_KEY, is_importable, positional_call_arguments, target_name
from .yaml_io import structured_fields

__all__ = ["config_to_python", "value_to_python"]


def config_to_python(cfg: DictConfig, prefix: str = "") -> str:
    """One assignment per top-level key, after the imports its targets need; interpolations stay
    ``"${...}"`` strings. ``prefix`` goes before each top-level name."""
    writer = _Writer({str(k) for k in cfg})
    lines = []
    for k in cfg:
        name = str(k)
        if not name.isidentifier() or keyword.iskeyword(name):
            raise ConfigError(
                "this top-level key is not a Python name, so a Python config file cannot define it.",
                key=name,
                hint="Save the config as YAML with LazyConfig.save instead.",
            )
        value = _container(cfg._get_node(k))
        if callable(value) and not isinstance(value, Mapping):
            raise ConfigError(
                "a top-level class or function is not a config value of a Python config file.",
                key=name,
                hint="Put it inside a dict or a call, or save the config as YAML with LazyConfig.save.",
            )
        lines.append(f"{prefix}{name} = {writer.value(value, name)}")
    header = ["# written by LazyConfig.to_py; LazyConfig.load reads it back", *writer.imports(), ""]
    return "\n".join([*header, *lines]) + "\n"


def value_to_python(node: Any, key: str) -> str:
    """The Python expression a config file would write for ``node``, the value at ``key``: a call config as
    ``L(toyproj.model.MLPClassifier)(hidden=32)``, a dict as a literal (names qualified by their module, as
    the file would import it). A ConfigError where a value has no source form."""
    return _Writer(set()).value(_container(node), key)


def _container(node: Any) -> Any:
    if isinstance(node, DictConfig) or OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=False, structured_config_mode=SCMode.DICT_CONFIG)
    return node._value() if hasattr(node, "_value") else node


class _Writer:
    def __init__(self, taken: set[str]) -> None:
        self.taken = taken
        self.lazy_call = "L" if "L" not in taken else "_LazyCall"
        self.modules: dict[str, str] = {}  # module -> the name the file refers to it by
        self.uses_lazy_call = False

    def imports(self) -> list[str]:
        lines = []
        for module, alias in sorted(self.modules.items()):
            lines.append(f"import {module}" if alias == module else f"import {module} as {alias}")
        if self.uses_lazy_call:
            lines.append(f"from lazytrain.config import LazyCall as {self.lazy_call}")
        return lines

    def value(self, value: Any, key: str) -> str:
        if isinstance(value, DictConfig):  # a dataclass value: its class called with its fields
            cls = OmegaConf.get_type(value)
            fields = structured_fields(value)
            return f"{self.reference(cls, key)}({self.arguments([], fields, key)})"
        if isinstance(value, Mapping) and TARGET_KEY in value:
            return self.call(dict(value), key)
        if isinstance(value, Mapping):
            # a literal, not dict(...): a top-level key may be named `dict`
            items = ", ".join(f"{k!r}: {self.value(v, f'{key}.{k}')}" for k, v in value.items())
            return "{" + items + "}"
        if isinstance(value, (list, tuple)):
            items = ", ".join(self.value(v, f"{key}.{i}") for i, v in enumerate(value))
            if isinstance(value, list):
                return f"[{items}]"
            return f"({items},)" if len(value) == 1 else f"({items})"
        if isinstance(value, float) and not math.isfinite(value):
            return f"-{self.module('math')}.inf" if value < 0 else f"{self.module('math')}.{value}"
        if isinstance(value, (str, int, float, bool, type(None))):
            return repr(value)
        if callable(value):
            return self.reference(value, key)
        raise _unwritable(key, value)

    def call(self, content: dict[str, Any], key: str) -> str:
        target = content.pop(TARGET_KEY)
        args = list(content.pop(ARGS_KEY, []))
        if args and callable(target) and not isinstance(target, Mapping):
            # parameters before *args were bound to names by L(): they go back in front, positionally
            args, content = positional_call_arguments(target, args, content)
        if isinstance(target, str):
            written = repr(target)
        elif isinstance(target, Mapping):
            written = self.value(target, f"{key}.{TARGET_KEY}")
        else:
            written = self.reference(target, f"{key}.{TARGET_KEY}")
        self.uses_lazy_call = True
        return f"{self.lazy_call}({written})({self.arguments(args, content, key)})"

    def arguments(self, args: list[Any], kwargs: Mapping[Any, Any], key: str) -> str:
        parts = [self.value(v, f"{key}.{ARGS_KEY}.{i}") for i, v in enumerate(args)]
        named = {str(k): v for k, v in kwargs.items()}
        plain = {k: v for k, v in named.items() if k.isidentifier() and not keyword.iskeyword(k)}
        parts += [f"{k}={self.value(v, f'{key}.{k}')}" for k, v in plain.items()]
        odd = {k: v for k, v in named.items() if k not in plain}
        if odd:
            parts.append("**{" + ", ".join(f"{k!r}: {self.value(v, f'{key}.{k}')}" for k, v in odd.items()) + "}")
        return ", ".join(parts)

    def reference(self, obj: Any, key: str) -> str:
        """``torch.nn.Linear`` for an importable class or function, with its module imported."""
        if not is_importable(obj):
            raise _unwritable(key, obj)
        name = target_name(obj)
        qualname = getattr(obj, "__qualname__", "")
        module = name[: -len(qualname) - 1] if qualname and name.endswith("." + qualname) else obj.__module__
        return f"{self.module(module)}.{qualname or name.rsplit('.', 1)[-1]}"

    def module(self, module: str) -> str:
        """The name the file refers to ``module`` by (imported; renamed when a top-level key takes its name)."""
        if module not in self.modules:
            root = module.split(".")[0]
            self.modules[module] = module if root not in self.taken else "_" + module.replace(".", "_")
        return self.modules[module]


def _unwritable(key: str, value: Any) -> ConfigError:
    return ConfigError(
        f"{value!r} cannot be written as Python source (it is not an importable class or function, nor a literal).",
        key=key,
        hint="Save the config with LazyConfig.save: YAML, with such values in a cloudpickle file beside it.",
    )
