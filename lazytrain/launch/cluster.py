"""Where this process stands in a job: the rank facts torchrun or SLURM set, the process group backend, the
device of a local rank, and joining a process group that torchrun / SLURM started."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Callable, MutableMapping
from datetime import timedelta
from typing import Any, Optional

import torch
import torch.distributed as dist

from .. import comm

__all__ = [
    "cluster_environment",
    "first_slurm_host",
    "free_port",
    "join_existing",
    "nccl_diagnostics",
    "process_group_backend",
    "set_device",
]


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
            "master_addr": env.get("MASTER_ADDR") or first_slurm_host(env.get("SLURM_JOB_NODELIST", "127.0.0.1")),
            # every task derives the same port from the job id
            "master_port": int(env.get("MASTER_PORT") or 15000 + job_id % 20000),
        }
    return None


def first_slurm_host(nodelist: str) -> str:
    """The first host of a SLURM node list: ``scontrol show hostnames`` when SLURM's tools are here, else the
    list parsed by hand (``node[03-05,07],gpu1`` → ``node03``)."""
    if shutil.which("scontrol"):
        try:
            command = ["scontrol", "show", "hostnames", nodelist]
            out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=30).stdout
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


def set_device(local_rank: int) -> None:
    """Make ``local_rank`` this process's rank on its machine, and its GPU the current one (when there are),
    with :func:`nccl_diagnostics` for its NCCL process group."""
    os.environ["LOCAL_RANK"] = str(local_rank)  # read by comm.get_local_rank(), as under torchrun
    if torch.cuda.is_available():
        nccl_diagnostics()
        torch.cuda.set_device(comm.get_local_gpu())


# torch's NCCL watchdog and flight recorder, as torchtitan sets them: a collective that times out or fails
# tears the process group down (instead of hanging in C++ where no Python thread can see it) and each rank
# dumps its last collectives, to tell which rank is behind; read when the process group is created
NCCL_DIAGNOSTICS = {
    "TORCH_NCCL_ASYNC_ERROR_HANDLING": "3",  # abort the communicators and raise on a timeout or error
    "TORCH_NCCL_TRACE_BUFFER_SIZE": "2000",  # the flight recorder: the last 2000 collectives of each rank
    "TORCH_NCCL_DUMP_ON_TIMEOUT": "1",  # ... written to TORCH_NCCL_DEBUG_INFO_TEMP_FILE (/tmp/nccl_trace_rank_N)
}


def nccl_diagnostics(environ: Optional[MutableMapping[str, str]] = None) -> dict[str, str]:
    """Set :data:`NCCL_DIAGNOSTICS` in ``environ`` (``os.environ``) where the user has not set them; the ones set."""
    target: MutableMapping[str, str] = os.environ if environ is None else environ
    added = {k: v for k, v in NCCL_DIAGNOSTICS.items() if k not in target}
    target.update(added)
    return added


def join_existing(main_fn: Callable[..., Any], args: tuple, env: dict[str, Any], timeout: timedelta) -> Any:
    """Run ``main_fn(*args)`` in the process group torchrun / SLURM started (``env``: cluster_environment())."""
    os.environ.setdefault("MASTER_ADDR", str(env["master_addr"]))
    os.environ.setdefault("MASTER_PORT", str(env["master_port"]))
    set_device(env["local_rank"])
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if attempt is not None and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        # torchrun's agent keeps one store for all attempts (static rendezvous): without a prefix per attempt a
        # restarted rank reads the addresses of the previous attempt's ranks ("connectFullMesh ... refused")
        store = dist.TCPStore(
            os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), env["world_size"], False, timeout=timeout
        )
        dist.init_process_group(
            process_group_backend(),
            store=dist.PrefixStore(f"lazytrain/attempt_{attempt}/", store),
            world_size=env["world_size"],
            rank=env["rank"],
            timeout=timeout,
        )
    else:
        dist.init_process_group(
            process_group_backend(),
            init_method="env://",
            world_size=env["world_size"],
            rank=env["rank"],
            timeout=timeout,
        )
    try:
        return main_fn(*args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody uses now (for a one-machine ``--dist-url``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))  # the OS picks a port nobody uses
        return s.getsockname()[1]
