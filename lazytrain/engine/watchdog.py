"""HangWatchdog: a rank that is alive but stuck (a deadlock, a stuck data worker, an endless loop in a hook)
is named, with its stack, instead of hanging the job until the process group times out."""

from __future__ import annotations

import contextlib
import faulthandler
import json
import logging
import os
import sys
import threading
import time
import traceback
from typing import Any, Optional

import torch.distributed as dist

from .. import comm
from ..errors import LazytrainError
from ..events import EventStorage
from ..launch.error_records import error_dir, record_error
from .hook_api import HookBase
from .logger import FILE_ONLY, log_closing_error

__all__ = ["HangError", "HangWatchdog"]

logger = logging.getLogger(__name__)

_COLLECTIVE_FILES = ("torch/distributed/", "torch/nn/parallel/", "torch/autograd/")  # waiting for other ranks


class HangError(LazytrainError):
    """No step finished for ``train.hang_timeout`` seconds on some rank (exit code 1)."""

    speaks_for_the_job = True


# a save or evaluator.evaluate() (one long call, see EventStorage.working) may take this many times the timeout:
# it is work, not a hang, but a save stuck on a dead file system must still stop the job
BUSY_FACTOR = 10


class HangWatchdog(HookBase):
    """A thread per rank that wakes every few seconds. When this rank has made no progress (a finished step,
    or an evaluation batch) for ``timeout`` seconds (three times that before the first step: start-up,
    compilation, a first pass over the labels; :data:`BUSY_FACTOR` times that inside a checkpoint save or
    ``evaluator.evaluate()``), it dumps every thread's Python stack (faulthandler) to stderr,
    publishes where its main thread is (frame and stack) through the process group's store, reads what the
    other ranks published, and ends the process with one paragraph naming the stuck rank, its iteration and
    frame. Rank 0 writes every rank's stack and the paragraph to log.txt; the paragraph is printed once (by
    lazytrain's launcher, else by the lowest rank that answered). The launcher (or torchrun / SLURM) then stops
    the job. A rank blocked in a collective is waiting for the stuck one; the stuck one is the rank that is not
    (or the one that did not answer).

    It watches until train() ends, the final evaluation and save included (they run in later hooks'
    ``after_train``). A rank stuck in C code that holds the GIL stops this thread too: for that case
    ``faulthandler.dump_traceback_later`` (a C thread), re-armed at each wake-up, dumps the stacks and ends the
    process a little after this thread would have; the other ranks then name it as the rank that did not
    answer."""

    def __init__(self, timeout: float, poll_s: Optional[float] = None) -> None:
        self.timeout = float(timeout)
        self.poll_s = poll_s if poll_s is not None else min(5.0, max(0.2, self.timeout / 10))
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._main_thread = 0
        self._steps_done = 0

    def before_train(self) -> None:
        if self.timeout <= 0:
            return
        storage = self.trainer.storage
        storage.beat()
        self._main_thread = threading.get_ident()
        self._steps_done = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._watch, args=(storage, self._stop), name="lazytrain-hang-watchdog", daemon=True
        )
        # armed here too, not only at the thread's wake-ups: a rank that holds the GIL from its first steps on
        # would otherwise never let the thread arm it
        self._arm_fault_timer(3 * self.timeout)
        self._thread.start()
        storage.at_exit(self._stop_watching)  # after every hook's after_train: the end of the run is watched

    def after_step(self) -> None:
        self._steps_done += 1
        self.trainer.storage.beat()

    def _stop_watching(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        faulthandler.cancel_dump_traceback_later()

    def __repr__(self) -> str:
        return f"HangWatchdog(timeout={self.timeout:g} s: names a stuck rank with its stack)"

    def _arm_fault_timer(self, remaining: float) -> None:
        """faulthandler dumps every stack and ends the process ``remaining`` s (the time left before this
        thread would act) plus a grace from now: later than this thread, and than the other ranks wait for an
        answer (see _exchange), so it acts only when this thread cannot run."""
        stderr = _fault_file()
        if stderr is not None:
            grace = _answer_wait(self.timeout) + 2 * self.poll_s + 1.0
            faulthandler.dump_traceback_later(remaining + grace, exit=True, file=stderr)

    def _watch(self, storage: EventStorage, stop: threading.Event) -> None:
        while not stop.wait(self.poll_s):
            limit = self.timeout if self._steps_done else 3 * self.timeout
            if storage.busy is not None:
                limit = max(limit, BUSY_FACTOR * self.timeout)
            idle = time.monotonic() - storage.last_progress
            if idle >= limit:
                faulthandler.cancel_dump_traceback_later()
                self._stop_the_job(idle, storage.busy)
                return
            self._arm_fault_timer(limit - idle)

    def _stop_the_job(self, idle: float, busy: Optional[str]) -> None:
        rank = comm.get_rank()
        mine = self._where_main_thread_is(idle, busy)
        sys.stderr.write(
            f"\n[rank {rank}] lazytrain: no progress for {idle:.0f} s; the Python stack of every thread:\n"
        )
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        sys.stderr.flush()
        infos = self._exchange(mine)
        error = HangError(_describe(infos, comm.get_world_size(), self.timeout))
        if rank == 0:  # log.txt gets every rank's main thread and the paragraph (the terminal has both already)
            for info in infos:
                logger.error(
                    "rank %d made no progress for %.0f s (iteration %d); its main thread:\n%s",
                    info["rank"],
                    info["idle"],
                    info["iteration"],
                    info["stack"],
                    extra=FILE_ONLY,
                )
            log_closing_error(error)
            self._publish("lazytrain/hang/logged", "1")
            # rank 0 hosts the store: leaving before the others read "logged" makes their next poll print
            # TCPStore's C++ "recvValue failed" warning with 20 stack frames above the closing line
            self._wait_for([f"lazytrain/hang/read/{info['rank']}" for info in infos if info["rank"] != 0])
        elif any(info["rank"] == 0 for info in infos):
            self._wait_for(["lazytrain/hang/logged"])  # rank 0 logs what this rank sent before the job is stopped
            self._publish(f"lazytrain/hang/read/{rank}", "1")
        folder = error_dir()
        if folder:  # spawned by lazytrain's launcher: it reports the first error recorded, once
            record_error(folder, rank, error)
        elif rank == min(info["rank"] for info in infos):  # torchrun / SLURM / one process: the lowest rank says it
            print(f"error: {error}", file=sys.stderr, flush=True)
        logging.shutdown()
        os._exit(error.exit_code)

    def _where_main_thread_is(self, idle: float, busy: Optional[str]) -> dict[str, Any]:
        frame = sys._current_frames().get(self._main_thread)
        stack = traceback.extract_stack(frame) if frame is not None else traceback.StackSummary()
        last = stack[-1] if stack else None
        waiting = any(any(part in f.filename.replace(os.sep, "/") for part in _COLLECTIVE_FILES) for f in stack[-8:])
        return {
            "rank": comm.get_rank(),
            # the one being run, counted from 1; past max_iter: the end of training (final evaluation, save)
            "iteration": min(int(getattr(self.trainer, "iter", -1)) + 1, int(getattr(self.trainer, "max_iter", 0))),
            "ended": int(getattr(self.trainer, "iter", -1)) >= int(getattr(self.trainer, "max_iter", 0)),
            "idle": idle,
            "frame": f"{_short(last.filename)}:{last.lineno} in {last.name}" if last else "an unknown frame",
            "busy": busy,
            "in_collective": waiting,
            "stack": "".join(stack.format()),
        }

    def _exchange(self, mine: dict[str, Any]) -> list[dict[str, Any]]:
        """Publish this rank's facts (its main thread's stack included) in the process group's store and read the
        others' (those that answer within a few seconds: a rank holding the GIL in C code cannot)."""
        store = self._store()
        if store is None:
            return [mine]
        self._publish(f"lazytrain/hang/{mine['rank']}", json.dumps(mine))
        infos = {mine["rank"]: mine}
        deadline = time.monotonic() + _answer_wait(self.timeout)
        while time.monotonic() < deadline and len(infos) < comm.get_world_size():
            for rank in range(comm.get_world_size()):
                key = f"lazytrain/hang/{rank}"
                try:
                    if rank not in infos and store.check([key]):
                        infos[rank] = json.loads(store.get(key))
                except (RuntimeError, ValueError):  # the store's host (rank 0) is gone
                    return [infos[r] for r in sorted(infos)]
            time.sleep(0.2)
        return [infos[r] for r in sorted(infos)]

    def _store(self) -> Any:
        if comm.get_world_size() == 1:
            return None
        try:
            return dist.distributed_c10d._get_default_store()
        except (RuntimeError, AttributeError, ValueError):
            return None

    def _publish(self, key: str, value: str) -> None:
        store = self._store()
        if store is not None:
            with contextlib.suppress(RuntimeError):  # the store's host (rank 0) is gone
                store.set(key, value)

    def _wait_for(self, keys: list[str], seconds: float = 10.0) -> None:
        store = self._store()
        deadline = time.monotonic() + seconds
        while store is not None and keys and time.monotonic() < deadline:
            try:
                if store.check(keys):
                    return
            except RuntimeError:  # the store's host (rank 0) is gone: it is done
                return
            time.sleep(0.1)


def _describe(infos: list[dict[str, Any]], world_size: int, timeout: float) -> str:
    """The paragraph: the stuck rank(s), iteration and frame; the others waited for them."""
    answered = {info["rank"] for info in infos}
    silent = [r for r in range(world_size) if r not in answered]
    if silent:
        names = ", ".join(map(str, silent))
        return (
            f"rank {names} made no progress for {timeout:.0f} s (train.hang_timeout) and did not answer (stuck in C "
            "code that holds the GIL?); the other ranks waited for it. Their stacks are in the log above."
        )
    stuck = [i for i in infos if not i["in_collective"]] or [min(infos, key=lambda i: i["iteration"])]
    parts = [
        f"rank {i['rank']} is stuck {_when(i)} in {i['frame']}" + (f" ({i['busy']})" if i.get("busy") else "")
        for i in stuck
    ]
    others = "" if len(stuck) == len(infos) else "; the other ranks waited for it in a collective"
    return (
        f"{'; '.join(parts)}: no progress for {max(i['idle'] for i in stuck):.0f} s "
        f"(train.hang_timeout={timeout:g}){others}. Every rank's Python stack is in the log above."
    )


def _when(info: dict[str, Any]) -> str:
    if info.get("ended"):
        return f"after iteration {info['iteration']}, at the end of training"
    return f"at iteration {info['iteration']}"


def _answer_wait(timeout: float) -> float:
    """How long a rank that found a hang waits for the other ranks' answers."""
    return min(15.0, max(3.0, timeout))


def _fault_file() -> Any:
    """stderr as faulthandler needs it (a real file descriptor), or None (stderr captured in memory)."""
    for stream in (sys.stderr, sys.__stderr__):
        try:
            if stream is not None:
                stream.fileno()
                return stream
        except (AttributeError, OSError, ValueError):
            continue
    return None


def _short(path: str) -> str:
    try:
        rel = os.path.relpath(path)
        return rel if not rel.startswith("..") else path
    except ValueError:
        return path
