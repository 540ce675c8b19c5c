"""`launch()`: run a function in 1 process, in N spawned processes, under torchrun / SLURM, or across machines,
on torch.distributed process groups (NCCL with CUDA, else gloo). If any rank fails, the others are stopped.

Spawned workers get the function and its arguments through cloudpickle (configs may hold lambdas); each
creates its process group, sets its device, runs, and destroys the group.
"""

from __future__ import annotations

import faulthandler
import json
import logging
import multiprocessing.connection
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Optional

import cloudpickle
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from .errors import ConfigError, LazytrainError, RankFailedError
from .fileio import writes_in_progress

__all__ = ["DEFAULT_TIMEOUT", "cluster_environment", "launch"]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = timedelta(minutes=30)
_STOP_GRACE_S = 3.0  # how long a surviving rank gets to exit after SIGTERM before SIGKILL


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
            logger.warning("running under %s: joining its process group; --num-procs/--num-machines are ignored.",
                           env["launcher"])  # fmt: skip
        return _join_existing(main_fn, args, env, timeout)
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
        dist_url = f"tcp://127.0.0.1:{_free_port()}"
    _spawn(main_fn, args, num_procs, machine_rank, world_size, dist_url, timeout)
    return None


def cluster_environment(environ: Optional[dict[str, str]] = None) -> Optional[dict[str, Any]]:
    """Rank facts from torchrun (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``) or SLURM
    (``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``, first host of ``SLURM_JOB_NODELIST``); None when
    neither launched this process."""
    env = os.environ if environ is None else environ
    if all(k in env for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")):
        return {
            "launcher": "torchrun",
            "rank": int(env["RANK"]),
            "world_size": int(env["WORLD_SIZE"]),
            "local_rank": int(env["LOCAL_RANK"]),
            "master_addr": env.get("MASTER_ADDR", "127.0.0.1"),
            "master_port": int(env.get("MASTER_PORT", "29500")),
        }
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        job_id = int(env.get("SLURM_JOB_ID", "0") or 0)
        return {
            "launcher": "SLURM",
            "rank": int(env["SLURM_PROCID"]),
            "world_size": int(env["SLURM_NTASKS"]),
            "local_rank": int(env.get("SLURM_LOCALID", "0")),
            "master_addr": env.get("MASTER_ADDR") or _first_slurm_host(env.get("SLURM_JOB_NODELIST", "127.0.0.1")),
            # every task derives the same port from the job id
            "master_port": int(env.get("MASTER_PORT") or 15000 + job_id % 20000),
        }
    return None


def _first_slurm_host(nodelist: str) -> str:
    """The first host of a SLURM node list: ``scontrol show hostnames`` when SLURM's tools are here, else the
    list parsed by hand (``node[03-05,07],gpu1`` → ``node03``)."""
    if shutil.which("scontrol"):
        try:
            out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                                 check=True, timeout=30).stdout  # fmt: skip
            if out.strip():
                return out.split()[0]
        except (subprocess.SubprocessError, OSError):
            pass
    first = nodelist.split(",")[0] if "[" not in nodelist.split(",")[0] else nodelist[: nodelist.index("]") + 1]
    if "[" in first:
        prefix, ranges = first.split("[", 1)
        return prefix + ranges.rstrip("]").split(",")[0].split("-")[0]
    return first


