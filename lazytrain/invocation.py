"""The ``lazytrain COMMAND ...`` command line this process runs (spawned workers keep it), for messages that
show the next command to type."""

from __future__ import annotations

import os
import shlex
import sys
from typing import Optional

__all__ = ["invoked_config_path", "lazytrain_arguments", "resume_command"]

_COMMANDS = ("train", "eval", "export", "analyze", "predict", "hooks", "config")


def lazytrain_arguments() -> Optional[list[str]]:
    """``COMMAND CONFIG ...`` of the lazytrain command line this process runs; None when lazytrain was called
    from Python (``python -m pytest ...``, a script)."""
    argv = sys.argv
    if len(argv) > 1 and os.path.basename(argv[0]) in ("lazytrain", "cli.py", "__main__.py") and argv[1] in _COMMANDS:
        return argv[1:]
    return None


def invoked_config_path() -> Optional[str]:
    """The CONFIG of the lazytrain command line this process runs; None when called from Python."""
    args = lazytrain_arguments()
    if args is None:
        return None
    return next((a for a in args[1:] if not a.startswith("-") and "=" not in a), None)


def resume_command() -> str:
    """The ``lazytrain train`` command line of this run with ``--resume`` (a placeholder when called from
    Python)."""
    args = lazytrain_arguments()
    if args is not None and args[0] == "train":
        return shlex.join(["lazytrain", *args] if "--resume" in args else ["lazytrain", *args, "--resume"])
    return "lazytrain train CONFIG ... --resume"
