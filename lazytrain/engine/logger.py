"""The `lazytrain` logger: terminal output on every rank (warnings only off rank 0), log.txt on rank 0.

Each module logs through its own logger (``lazytrain.engine.hooks``, ``lazytrain.lidar.dataset``, ...); a line
shows its short name (``lt.engine.hooks``) and, for warnings and errors, the level.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Optional

__all__ = ["FILE_ONLY", "setup_logger"]

_OURS = "_lazytrain_handler"

# ``logger.info(..., extra=FILE_ONLY)``: a record for log.txt only, when the terminal shows it another way (the
# closing ``error:`` line on stderr, a stack faulthandler dumped there)
FILE_ONLY = {"lazytrain_file_only": True}


class _NotFileOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "lazytrain_file_only", False)


class _Formatter(logging.Formatter):
    """``[12/05 10:31:02 lt.engine.hooks]: ...``; ``[... WARNING]``; ``[rank 1 ...]`` off rank 0."""

    def __init__(self, rank: int) -> None:
        super().__init__(datefmt="%m/%d %H:%M:%S")
        self.rank = rank

    def format(self, record: logging.LogRecord) -> str:
        name = "lt" + record.name[len("lazytrain") :] if record.name.startswith("lazytrain") else record.name
        level = f" {record.levelname}" if record.levelno >= logging.WARNING else ""
        rank = f"rank {self.rank} " if self.rank else ""
        text = f"[{rank}{self.formatTime(record, self.datefmt)} {name}{level}]: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def setup_logger(output_dir: Optional[str] = None, rank: int = 0, name: str = "lazytrain") -> logging.Logger:
    """Configure ``name`` (and fvcore's checkpoint messages) once per run; calling it again replaces the
    handlers it added before, so several runs in one process do not print twice."""
    fmt = _Formatter(rank)
    handlers: list[logging.Handler] = []
    stream = logging.StreamHandler(sys.stdout)
    stream.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    stream.addFilter(_NotFileOnly())
    handlers.append(stream)
    if output_dir is not None:
        os.makedirs(output_dir, exist_ok=True)
        file_handler = logging.FileHandler(os.path.join(output_dir, "log.txt"), encoding="utf-8")
        file_handler.setLevel(logging.DEBUG)
        handlers.append(file_handler)
    for logger_name in (name, "fvcore"):
        logger = logging.getLogger(logger_name)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        for old in [h for h in logger.handlers if getattr(h, _OURS, False)]:
            logger.removeHandler(old)
            old.close()
        for handler in handlers:
            handler.setFormatter(fmt)
            setattr(handler, _OURS, True)
            logger.addHandler(handler)
    return logging.getLogger(name)
