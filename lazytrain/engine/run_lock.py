"""``output_dir/run.lock``: one run at a time in an output folder. Rank 0 creates it atomically at the start of
``train`` and removes it at the end, whatever the end; a second run finds it and exits 2 naming the first."""

from __future__ import annotations

import datetime
import json
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Optional

from ..errors import ConfigError, TrainingError
from ..fileio import describe_write_error

__all__ = ["LOCK_NAME", "held_lock", "refuse_if_locked", "run_lock"]

LOCK_NAME = "run.lock"


def held_lock(output_dir: str) -> Optional[dict[str, Any]]:
    """The lock's contents (pid, host, since, command) when a run holds ``output_dir``; None when there is no
    lock. A lock of a dead process on this host is stale: returned with ``"stale": True``."""
    path = os.path.join(output_dir, LOCK_NAME)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    try:
        holder = json.loads(text)
        if not isinstance(holder, dict):
            raise ValueError(text)
    except ValueError:  # torn by a crash between create and write: nobody can be said to hold it
        return {"pid": None, "host": socket.gethostname(), "since": "?", "command": "?", "stale": True}
    holder["stale"] = holder.get("host") == socket.gethostname() and not _alive(holder.get("pid"))
    return holder


def refuse_if_locked(output_dir: str) -> None:
    """Raise (exit 2) when a live run holds ``output_dir`` (or a run on another host, which cannot be checked)."""
    holder = held_lock(output_dir)
    if holder is not None and not holder["stale"]:
        raise _locked_error(output_dir, holder)


@contextmanager
def run_lock(output_dir: str, command: Optional[str] = None) -> Iterator[Optional[str]]:
    """Hold ``output_dir/run.lock`` while the body runs; yields the line to log when a stale lock was taken
    over (None otherwise). The lock goes on any exit: a return, an error, Ctrl-C, the SystemExit of a signal."""
    path = os.path.join(output_dir, LOCK_NAME)
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as e:
        raise TrainingError(
            describe_write_error(e, output_dir) + ".", key="train.output_dir", hint="Choose another --output-dir."
        ) from e
    took_over = None
    holder = held_lock(output_dir)
    if holder is not None:
        if not holder["stale"]:
            raise _locked_error(output_dir, holder)
        os.remove(path)
        took_over = (
            f"took over {path}: the run that held it (pid {holder['pid']} on {holder['host']}, since "
            f"{holder['since']}) is no longer running."
        )
    mine = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "command": command or " ".join(sys.argv),
    }
    text = json.dumps(mine)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:  # another run took it between our look and our create
        raise _locked_error(output_dir, held_lock(output_dir) or mine) from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    try:
        yield took_over
    finally:
        _release(path, text)


def _release(path: str, text: str) -> None:
    """Remove the lock if it is still ours (an --overwrite of the folder by hand, a dry run's cleanup)."""
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() != text:
                return
        os.remove(path)
    except FileNotFoundError:
        pass


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's
        return True
    return True


def _locked_error(output_dir: str, holder: dict[str, Any]) -> ConfigError:
    path = os.path.join(output_dir, LOCK_NAME)
    who = f"pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('since')}"
    if holder.get("host") != socket.gethostname():
        hint = (
            f"Wait for it to finish, or choose another --output-dir. Its host cannot be checked from here: if that "
            f"run is gone, delete {path}."
        )
    else:
        hint = "Wait for it to finish (or stop it), or choose another --output-dir."
    return ConfigError(
        f"another run is training in {output_dir} ({who}: {holder.get('command')}); two runs in one folder would "
        "mix their checkpoints and metrics.",
        key="train.output_dir",
        hint=hint,
    )
