"""Launching: run a function in 1 process, in N spawned processes, under torchrun / SLURM, or across machines,
on torch.distributed process groups (NCCL with CUDA, else gloo). If any rank fails, the others are stopped.

One job a module:

- ``launcher``: :func:`launch`, spawning the workers, waiting for them, stopping them when one fails.
- ``worker``: a spawned worker's entry point (cloudpickle brings the function: configs may hold lambdas).
- ``cluster``: rank facts from torchrun / SLURM, the process group backend, joining their process group.
- ``signals``: a signal to the launcher passed on to its workers; install / restore handlers.
- ``launcher_watch``: a worker exits when its launcher dies.
- ``error_records``: a failing rank's error record, the error the launcher shows, the job-stopping marker.
"""

from .cluster import cluster_environment, process_group_backend
from .error_records import job_stopping, record_error, under_lazytrain_launcher
from .launcher import DEFAULT_TIMEOUT, launch
from .launcher_watch import launcher_gone

__all__ = [
    "DEFAULT_TIMEOUT",
    "cluster_environment",
    "job_stopping",
    "launch",
    "launcher_gone",
    "process_group_backend",
    "record_error",
    "under_lazytrain_launcher",
]
