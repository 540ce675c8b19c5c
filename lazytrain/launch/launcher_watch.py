"""The watch each worker keeps on its launcher: when the launcher dies (SIGKILL, the OOM killer), the rank
exits too, instead of running on with nobody to stop it."""

from __future__ import annotations

import faulthandler
import logging
import os
import shutil
import sys
import threading
import time

from ..fileio import writes_in_progress

__all__ = ["LAUNCHER_PID_VARIABLE", "launcher_gone", "start_launcher_watch"]

logger = logging.getLogger(__name__)

LAUNCHER_PID_VARIABLE = "LAZYTRAIN_LAUNCHER_PID"  # set in every worker: the pid of the launcher that spawned it
_LAUNCHER_POLL_S = 0.5
_SAVE_GRACE_S = 30.0  # how long a rank whose launcher died waits for a checkpoint write to finish


def launcher_gone() -> bool:
    """Whether this worker's launcher has died (SIGKILL, the OOM killer): its parent is another process now."""
    pid = os.environ.get(LAUNCHER_PID_VARIABLE)
    return bool(pid) and os.getppid() != int(pid)  # type: ignore[arg-type]


def start_launcher_watch(launcher: int, rank: int, local_rank: int, error_dir: str) -> threading.Thread:
    """Start the daemon thread that watches the launcher (pid ``launcher``) from this worker."""
    os.environ[LAUNCHER_PID_VARIABLE] = str(launcher)
    watch = threading.Thread(
        target=_watch_launcher,
        args=(launcher, rank, local_rank, error_dir),
        name="lazytrain-launcher-watch",
        daemon=True,
    )
    watch.start()
    return watch


def _watch_launcher(launcher: int, rank: int, local_rank: int, error_dir: str) -> None:
    """When the launcher dies, the rank exits: a rank blocked in a collective or stuck never reaches the end of
    its step, where GracefulStop would act on torch's parent-death signal. A checkpoint being written gets up
    to ``_SAVE_GRACE_S`` to finish; the rank's stack goes to stderr (what it was doing), then it exits. Its
    DataLoader workers follow (they check their parent every few seconds)."""
    while os.getppid() == launcher:
        time.sleep(_LAUNCHER_POLL_S)
    # whatever happens below (a stderr nobody reads any more can block a write), the rank ends
    deadline_timer = threading.Timer(_SAVE_GRACE_S + 15, os._exit, (1,))
    deadline_timer.daemon = True
    deadline_timer.start()
    try:
        saving = writes_in_progress()
        until = " once the checkpoint being written is complete" if saving else ""
        logger.error("rank %d: the launcher (pid %d) is gone; this rank exits%s.", rank, launcher, until)
        deadline = time.monotonic() + _SAVE_GRACE_S
        while writes_in_progress() and time.monotonic() < deadline:
            time.sleep(0.1)
        sys.stderr.write(f"\n[rank {rank}] lazytrain: the launcher is gone; the Python stack of every thread:\n")
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        sys.stderr.flush()
        if local_rank == 0:
            shutil.rmtree(error_dir, ignore_errors=True)  # the launcher's, left behind
    finally:
        os._exit(1)
