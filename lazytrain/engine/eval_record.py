"""Where ``lazytrain eval`` records its results: with the run that made the weights, in that run's ``eval/``
folder (its metrics.jsonl rows and the eval command's config.yaml), never over the run's own record."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import DictConfig

from ..config import LazyConfig
from ..config.lazy_config import resolved_copy
from ..errors import TrainingError
from ..events.jsonl import append_rows
from ..fileio import describe_write_error

__all__ = ["EVAL_FOLDER", "EvalDestination", "eval_destination", "run_folder_of", "write_eval_record"]

EVAL_FOLDER = "eval"  # inside a run folder: what `lazytrain eval` wrote about that run's weights
_RUN_MARKS = ("config.yaml", "metrics.jsonl")  # files a training run leaves in its folder


@dataclass(frozen=True)
class EvalDestination:
    """The folder an evaluation's results go to (``folder``, a run's ``eval/``) and why (``reason``, for the
    log)."""

    folder: str
    reason: str

    @property
    def metrics(self) -> str:
        return os.path.join(self.folder, "metrics.jsonl")


def run_folder_of(weights: str) -> Optional[str]:
    """The training run's folder that ``weights`` lies in (``RUN/checkpoints/x.pth`` or ``RUN/x.pth``, where
    RUN holds a config.yaml or metrics.jsonl), or None for weights outside any run (an authors' release, a
    bare file)."""
    folder = os.path.dirname(weights)
    candidates = [os.path.dirname(folder)] if os.path.basename(os.path.abspath(folder)) == "checkpoints" else []
    candidates.append(folder)
    for run in candidates:
        if any(os.path.isfile(os.path.join(run or ".", mark)) for mark in _RUN_MARKS):
            return run or "."
    return None


def eval_destination(weights: str, output_dir: str, explicit_output_dir: bool = False) -> EvalDestination:
    """``OUTPUT_DIR/eval`` when the user named ``--output-dir``; else the ``eval/`` folder of the run the
    weights came from; else ``output_dir/eval`` (the config's ``train.output_dir``)."""
    if explicit_output_dir:
        return EvalDestination(os.path.join(output_dir, EVAL_FOLDER), "--output-dir")
    run = run_folder_of(weights)
    if run is not None:
        return EvalDestination(os.path.join(run, EVAL_FOLDER), "the run the weights came from")
    reason = "train.output_dir: the weights lie in no run folder"
    return EvalDestination(os.path.join(output_dir, EVAL_FOLDER), reason)


def write_eval_record(destination: EvalDestination, cfg: DictConfig, row: dict[str, Any]) -> None:
    """Append ``row`` to ``eval/metrics.jsonl`` (whole, or not at all) and write the eval command's resolved
    config to ``eval/config.yaml`` (rank 0 calls it)."""
    path = destination.metrics
    try:
        append_rows(path, [row])
        path = os.path.join(destination.folder, "config.yaml")
        LazyConfig.save(resolved_copy(cfg), path)
    except OSError as e:
        raise TrainingError(
            describe_write_error(e, path) + ".",
            hint="Free some space, or name another folder with --output-dir (the results go to its eval/).",
        ) from e
