"""Atomic file writes (torch-free): a reader, or a crash midway, never sees a half-written file."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from typing import BinaryIO, Optional, Union

__all__ = [
    "OUTSIDE_RUN",
    "TMP_PREFIX",
    "atomic_write",
    "describe_write_error",
    "format_bytes",
    "os_error_in",
    "outside_run",
    "writes_in_progress",
]

TMP_PREFIX = ".tmp-"  # temp files of unfinished writes start with this; a new run may remove them

_writing = [0]  # atomic writes under way in this process (a worker whose launcher died lets them finish)
_writing_lock = threading.Lock()


def writes_in_progress() -> int:
    """How many :func:`atomic_write` calls are under way in this process (any thread)."""
    return _writing[0]


def atomic_write(path: str, data: Union[bytes, str, Callable[[BinaryIO], None]], *, durable: bool = True) -> None:
    """Write ``data`` (bytes, text as UTF-8, or a function that writes to a binary file) to a temp file in the
    same folder, fsync it, ``os.replace`` it onto ``path`` and fsync the folder. On any error (a full disk,
    Ctrl-C) the temp file is removed and ``path`` is left as it was. ``durable=False`` skips the two fsyncs:
    still never half-written if the process dies, but a power loss may lose the file; for the many small files
    of a prediction run (20k label files on slow shared storage)."""
    with _writing_lock:
        _writing[0] += 1
    try:
        _atomic_write(path, data, durable)
    finally:
        with _writing_lock:
            _writing[0] -= 1


def _atomic_write(path: str, data: Union[bytes, str, Callable[[BinaryIO], None]], durable: bool) -> None:
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
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    if durable:
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


def os_error_in(error: BaseException) -> Optional[OSError]:
    """The OSError behind ``error`` (itself, or one it was raised from or during): torch.save reports a full
    disk as a RuntimeError ("unexpected pos ...") chained to the ENOSPC that caused it."""
    seen: set[int] = set()
    current: Optional[BaseException] = error
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def describe_write_error(error: OSError, path: str, needed_bytes: Optional[int] = None) -> str:
    """``cannot write PATH: [Errno 28] No space left on device (ENOSPC); FOLDER has 3 MB free, ...``."""
    code = errno.errorcode.get(error.errno or 0, "")
    text = f"cannot write {path}: [Errno {error.errno}] {error.strerror or error}" + (f" ({code})" if code else "")
    folder = os.path.dirname(os.path.abspath(path))
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return text
    if needed_bytes is not None and needed_bytes > free:
        return text + f"; {folder} has {format_bytes(free)} free and this file needs about {format_bytes(needed_bytes)}"
    # free space measured after the failed write let go of its partial file can exceed what the file needs:
    # saying "needs 3 MB" beside "12 MB free" reads as a contradiction, so say what happened instead
    text += f"; {folder} has {format_bytes(free)} free now"
    if needed_bytes is not None:
        text += (
            f", more than the file's ~{format_bytes(needed_bytes)}, after the partial file was removed (the disk "
            "filled up while it was written: another program writing there, or a quota)"
        )
    return text


def format_bytes(n: int, decimals: int = 0) -> str:
    """``12 MB`` from a megabyte on, else ``3 kB`` (a small file or a toy model is not "0 MB")."""
    return f"{n / 2**20:.{decimals}f} MB" if n >= 2**20 else f"{n / 2**10:.{decimals}f} kB"


# ``logger.info(..., extra=outside_run(path, "what it is"))``: a record saying a file or folder was written
# outside the run's output folder (a data set made on first use, a cache); a dry run lists them at its end
OUTSIDE_RUN = "lazytrain_outside_run"


def outside_run(path: str, what: str) -> dict[str, tuple[str, str]]:
    """The ``extra`` of a log record that says ``path`` (``what``) was written outside the output folder."""
    return {OUTSIDE_RUN: (os.path.abspath(path), what)}
