"""Where a run starts: ``--resume`` from ``last_checkpoint`` (everything, for an exact continuation), or the
weights of ``train.init_checkpoint``, or from scratch."""

from __future__ import annotations

import logging

import torch
from omegaconf import DictConfig

from .. import comm
from ..checkpoint import set_rng_state
from .trainer import Trainer

__all__ = ["resume_or_load"]

logger = logging.getLogger("lazytrain")


def resume_or_load(trainer: Trainer, cfg: DictConfig, resume: bool) -> int:
    """Load ``last_checkpoint`` (with ``resume``) or ``train.init_checkpoint`` (weights only); return the
    iteration to start from."""
    checkpointer = trainer.checkpointer
    assert checkpointer is not None, "the trainer has no checkpointer (build it with build_trainer)"
    if resume and checkpointer.has_checkpoint():
        path = checkpointer.get_checkpoint_file()
        extra = checkpointer.load(path)
        rng_states = extra.get("rng_states") or []
        rank = comm.get_rank()
        if len(rng_states) == comm.get_world_size():
            set_rng_state(rng_states[rank])
        else:
            logger.warning(
                "the checkpoint holds RNG states of %d processes, this run has %d: RNG not restored.",
                len(rng_states),
                comm.get_world_size(),
            )
        if extra.get("num_threads") not in (None, torch.get_num_threads()):
            logger.warning(
                "the checkpoint was written with %s CPU threads and this run uses %d: CPU kernels may round "
                "differently, so losses can differ in the last bits from an uninterrupted run.",
                extra["num_threads"],
                torch.get_num_threads(),
            )
        logger.info("Resumed from %s at iteration %d", path, extra["iteration"] + 1)
        return int(extra["iteration"]) + 1
    if resume:
        logger.warning("--resume: no checkpoint in %s; starting from scratch.", checkpointer.save_dir)
    elif checkpointer.has_checkpoint():
        logger.warning(
            "%s already holds checkpoints of an earlier run; this run starts from scratch and will replace "
            "last_checkpoint (add --resume to continue that run, or choose another --output-dir).",
            checkpointer.save_dir,
        )
    if cfg.train.init_checkpoint:
        checkpointer.load(cfg.train.init_checkpoint, checkpointables=[])
    return 0
