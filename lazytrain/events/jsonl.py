"""Whole lines of JSON on disk: a row is appended whole or not at all (a full disk leaves no half row), and a
torn last line left by an older run or a killed process is cut off before the next rows follow it."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from typing import Any

__all__ = ["append_rows", "append_whole", "encode_rows", "open_for_append", "repair_torn_last_line"]

logger = logging.getLogger(__name__)

_BLOCK = 1 << 16  # bytes read at a time when looking back for the start of the last line


def encode_rows(rows: Iterable[dict[str, Any]]) -> bytes:
    """One JSON object per line, each line ending with ``"\\n"``, as UTF-8."""
    return "".join(json.dumps(row) + "\n" for row in rows).encode("utf-8")


def open_for_append(path: str) -> int:
    """A file descriptor appending to ``path`` (made, with its folder, when missing)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)


def append_whole(fd: int, data: bytes, path: str) -> None:
    """Append ``data`` (whole lines) to ``fd``, the file ``path``. A write that fails partway (ENOSPC) cuts the
    file back to the length it had before, then raises the OSError, with ``path`` as its filename: a reader
    never sees half a row."""
    size = os.fstat(fd).st_size
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]  # a short write without an error goes on with the rest
    except OSError as error:
        try:
            os.ftruncate(fd, size)  # shrinking needs no free space
        except OSError as truncate_error:
            logger.warning("%s: could not cut off the half row (%s); the next start will.", path, truncate_error)
        if error.filename is None:
            error.filename = path
        raise


def append_rows(path: str, rows: Iterable[dict[str, Any]]) -> None:
    """Append ``rows`` to the JSON lines file ``path`` once, whole (a torn last line before them is cut off
    first)."""
    repair_torn_last_line(path)
    fd = open_for_append(path)
    try:
        append_whole(fd, encode_rows(rows), path)
    finally:
        os.close(fd)


def repair_torn_last_line(path: str) -> int:
    """Cut off the last line of ``path`` when it does not end with ``"\\n"`` or is not valid JSON (a write
    stopped midway: a killed process, an older lazytrain on a full disk), with one warning naming the file and
    the bytes dropped. Returns how many bytes were dropped; 0 when the file is whole or missing."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return 0
    try:
        size = os.fstat(fd).st_size
        start = _start_of_last_line(fd, size)
        last = os.pread(fd, size - start, start)
        if not last or (last.endswith(b"\n") and _is_json(last)):
            return 0
        os.ftruncate(fd, start)
    finally:
        os.close(fd)
    dropped = size - start
    logger.warning(
        "%s: its last line was cut off (%d bytes, %s): a write there stopped midway.",
        path,
        dropped,
        "not valid JSON" if last.endswith(b"\n") else "no end of line",
    )
    return dropped


def _start_of_last_line(fd: int, size: int) -> int:
    """The offset just after the newline before the last line (the file's own last newline excluded)."""
    end = size - 1  # a newline at the very end closes the last line: look before it
    while end > 0:
        begin = max(0, end - _BLOCK)
        found = os.pread(fd, end - begin, begin).rfind(b"\n")
        if found >= 0:
            return begin + found + 1
        end = begin
    return 0


def _is_json(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:  # UnicodeDecodeError is one
        return False
    return True