def process_group_backend(cuda: Optional[bool] = None) -> str:
    """The backend string for ``init_process_group``: on GPUs NCCL for CUDA tensors *and* gloo for CPU tensors
    (``"cuda:nccl,cpu:gloo"``, as torchtitan does), because some collectives run on CPU tensors by design (the
    evaluators' counts, the stop vote, the logged values); plain NCCL has no CPU backend and fails them with "No
    backend type associated with device type cpu". Without CUDA, gloo."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    return "cuda:nccl,cpu:gloo" if cuda else "gloo"


def _set_device(local_rank: int) -> None:
    os.environ["LOCAL_RANK"] = str(local_rank)  # read by comm.get_local_rank(), as under torchrun
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank % torch.cuda.device_count())


def _join_existing(main_fn: Callable[..., Any], args: tuple, env: dict[str, Any], timeout: timedelta) -> Any:
    os.environ.setdefault("MASTER_ADDR", str(env["master_addr"]))
    os.environ.setdefault("MASTER_PORT", str(env["master_port"]))
    _set_device(env["local_rank"])
    dist.init_process_group(
        process_group_backend(), init_method="env://", world_size=env["world_size"], rank=env["rank"], timeout=timeout
    )
    try:
        return main_fn(*args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))  # the OS picks a port nobody uses
        return s.getsockname()[1]


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
    forwarded: list[int] = []  # the signal passed on to the workers, once one was
    previous = _forward_signals(forwarded)
    try:
        context = mp.start_processes(
            _worker,
            args=(payload, num_procs, machine_rank, world_size, dist_url, timeout, error_dir),
            nprocs=num_procs,
            join=False,
            start_method="spawn",
        )
        processes = context.processes
        _WORKERS[:] = processes
        try:
            failed = _wait_for_failure(processes)
        except BaseException:  # a second signal to the launcher: take the workers down at once
            _stop(processes, error_dir)
            raise
        if not failed:
            return
        _stop(processes, error_dir)
        error = _failure(failed, machine_rank * num_procs, error_dir)
        if forwarded and not error.speaks_for_the_job:  # stopped on the signal before GracefulStop could save
            raise KeyboardInterrupt(signal.Signals(forwarded[0]).name) from error
        raise error
    finally:
        _WORKERS.clear()
        shutil.rmtree(error_dir, ignore_errors=True)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


FORWARDED_SIGNALS = ("SIGINT", "SIGTERM", "SIGUSR1")  # Ctrl-C; scancel, kill, Kubernetes; SLURM's --signal


def _forward_signals(forwarded: list[int]) -> dict[int, Any]:
    """While workers run, the first SIGINT (Ctrl-C), SIGTERM (scancel, kill, Kubernetes) or SIGUSR1 (SLURM's
    ``--signal`` warning) to the launcher is passed on to the workers as the same signal: they finish their
    step, save a checkpoint and exit 75 (GracefulStop), and under SLURM SIGUSR1 requeues the job; the launcher
    waits for them (a rank that hangs meanwhile is the watchdog's). Workers run in process groups of their
    own, so a Ctrl-C in the terminal reaches them once, through here. A second signal raises
    KeyboardInterrupt: the workers are stopped at once. Returns the previous handlers ({} off the main
    thread)."""

    def on_signal(signum: int, frame: Any) -> None:
        if forwarded or not _WORKERS:
            raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")
        forwarded.append(signum)
        for p in _WORKERS:
            if p.is_alive():
                os.kill(p.pid, signum)

    previous: dict[int, Any] = {}
    for name in FORWARDED_SIGNALS:
        signum = getattr(signal, name, None)
        if signum is None:  # no SIGUSR1 on Windows
            continue
        try:
            previous[signum] = signal.signal(signum, on_signal)
        except ValueError:  # not the main thread
            break
    return previous


_WORKERS: list = []  # the launcher's live workers, for its signal handler
STOPPING = "stopping"  # in the error folder: the launcher is stopping the job (a rank failed, a second signal)


def _wait_for_failure(processes: list) -> dict[int, int]:
    """Wait until every process exited (``{}``) or some failed: ``{local index: exit code}`` of those that had
    failed when the failure was seen (several may die at once: a killed rank and a peer that lost it)."""
    while True:
        failed = {i: p.exitcode for i, p in enumerate(processes) if p.exitcode not in (None, 0)}
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
    try:
        with open(os.path.join(error_dir, STOPPING), "w", encoding="utf-8"):
            pass
    except OSError:
        pass
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


def _failure(failed: dict[int, int], rank_offset: int, error_dir: str) -> LazytrainError:
    """The error to show. A rank killed by a signal without leaving a record (SIGKILL, the OOM killer) is the
    cause, whatever its peers wrote after losing it; otherwise the first error recorded wins (later ones are
    usually other ranks losing their peer)."""
    records = []
    for name in os.listdir(error_dir):
        if not (name.startswith("rank") and name.endswith(".json")):
            continue
        try:
            with open(os.path.join(error_dir, name), encoding="utf-8") as f:
                records.append(json.load(f))
        except (OSError, ValueError):
            continue
    recorded = {r["rank"] for r in records}
    killed = [i for i, code in sorted(failed.items()) if code < 0 and rank_offset + i not in recorded]
    if killed or not records:
        index = killed[0] if killed else min(failed)
        code = failed[index]
        if code < 0:
            what = f"was killed by signal {signal.Signals(-code).name}"
        else:
            what = f"exited with code {code} without a Python error"
        return RankFailedError(
            f"rank {rank_offset + index} {what}; the other ranks were stopped.",
            hint="Check the machine's memory (the OOM killer sends SIGKILL) and the log above.",
        )
    record = min(records, key=lambda r: r["time"])
    if record.get("speaks_for_the_job"):  # e.g. "stopped by SIGTERM ...", "rank 1 is stuck at ..."
        error = RankFailedError(record["message"])
        error.speaks_for_the_job = True
    else:
        error = RankFailedError(f"rank {record['rank']} failed: {record['message']} (the other ranks were stopped)")
    error.exit_code = record["exit_code"]
    error.details = record["traceback"]
    error.show_details = bool(record.get("show_details"))  # a traceback of user code: shown, not only on request
    return error


def _worker(
    local_rank: int,
    payload: bytes,
    num_procs: int,
    machine_rank: int,
    world_size: int,
    dist_url: str,
    timeout: timedelta,
    error_dir: str,
) -> None:
    rank = machine_rank * num_procs + local_rank
    if hasattr(os, "setpgrp"):
        os.setpgrp()  # out of the terminal's foreground group: a Ctrl-C reaches this rank once, from the launcher
    os.environ["LAZYTRAIN_ERROR_DIR"] = error_dir  # where a rank records its error (the watchdog: a hang)
    parent = multiprocessing.parent_process()
    launcher = parent.pid if parent is not None and parent.pid is not None else os.getppid()
    os.environ["LAZYTRAIN_LAUNCHER_PID"] = str(launcher)
    watch = threading.Thread(target=_watch_launcher, args=(launcher, rank, local_rank, error_dir),
                             name="lazytrain-launcher-watch", daemon=True)  # fmt: skip
    watch.start()
    try:
        main_fn, args = cloudpickle.loads(payload)
        _set_device(local_rank)
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
            _record_error(error_dir, rank, e)
        os._exit(code)
    except BaseException as e:  # record every other way out, KeyboardInterrupt included
        if not job_stopping():  # else the launcher is stopping the job for another rank's error: nothing to add
            _record_error(error_dir, rank, e)
        sys.stderr.flush()
        os._exit(e.exit_code if isinstance(e, LazytrainError) else 1)


def _watch_launcher(launcher: int, rank: int, local_rank: int, error_dir: str) -> None:
    """A daemon thread in each worker: when the launcher dies (SIGKILL, the OOM killer), the rank exits too,
    instead of running on (holding memory and GPUs) with nobody to stop it: a rank blocked in a collective or
    stuck never reaches the end of its step, where GracefulStop would act on torch's parent-death signal. A
    checkpoint being written gets up to ``_SAVE_GRACE_S`` to finish; the rank's stack goes to stderr (what it
    was doing), then it exits. Its DataLoader workers follow (they check their parent every few seconds)."""
    while os.getppid() == launcher:
        time.sleep(_LAUNCHER_POLL_S)
    # whatever happens below (a stderr nobody reads any more can block a write), the rank ends
    deadline_timer = threading.Timer(_SAVE_GRACE_S + 15, os._exit, (1,))
    deadline_timer.daemon = True
    deadline_timer.start()
    try:
        saving = writes_in_progress()
        logger.error("rank %d: the launcher (pid %d) is gone; this rank exits%s.", rank, launcher,
                     " once the checkpoint being written is complete" if saving else "")  # fmt: skip
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


_LAUNCHER_POLL_S = 0.5
_SAVE_GRACE_S = 30.0  # how long a rank whose launcher died waits for a checkpoint write to finish


def job_stopping() -> bool:
    """Whether lazytrain's launcher is stopping this job (another rank failed, or the launcher got a second
    signal): the SIGTERM it sends then is no preemption, and this rank exits without a checkpoint."""
    error_dir = os.environ.get("LAZYTRAIN_ERROR_DIR")
    return bool(error_dir) and os.path.exists(os.path.join(error_dir, STOPPING))  # type: ignore[arg-type]


def launcher_gone() -> bool:
    """Whether this worker's launcher has died (SIGKILL, the OOM killer): its parent is another process now."""
    pid = os.environ.get("LAZYTRAIN_LAUNCHER_PID")
    return bool(pid) and os.getppid() != int(pid)  # type: ignore[arg-type]


def under_lazytrain_launcher() -> bool:
    """Whether this process is a worker spawned by lazytrain's launcher (``--num-procs``), which reports the
    job's error once, instead of each rank."""
    return "LAZYTRAIN_ERROR_DIR" in os.environ


def _record_error(error_dir: str, rank: int, error: BaseException) -> None:
    message = str(error) if isinstance(error, LazytrainError) else f"{type(error).__name__}: {error}"
    record = {
        "rank": rank,
        "time": time.time(),
        "message": message,
        "exit_code": error.exit_code if isinstance(error, LazytrainError) else 1,
        "speaks_for_the_job": isinstance(error, LazytrainError) and error.speaks_for_the_job,
        "show_details": isinstance(error, LazytrainError) and error.show_details,
        "traceback": (
            error.details
            if isinstance(error, LazytrainError) and error.show_details and error.details
            else "".join(traceback.format_exception(type(error), error, error.__traceback__))
        ),
    }
    tmp = os.path.join(error_dir, f".rank{rank}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f)
    os.replace(tmp, os.path.join(error_dir, f"rank{rank}.json"))
