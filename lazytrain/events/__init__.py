"""Metric storage for one run (``storage``) and the writers that read it (``writers``): terminal (with ETA),
JSON lines, TensorBoard. Iteration numbers: see :mod:`lazytrain.iterations`."""

from .storage import EventStorage, beat, get_event_storage, working
from .writers import EventWriter, JSONWriter, TensorboardWriter, TerminalWriter

__all__ = [
    "EventStorage",
    "EventWriter",
    "JSONWriter",
    "TensorboardWriter",
    "TerminalWriter",
    "beat",
    "get_event_storage",
    "working",
]
