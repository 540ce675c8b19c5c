"""Python config files: `LazyCall` records calls, `instantiate` makes them, `LazyConfig` loads and saves."""

from ..errors import ConfigError
from .instantiate import instantiate
from .lazy import LazyCall, config_dict
from .lazy_config import LazyConfig
from .typecheck import check_types

L = LazyCall

__all__ = ["ConfigError", "L", "LazyCall", "LazyConfig", "check_types", "config_dict", "instantiate"]
