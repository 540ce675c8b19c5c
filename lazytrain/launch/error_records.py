"""The job's error folder under lazytrain's launcher: each failing rank records its error there as JSON, the
launcher picks the one to show, and a marker file tells the ranks that the launcher is stopping the job."""

from __future__ import annotations

import json
import os
import signal
import time
import traceback
from typing import Optional

from ..errors import LazytrainError, RankFailedError

__all__ = [
    "ERROR_DIR_VARIABLE",
    "STOPPING",
    "error_dir",
    "failure_from_records",
    "job_stopping",
    "mark_stopping",
    "record_error",
    "under_lazytrain_launcher",
]

ERROR_DIR_VARIABLE = "LAZYTRAIN_ERROR_DIR"  # set in every worker: the folder where a rank records its error
STOPPING = "stopping"  # in the error folder: the launcher is stopping the job (a rank failed, a second signal)


def error_dir() -> Optional[str]:
    """This worker's error folder, or None outside lazytrain's launcher (one process, torchrun, SLURM)."""
    return os.environ.get(ERROR_DIR_VARIABLE) or None


def under_lazytrain_launcher() -> bool:
    """Whether this process is a worker spawned by lazytrain's launcher (``--num-procs``), which reports the
    job's error once, instead of each rank."""
    return ERROR_DIR_VARIABLE in os.environ


def job_stopping() -> bool:
    """Whether lazytrain's launcher is stopping this job (another rank failed, or the launcher got a second
    signal): the SIGTERM it sends then is no preemption, and this rank exits without a checkpoint."""
    folder = error_dir()
    return folder is not None and os.path.exists(os.path.join(folder, STOPPING))


def mark_stopping(folder: str) -> None:
    """Tell the workers (before they get SIGTERM) that the launcher is stopping the job."""
    try:
        with open(os.path.join(folder, STOPPING), "w", encoding="utf-8"):
            pass
    except OSError:
        pass


def record_error(folder: str, rank: int, error: BaseException) -> None:
    """Write ``error`` as rank ``rank``'s record (atomically: the launcher may read the folder at any time)."""
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
    tmp = os.path.join(folder, f".rank{rank}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f)
    os.replace(tmp, os.path.join(folder, f"rank{rank}.json"))


def failure_from_records(failed: dict[int, int], rank_offset: int, folder: str) -> LazytrainError:
    """The error to show for the workers ``failed`` (``{local index: exit code}``). A rank killed by a signal
    without leaving a record (SIGKILL, the OOM killer) is the cause, whatever its peers wrote after losing it;
    otherwise the first error recorded wins (later ones are usually other ranks losing their peer)."""
    records = []
    for name in os.listdir(folder):
        if not (name.startswith("rank") and name.endswith(".json")):
            continue
        try:
            with open(os.path.join(folder, name), encoding="utf-8") as f:
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
