"""The iteration convention, explained once (the rest of lazytrain points here).

Users count iterations done: iteration N is the state after N iterations completed. The terminal's
``iter: N/max``, ``model_{N:07d}.pth``, metrics.jsonl's ``"iteration": N``, TensorBoard's step N and an error
"at iteration N" all mean that (the first iteration is 1).

Inside, the trainer (``trainer.iter``) and the event storage (``storage.iter``) hold the 0-based *index* of
the iteration being run, as detectron2's do: while index i runs, i iterations are done; once it finished,
i + 1. So a value put at index i is written as iteration i + 1, and a hook's ``after_step`` sees
``trainer.iter + 1`` iterations done. ``start_iter`` is the number of iterations done before this run (a
resumed run's), which is also the index of its first iteration. A checkpoint stores ``iteration``, the index
of the last iteration done (N - 1 in ``model_{N:07d}.pth``, as checkpoints have always held it): a resume
starts at index ``iteration + 1``.
"""

from __future__ import annotations

__all__ = ["last_iteration_run"]


def last_iteration_run(index: int, start_iter: int, max_iter: int) -> int:
    """The index of the last iteration that ran, given the trainer's ``index`` once the loop is left: the one
    that raised (``index < max_iter``), the last one when training completed (the loop leaves ``index`` at
    ``max_iter``), or, when none ran (a run resumed at its end), the last one before (``start_iter - 1``)."""
    return max(min(index, max_iter - 1), start_iter - 1)
