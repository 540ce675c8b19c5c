"""DataLoader worker processes leave stop signals to the trainer, and are ended for sure when a loader stops.

A SIGTERM sent to the whole process group (Kubernetes, ``timeout``, some SLURM setups) reaches the workers
too; if it ended them, the loader would raise "DataLoader worker (pid N) is killed by signal" in the middle
of the step that GracefulStop is about to finish and checkpoint. So workers ignore SIGINT / SIGTERM / SIGUSR1
and the trainer decides. Since a worker then also ignores the SIGTERM that torch's loader shutdown sends a
worker that did not exit by itself, :func:`shut_down_workers` SIGKILLs what is left after that shutdown: no
worker outlives its loader. A loader whose iterator was never shut down (an error left it referenced) would
still hold the process at exit, where multiprocessing SIGTERMs its daemonic children and waits for them: an
exit handler, registered with the first :class:`IgnoreStopSignals`, SIGKILLs those that ignored the SIGTERM."""

from __future__ import annotations

import atexit
import multiprocessing
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any, Optional

__all__ = ["IgnoreStopSignals", "shut_down_workers"]

_STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGUSR1")


class IgnoreStopSignals:
    """A ``worker_init_fn``: ignore the stop signals in the worker, then call ``then`` (the user's
    ``worker_init_fn``, if any). A class, not a closure, so that it pickles for spawned workers."""

    def __init__(self, then: Optional[Callable[[int], None]] = None) -> None:
        self.then = then
        _end_workers_at_exit()

    def __call__(self, worker_id: int) -> None:
        for name in _STOP_SIGNALS:
            signum = getattr(signal, name, None)
            if signum is not None:
                signal.signal(signum, signal.SIG_IGN)
        if self.then is not None:
            self.then(worker_id)


def shut_down_workers(batches: Iterator[Any]) -> None:
    """Stop the worker processes of a DataLoader iterator now (not when the garbage collector runs), and
    SIGKILL any that did not exit: ignoring SIGTERM, they would outlive torch's own shutdown."""
    workers = list(getattr(batches, "_workers", ()))  # torch's iterator with workers; none without
    shutdown = getattr(batches, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()
    for worker in workers:
        if worker.is_alive():
            worker.kill()
            worker.join()


_EXIT_HANDLER: list[Callable[[], None]] = []  # the one registered, in the process that builds loaders
EXIT_GRACE_S = 2.0  # how long a daemonic child has to end on SIGTERM at exit before it is SIGKILLed


def _end_workers_at_exit() -> None:
    """Register (once) :func:`_end_daemonic_children`: registered after multiprocessing's own exit handler, it runs
    before it (atexit runs last-registered first), so that handler's wait finds no worker left to wait for."""
    if not _EXIT_HANDLER:
        _EXIT_HANDLER.append(_end_daemonic_children)
        atexit.register(_end_daemonic_children)


def _end_daemonic_children() -> None:
    """What multiprocessing does at exit (SIGTERM to each daemonic child, then wait), but a child still alive
    after :data:`EXIT_GRACE_S` (a loader worker ignoring SIGTERM) is SIGKILLed instead of waited for forever."""
    children = [p for p in multiprocessing.active_children() if p.daemon]
    for child in children:
        child.terminate()
    deadline = time.monotonic() + EXIT_GRACE_S
    for child in children:
        child.join(timeout=max(0.0, deadline - time.monotonic()))
        if child.is_alive():
            child.kill()
            child.join()
