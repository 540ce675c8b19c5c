"""Atomic file writes (torch-free): a reader, or a crash midway, never sees a half-written file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import BinaryIO, Union

__all__ = ["TMP_PREFIX", "atomic_write"]

TMP_PREFIX = ".tmp-"  # temp files of unfinished writes start with this; a new run may remove them


def atomic_write(path: str, data: Union[bytes, str, Callable[[BinaryIO], None]]) -> None:
    """Write ``data`` (bytes, text as UTF-8, or a function that writes to a binary file) to a temp file in the
    same folder, fsync it, ``os.replace`` it onto ``path`` and fsync the folder. On any error (a full disk,
    Ctrl-C) the temp file is removed and ``path`` is left as it was."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=TMP_PREFIX, suffix="-" + os.path.basename(path))
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; teammates on shared storage must read them
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(folder)


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read the umask is to set it
    os.umask(mask)
    return mask


def _fsync_dir(folder: str) -> None:
    """Make the rename itself durable; some file systems cannot fsync a folder (the rename is atomic anyway)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
