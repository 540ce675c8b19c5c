"""Python config files: `LazyCall` records calls, `instantiate` makes them, `LazyConfig` loads and saves."""

from ..errors import ConfigError
from .instantiate import instantiate
from .lazy import LazyCall
from .lazy_config import LazyConfig

L = LazyCall

__all__ = ["ConfigError", "L", "LazyCall", "LazyConfig", "instantiate"]
