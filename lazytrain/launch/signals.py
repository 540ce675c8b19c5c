"""Signal handlers installed for a while and put back: the launcher's forwarding of a signal to its workers,
and GracefulStop's (engine/preemption.py) use :func:`install_handlers` / :func:`restore_handlers` too."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["FORWARDED_SIGNALS", "forward_signals", "install_handlers", "restore_handlers"]

logger = logging.getLogger(__name__)

FORWARDED_SIGNALS = ("SIGINT", "SIGTERM", "SIGUSR1")  # Ctrl-C; scancel, kill, Kubernetes; SLURM's --signal


def install_handlers(names: Sequence[str], handler: Callable[[int, Any], None]) -> dict[int, Any]:
    """Handle the signals ``names`` with ``handler``; those this platform lacks are skipped (no SIGUSR1 on
    Windows). Returns the previous handlers, for :func:`restore_handlers` ({} off the main thread, where
    Python cannot handle signals)."""
    previous: dict[int, Any] = {}
    for name in names:
        signum = getattr(signal, name, None)
        if signum is None:
            continue
        try:
            previous[signum] = signal.signal(signum, handler)
        except ValueError:  # not the main thread
            logger.debug("running off the main thread: %s is not handled", name)
            break
    return previous


def restore_handlers(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def forward_signals(workers: list, forwarded: list[int]) -> dict[int, Any]:
    """While ``workers`` run, the first SIGINT (Ctrl-C), SIGTERM (scancel, kill, Kubernetes) or SIGUSR1
    (SLURM's ``--signal`` warning) to the launcher is passed on to them as the same signal (and appended to
    ``forwarded``): they finish their step, save a checkpoint and exit 75 (GracefulStop), and under SLURM
    SIGUSR1 requeues the job; the launcher waits for them (a rank that hangs meanwhile is the watchdog's).
    Workers run in process groups of their own, so a Ctrl-C in the terminal reaches them once, through here. A
    second signal, or one before any worker runs, raises KeyboardInterrupt: the workers are stopped at once.
    Returns the previous handlers."""

    def on_signal(signum: int, frame: Any) -> None:
        if forwarded or not workers:
            raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")
        forwarded.append(signum)
        for p in workers:
            if p.is_alive():
                os.kill(p.pid, signum)

    return install_handlers(FORWARDED_SIGNALS, on_signal)
