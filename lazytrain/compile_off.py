"""Methods that torch.compile must not trace (their first call reads files), marked with :func:`not_compiled` and
switched to ``torch.compiler.disable`` by :func:`disable_marked_methods` just before ``train.compile`` compiles
the model. Decorating with ``torch.compiler.disable`` directly imports torch._dynamo (1-2 s on 2 cores) when the
model's module is imported, which `lazytrain config` and `lazytrain hooks` would pay just for loading a config
that names the model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch

__all__ = ["disable_marked_methods", "not_compiled"]

F = TypeVar("F", bound=Callable[..., Any])

_MARK = "lazytrain_not_compiled"
_DONE = "lazytrain_compile_disabled"


def not_compiled(method: F) -> F:
    """Mark ``method`` as one torch.compile skips (see :func:`disable_marked_methods`); no import happens."""
    setattr(method, _MARK, True)
    return method


def disable_marked_methods(model: torch.nn.Module) -> None:
    """Replace every marked method of the classes of ``model``'s modules by its ``torch.compiler.disable``
    version, once per class. Call it before ``torch.compile(model)``."""
    for cls in {type(module) for module in model.modules()}:
        for owner in cls.__mro__:
            for name, value in list(vars(owner).items()):
                if getattr(value, _MARK, False) and not getattr(value, _DONE, False):
                    disabled = torch.compiler.disable(value)
                    setattr(disabled, _DONE, True)
                    setattr(owner, name, disabled)
