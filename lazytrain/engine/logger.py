"""The `lazytrain` logger: terminal output on every rank (warnings only off rank 0), log.txt on rank 0.

Each module logs through its own logger (``lazytrain.engine.hooks``, ``lazytrain.lidar.dataset``, ...); a line
shows its short name (``lt.engine.hooks``) and, for warnings and errors, the level. Python warnings (of torch,
of a user's code, ``warnings.warn``) go the same way, under ``py.warnings``; fvcore's checkpoint messages come
through ``lt.checkpoint`` (see :class:`lazytrain.checkpoint.Checkpointer`). A user's own modules log through
the root logger's handlers, under their own names (see :func:`setup_logger`).
"""

from __future__ import annotations

import logging
import os
import sys
import sysconfig
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Optional, TextIO

from ..fileio import describe_write_error

__all__ = ["FILE_ONLY", "log_closing_error", "setup_logger", "terminal_warnings_only"]

_OURS = "_lazytrain_handler"

# ``logger.info(..., extra=FILE_ONLY)``: a record for log.txt only, when the terminal shows it another way (the
# closing ``error:`` line on stderr, a stack faulthandler dumped there)
FILE_ONLY = {"lazytrain_file_only": True}


def log_closing_error(error: BaseException, level: int = logging.ERROR) -> None:
    """Put the error the terminal shows as the closing ``error:`` line into log.txt too (where this process
    writes one), once: the log of a failed run then says why it ended. Whoever logs it first marks it."""
    if getattr(error, "lazytrain_logged", False):
        return
    error.lazytrain_logged = True  # type: ignore[attr-defined]
    logger = logging.getLogger("lazytrain")
    if any(isinstance(h, logging.FileHandler) for h in logger.handlers):  # else logging's last resort would print
        logger.log(level, "%s", error, extra=FILE_ONLY)


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


class _LogFile(logging.FileHandler):
    """log.txt. When a write fails (a full disk), it says so once on stderr, in one line, instead of logging's
    traceback for every record; the terminal keeps the log."""

    _failed = False

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        if self._failed or not isinstance(error, OSError):
            if not self._failed:
                super().handleError(record)
            return
        self._failed = True
        sys.stderr.write(
            f"lazytrain: {describe_write_error(error, self.baseFilename)}; the log goes on in the terminal only.\n"
        )


def _log_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Optional[TextIO] = None,
    line: Optional[str] = None,
) -> None:
    """``warnings.showwarning`` once the logger is set up: a warning is one log line at WARNING level, on the
    terminal and in log.txt (``logging.captureWarnings`` in our format: no source line, a short path)."""
    if file is not None:  # written to a file of the caller's choice: as Python would
        _ORIGINAL_SHOWWARNING(message, category, filename, lineno, file, line)
        return
    try:
        where = os.path.relpath(filename)
    except ValueError:  # another drive (Windows)
        where = filename
    where = filename if where.startswith("..") else where
    logging.getLogger("py.warnings").warning("%s: %s (%s:%d)", category.__name__, message, where, lineno)


_ORIGINAL_SHOWWARNING: Any = warnings.showwarning


def setup_logger(output_dir: Optional[str] = None, rank: int = 0, name: str = "lazytrain") -> logging.Logger:
    """Configure ``name``, Python warnings (``py.warnings``), fvcore and the root logger once per run; calling
    it again replaces the handlers it added before, so several runs in one process do not print twice.

    Through the root logger a user's own modules log as ours do, under their own name, at INFO and above:
    ``logging.getLogger(__name__).info(...)`` in a hook, a dataset or a model shows on the terminal and in
    log.txt. Installed packages (site-packages, the standard library) show warnings and errors only, so their
    info lines do not drown the run's."""
    fmt = _Formatter(rank)
    handlers: list[logging.Handler] = []
    stream = logging.StreamHandler(sys.stdout)
    stream.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    stream.addFilter(_NotFileOnly())
    handlers.append(stream)
    if output_dir is not None:
        os.makedirs(output_dir, exist_ok=True)
        file_handler = _LogFile(os.path.join(output_dir, "log.txt"), encoding="utf-8")
        file_handler.setLevel(logging.DEBUG)
        handlers.append(file_handler)
    for handler in handlers:
        handler.setFormatter(fmt)
        handler.addFilter(_InstalledPackagesWarnOnly())
        setattr(handler, _OURS, True)
    root = logging.getLogger()
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)  # a user's logger without a level of its own inherits this one
    for logger_name in (name, "fvcore", "py.warnings", ""):
        logger = logging.getLogger(logger_name)
        if logger_name:
            logger.setLevel(logging.DEBUG)
            logger.propagate = False  # ours reach the handlers directly, once
        for old in [h for h in logger.handlers if getattr(h, _OURS, False)]:
            logger.removeHandler(old)
            old.close()
        for handler in handlers:
            logger.addHandler(handler)
    warnings.showwarning = _log_warning
    return logging.getLogger(name)


class _InstalledPackagesWarnOnly(logging.Filter):
    """Below WARNING, a record from an installed package's file (site-packages, the standard library) is
    dropped, unless its logger is one of ours or the user gave it (or a parent) a level of its own: torch, PIL or
    urllib3 log info lines a user did not ask for, while a user's project installed with ``pip install .`` shows
    its info lines after ``logging.getLogger("myproject").setLevel("INFO")``."""

    _OUR_LOGGERS = ("lazytrain", "fvcore", "py.warnings")
    _INSTALLED = tuple(
        os.path.join(os.path.realpath(p), "")
        for p in {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    )

    def __init__(self) -> None:
        super().__init__()
        self._seen: dict[str, bool] = {}  # a file's answer, once: a record is filtered on every log call

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING or record.name.split(".", 1)[0] in self._OUR_LOGGERS:
            return True
        installed = self._seen.get(record.pathname)
        if installed is None:
            installed = os.path.realpath(record.pathname).startswith(self._INSTALLED)
            self._seen[record.pathname] = installed
        return not installed or _has_a_level_of_its_own(record.name)


def _has_a_level_of_its_own(name: str) -> bool:
    """Whether the logger ``name`` or a parent below the root has a level set (the user chose one)."""
    while name:
        if logging.getLogger(name).level != logging.NOTSET:
            return True
        name = name.rpartition(".")[0]
    return False


@contextmanager
def terminal_warnings_only() -> Iterator[None]:
    """While inside, the terminal shows only warnings and errors of our loggers (log.txt keeps everything): a
    command that prints its own summary lines (the dry run) is not buried in the run's info lines."""
    changed: list[tuple[logging.Handler, int]] = []
    for logger_name in ("lazytrain", "fvcore", "py.warnings", ""):
        for handler in logging.getLogger(logger_name).handlers:
            terminal = isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
            if getattr(handler, _OURS, False) and terminal and handler.level < logging.WARNING:
                changed.append((handler, handler.level))
                handler.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for handler, level in changed:
            handler.setLevel(level)
