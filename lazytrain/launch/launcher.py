"""`launch()`: run a function in 1 process, in N spawned processes, under torchrun / SLURM, or across machines;
the launcher waits for its workers and stops them all when one fails."""

from __future__ import annotations

import logging
import multiprocessing.connection
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import cloudpickle
import torch
import torch.multiprocessing as mp

from ..errors import ConfigError
from .cluster import cluster_environment, free_port, join_existing
from .error_records import failure_from_records, mark_stopping
from .resource_tracker import start_resource_tracker
from .signals import forward_signals, restore_handlers
from .worker import worker

__all__ = ["DEFAULT_TIMEOUT", "launch"]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = timedelta(minutes=30)
_STOP_GRACE_S = 3.0  # how long a surviving rank gets to exit after SIGTERM before SIGKILL
EXIT_AGREED_STOP = 75  # GracefulStop's exit (engine/preemption.py EXIT_PREEMPTED): saved, stopped on a signal


def launch(
    main_fn: Callable[..., Any],
    num_procs: int = 1,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str = "auto",
    args: tuple = (),
    timeout: timedelta = DEFAULT_TIMEOUT,
) -> Any:
    """Run ``main_fn(*args)`` on every rank.

    - Under torchrun or SLURM (their environment variables are set), join their process group.
    - ``num_procs * num_machines == 1``: call it here, with no process group (``breakpoint()`` works).
    - Otherwise spawn ``num_procs`` workers on this machine, ranks ``machine_rank * num_procs + i`` of
      ``num_procs * num_machines``, meeting at ``dist_url`` (``tcp://HOST:PORT``; "auto" picks a free local
      port, for one machine only).

    If a rank raises or dies, the others are stopped and a RankFailedError names it and its error.
    Returns ``main_fn``'s result in the single-process cases, else None.
    """
    env = cluster_environment()
    if env is not None:
        if num_procs > 1 or num_machines > 1:
            ignored = "--num-procs/--num-machines are ignored"
            logger.warning("running under %s: joining its process group; %s.", env["launcher"], ignored)
        return join_existing(main_fn, args, env, timeout)
    world_size = num_procs * num_machines
    if num_procs < 1 or num_machines < 1 or not 0 <= machine_rank < num_machines:
        raise ConfigError(
            f"bad launch settings: --num-procs {num_procs}, --num-machines {num_machines}, --machine-rank "
            f"{machine_rank}.",
            hint="Use --num-procs >= 1, --num-machines >= 1 and 0 <= --machine-rank < --num-machines.",
        )
    if world_size == 1:
        return main_fn(*args)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus and num_procs > gpus:
        raise ConfigError(
            f"--num-procs {num_procs} asks for one process per GPU, but this machine has {gpus} "
            f"GPU{'s' if gpus > 1 else ''}.",
            hint=f"Use --num-procs {gpus} (or fewer); to run CPU processes over gloo instead, hide the GPUs: "
            "CUDA_VISIBLE_DEVICES= lazytrain train ...",
        )
    if dist_url == "auto":
        if num_machines > 1:
            raise ConfigError(
                "--dist-url auto works on one machine only.",
                hint="Give every machine the same --dist-url tcp://HOST_OF_MACHINE_0:PORT.",
            )
        dist_url = f"tcp://127.0.0.1:{free_port()}"
    _spawn(main_fn, args, num_procs, machine_rank, world_size, dist_url, timeout)
    return None


def _spawn(
    main_fn: Callable[..., Any],
    args: tuple,
    num_procs: int,
    machine_rank: int,
    world_size: int,
    dist_url: str,
    timeout: timedelta,
) -> None:
    payload = cloudpickle.dumps((main_fn, args))
    error_dir = tempfile.mkdtemp(prefix="lazytrain-errors-")
    workers: list = []  # the live workers, for the signal handler
    forwarded: list[int] = []  # the signal passed on to the workers, once one was
    previous = forward_signals(workers, forwarded)
    start_resource_tracker()
    try:
        context = mp.start_processes(
            worker,
            args=(payload, num_procs, machine_rank, world_size, dist_url, timeout, error_dir),
            nprocs=num_procs,
            join=False,
            start_method="spawn",
        )
        processes = context.processes
        workers[:] = processes
        try:
            failed = _wait_for_failure(processes)
        except BaseException:  # a second signal to the launcher: take the workers down at once
            _stop(processes, error_dir)
            raise
        if not failed:
            stopped = {i: p.exitcode for i, p in enumerate(processes) if p.exitcode == EXIT_AGREED_STOP}
            if stopped:  # every rank saved and stopped on the signal (GracefulStop): the job's exit is 75 too
                raise failure_from_records(stopped, machine_rank * num_procs, error_dir)
            return
        _stop(processes, error_dir)
        error = failure_from_records(failed, machine_rank * num_procs, error_dir)
        if forwarded and not error.speaks_for_the_job:  # stopped on the signal before GracefulStop could save
            raise KeyboardInterrupt(signal.Signals(forwarded[0]).name) from error
        raise error
    finally:
        workers.clear()
        shutil.rmtree(error_dir, ignore_errors=True)
        restore_handlers(previous)


def _wait_for_failure(processes: list) -> dict[int, int]:
    """Wait until every process exited (``{}``; exit 0 or 75) or some failed: ``{local index: exit code}`` of
    those that had failed when the failure was seen (several may die at once: a killed rank and a peer that
    lost it)."""
    while True:
        # exit 75 is a stop every rank agreed on: the others are still finishing (final flush, closing line)
        failed = {i: p.exitcode for i, p in enumerate(processes) if p.exitcode not in (None, 0, EXIT_AGREED_STOP)}
        if failed:
            return failed
        alive = [p.sentinel for p in processes if p.exitcode is None]
        if not alive:
            return {}
        multiprocessing.connection.wait(alive, timeout=1.0)
        for p in processes:
            if p.exitcode is None:
                p.join(timeout=0)


def _stop(processes: list, error_dir: str) -> None:
    """SIGTERM every survivor, then SIGKILL whatever is still there after a short grace period (a rank blocked
    inside a collective may not react to SIGTERM). The workers learn first (a file in ``error_dir``) that this
    SIGTERM stops the job: it is no preemption, and they exit without a word and without a checkpoint."""
    mark_stopping(error_dir)
    for p in processes:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + _STOP_GRACE_S
    for p in processes:
        p.join(timeout=max(0.0, deadline - time.monotonic()))
    for p in processes:
        if p.is_alive():
            p.kill()
            p.join()
