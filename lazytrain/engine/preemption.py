"""Preemption that loses nothing: on SIGTERM (SLURM, Kubernetes), SIGUSR1 (SLURM's ``--signal`` warning) or
Ctrl-C, finish the step, save a checkpoint, say how to resume, and exit with :data:`EXIT_PREEMPTED`."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import Sequence
from typing import Any, Optional

import torch
import torch.distributed as dist

from .. import comm
from ..errors import Interrupted, LazytrainError
from ..invocation import resume_command
from ..iterations import last_iteration_run
from ..launch import job_stopping, launcher_gone, under_lazytrain_launcher
from ..launch.signals import install_handlers, restore_handlers
from .hook_api import HookBase, HookTrainer
from .hooks import require_checkpointer, save_training_state
from .logger import log_closing_error

__all__ = ["EXIT_PREEMPTED", "GracefulStop", "Preempted", "last_checkpoint"]

logger = logging.getLogger(__name__)

EXIT_PREEMPTED = 75  # sysexits' EX_TEMPFAIL: stopped on request with a checkpoint saved; --resume continues


class Preempted(LazytrainError):
    """Training stopped on a signal after saving a checkpoint (exit code 75); ``--resume`` continues it."""

    exit_code = EXIT_PREEMPTED
    speaks_for_the_job = True


class GracefulStop(HookBase):
    """On one of ``signals``: the step in progress finishes, every rank agrees on the iteration to stop at, a
    checkpoint of that iteration is written, and training ends with :class:`Preempted`.

    In a process group the ranks agree through one small all_reduce per step, started at the end of a step
    and read at the end of the next (so it overlaps the step; the stop comes at most one step later). A
    second Ctrl-C stops at once (the checkpoint being written, if any, is left out: writes are atomic); a
    second SIGTERM / SIGUSR1 is ignored. A first signal once the loop has ended (during the final evaluation or
    save, in the hooks' ``after_train``) stops what runs at once, since no step follows to stop after; the hooks
    after it still run their ``after_train`` (the final checkpoint is written when training finished) and the
    run ends with :class:`Preempted`, naming the checkpoint it ends with. Under SLURM, SIGUSR1 also requeues
    the job after the save (``scontrol requeue``), for jobs submitted with ``sbatch --requeue``.

    Under ``--num-procs`` the workers get these signals from lazytrain's launcher, which passes on the first
    one it receives. The SIGTERM it sends to stop the other ranks after one failed ends a rank at once,
    without a checkpoint and without a message. When the launcher itself dies, torch's parent-death signal
    (SIGINT) is no request to stop here: the rank's watch of its launcher ends it (``launch/launcher_watch.py``).
    """

    def __init__(self, signals: Sequence[str] = ("SIGTERM", "SIGUSR1", "SIGINT")) -> None:
        self.signals = [name for name in signals if hasattr(signal, name)]  # no SIGUSR1 on Windows
        self._received: Optional[int] = None
        self._previous: dict[int, Any] = {}
        self._vote: Optional[tuple[Any, torch.Tensor]] = None
        self._stop_at_end: Optional[Preempted] = None  # raised by a signal during the hooks' after_train

    def before_train(self) -> None:
        self._received = None
        self._vote = None
        self._stop_at_end = None
        self._previous = install_handlers(self.signals, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if launcher_gone():  # torch's parent-death signal (SIGINT): the rank's watch of its launcher ends it
            return
        if job_stopping():  # lazytrain's launcher stops the job for another rank's error: no checkpoint, no words
            raise SystemExit(1)
        if self._received is None:
            self._received = signum
            if self._training_over():  # no step follows to stop after: stop the final evaluation / save now
                logger.warning("received %s while the run was finishing: stopping now.", name)
                self._stop_at_end = Preempted(f"stopped by {name} while the run was finishing.")
                raise self._stop_at_end
            if comm.get_world_size() == 1 or under_lazytrain_launcher():
                logger.warning("received %s: stopping after this step, with a checkpoint.", name)
            else:  # under torchrun / SLURM a peer may be gone already (its launcher stops the others this way)
                logger.warning(
                    "received %s: stopping after this step; a checkpoint follows if every rank reaches the end of "
                    "the step.",
                    name,
                )
        elif signum == signal.SIGINT:
            # put the handlers back now: the hooks' after_train may not run to the end after this
            restore_handlers(self._previous)
            self._previous = {}
            last = last_checkpoint(self.trainer) if hasattr(self, "trainer") else None
            raise Interrupted(f"no checkpoint written; the last one is {last}" if last else "no checkpoint yet")
        else:
            logger.warning("received %s again: already stopping.", name)

    def after_step(self) -> None:
        signum = self._agreed_signal()
        if signum is None:
            return
        self._finish_vote()
        trainer = self.trainer
        name = signal.Signals(signum).name
        checkpointer = require_checkpointer(trainer)
        checkpoint = f"model_{trainer.iter + 1:07d}"
        save_training_state(trainer, checkpoint)
        comm.synchronize()  # no rank exits (and so gets its peers stopped) before rank 0 has written
        path = os.path.join(checkpointer.save_dir, checkpoint + ".pth")
        if signum == getattr(signal, "SIGUSR1", None) and "SLURM_JOB_ID" in os.environ and comm.is_main_process():
            _requeue_slurm_job(os.environ["SLURM_JOB_ID"])
        error = Preempted(
            f"stopped by {name} after iteration {trainer.iter + 1} (of {trainer.max_iter}); checkpoint {path} written.",
            hint=f"`{resume_command()}` continues.",
        )
        if comm.is_main_process():  # the terminal shows it as the closing error line
            log_closing_error(error, logging.INFO)
        raise error

    def after_train(self) -> None:
        self._finish_vote()
        restore_handlers(self._previous)
        self._previous = {}
        if self._stop_at_end is not None:  # the hooks after the one stopped have run: say what is on disk now
            _describe_stop_at_end(self._stop_at_end, self.trainer)

    def _training_over(self) -> bool:
        """Whether the loop has ended (the hooks' after_train run): a signal then has no step to stop after."""
        trainer = getattr(self, "trainer", None)
        return trainer is not None and (trainer.completed or trainer.failure is not None)

    def _agreed_signal(self) -> Optional[int]:
        """The signal all ranks stop for now, or None. In a process group: the highest signal number any rank
        had received when the previous step ended (the vote of that step, read now)."""
        if comm.get_world_size() == 1:
            return self._received
        previous = self._vote
        mine = torch.tensor([self._received or 0], dtype=torch.int32)
        self._vote = (dist.all_reduce(mine, op=dist.ReduceOp.MAX, async_op=True), mine)
        if previous is None:
            return None
        work, value = previous
        work.wait()
        return int(value.item()) or None

    def _finish_vote(self) -> None:
        if self._vote is not None:  # every rank started the same votes: wait for the last one to finish
            self._vote[0].wait()
            self._vote = None

    def __repr__(self) -> str:
        return f"GracefulStop({', '.join(self.signals)}: checkpoint, then exit {EXIT_PREEMPTED})"


def last_checkpoint(trainer: HookTrainer) -> Optional[str]:
    """The path ``last_checkpoint`` names in the run's checkpoint folder, or None when none was written."""
    checkpointer = trainer.checkpointer
    if checkpointer is None or not checkpointer.save_dir or not checkpointer.has_checkpoint():
        return None
    path = checkpointer.get_checkpoint_file()
    return path if os.path.isfile(path) else None


def _describe_stop_at_end(error: Preempted, trainer: HookTrainer) -> None:
    """Complete the message of a stop during the hooks' after_train with the checkpoint the run ends with."""
    last = last_checkpoint(trainer)
    iterations = last_iteration_run(trainer.iter, trainer.start_iter, trainer.max_iter) + 1
    done = f"after iteration {iterations} (of {trainer.max_iter})"
    if trainer.completed and last is not None and os.path.basename(last) == "model_final.pth":
        error.message += f" Training had finished {done}: the final checkpoint {last} was written; nothing more."
        error.hint = "It holds the trained weights; `lazytrain eval` evaluates them."
    else:
        where = f"the last one is {last}" if last is not None else "no checkpoint yet"
        error.message += f" {done.capitalize()}: no checkpoint written by the stop; {where}."
        error.hint = f"`{resume_command()}` continues." if last is not None else None
    error.args = (error.format(),)


def _requeue_slurm_job(job_id: str) -> None:
    try:
        r = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        logger.warning("could not requeue SLURM job %s: %s", job_id, e)
        return
    if r.returncode == 0:
        logger.info("requeued SLURM job %s (scontrol requeue); it continues from this checkpoint.", job_id)
    else:
        logger.warning(
            "scontrol requeue %s failed: %s (submit with `sbatch --requeue` to make the job requeueable).",
            job_id,
            (r.stderr or r.stdout).strip(),
        )
