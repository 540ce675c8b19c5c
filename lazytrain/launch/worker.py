"""The entry point of a worker spawned by the launcher: it joins the process group, runs the function, and
records any error for the launcher to report."""

from __future__ import annotations

import multiprocessing
import os
import sys
from datetime import timedelta

import cloudpickle
import torch.distributed as dist

from ..errors import LazytrainError
from .cluster import process_group_backend, set_device
from .error_records import ERROR_DIR_VARIABLE, job_stopping, record_error
from .launcher_watch import start_launcher_watch

__all__ = ["worker"]


def worker(
    local_rank: int,
    payload: bytes,
    num_procs: int,
    machine_rank: int,
    world_size: int,
    dist_url: str,
    timeout: timedelta,
    error_dir: str,
) -> None:
    """Run rank ``machine_rank * num_procs + local_rank`` of the job: ``payload`` is cloudpickle's
    ``(main_fn, args)``. Any way out but success is recorded in ``error_dir`` (unless the launcher is
    stopping the job already) and ends the process with the error's exit code."""
    rank = machine_rank * num_procs + local_rank
    if hasattr(os, "setpgrp"):
        os.setpgrp()  # out of the terminal's foreground group: a Ctrl-C reaches this rank once, from the launcher
    os.environ[ERROR_DIR_VARIABLE] = error_dir  # where a rank records its error (the watchdog: a hang)
    parent = multiprocessing.parent_process()
    launcher = parent.pid if parent is not None and parent.pid is not None else os.getppid()
    start_launcher_watch(launcher, rank, local_rank, error_dir)
    try:
        main_fn, args = cloudpickle.loads(payload)
        set_device(local_rank)
        dist.init_process_group(
            process_group_backend(), init_method=dist_url, world_size=world_size, rank=rank, timeout=timeout
        )
        main_fn(*args)
        dist.destroy_process_group()
    except SystemExit as e:
        if e.code in (0, None):
            return
        code = e.code if isinstance(e.code, int) else 1
        if not job_stopping():
            record_error(error_dir, rank, e)
        os._exit(code)
    except BaseException as e:  # record every other way out, KeyboardInterrupt included
        if not job_stopping():  # else the launcher is stopping the job for another rank's error: nothing to add
            record_error(error_dir, rank, e)
        sys.stderr.flush()
        os._exit(e.exit_code if isinstance(e, LazytrainError) else 1)
