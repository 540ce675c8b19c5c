"""Evaluation: the evaluator protocol, the inference loop, and a results table for the log."""

from __future__ import annotations

import contextlib
import itertools
import logging
import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Optional, Protocol, runtime_checkable

import numpy as np
import torch

from .comm import all_gather, broadcast_from_main, reduce_sum
from .data import describe_batch, to_device
from .errors import LazytrainError, TrainingError, UserCodeError
from .events import beat, working
from .progress import Progress

logger = logging.getLogger(__name__)

__all__ = [
    "DatasetEvaluator",
    "all_gather",
    "as_number",
    "flatten_results",
    "format_results",
    "inference_on_dataset",
    "reduce_sum",
]


@runtime_checkable
class DatasetEvaluator(Protocol):
    """``reset()`` before a pass, ``process(batch, outputs)`` per batch, ``evaluate()`` the metrics.

    With several processes each rank sees its part of the data; ``evaluate`` combines them (for instance with
    :func:`reduce_sum` on a confusion matrix). Rank 0's dict is the result every rank gets; other ranks may
    return None (detectron2's convention) or anything else. None on rank 0 means no metrics (``{}``).
    """

    def reset(self) -> None: ...

    def process(self, batch: Any, outputs: Any) -> None: ...

    def evaluate(self) -> dict[str, Any]: ...


def inference_on_dataset(
    model: torch.nn.Module,
    data_loader: Iterable[Any],
    evaluator: DatasetEvaluator,
    *,
    device: torch.device | str = "cpu",
    autocast: contextlib.AbstractContextManager | None = None,
    log_every_s: Optional[float] = None,
    what: str = "Inference",
    where: str = "evaluation",
) -> dict[str, Any]:
    """Run ``model`` in eval mode without gradients over ``data_loader``; return ``evaluator.evaluate()`` of
    rank 0, on every rank (a collective in a process group: every rank calls it).

    The model's mode and every RNG state are restored afterwards, so an evaluation in the middle of training
    does not change what training does next (exact resume depends on it). Progress with an ETA is logged
    every ``log_every_s`` seconds (default :data:`lazytrain.progress.EVERY_S`), as ``"<what> done 11/500.
    ..."``. An exception from the loader, the model or the evaluator is the user's: a :class:`UserCodeError`
    that starts with ``where`` (``"evaluation at iteration 20"``) and keeps the user's traceback.
    """
    evaluator_name = type(evaluator).__name__
    _call_user(where, f"{evaluator_name}.reset", evaluator.reset)
    progress = Progress(what, data_loader, unit="batch", logger=logger, every_s=log_every_s)
    with _preserved_rng(), _eval_mode(model), torch.inference_mode():
        batches = _call_user(where, _loader_name(data_loader), iter, data_loader)
        for index in itertools.count(1):
            at = f"{where}, batch {index}"
            batch = _call_user(at, _loader_name(data_loader), next, batches, _END)
            if batch is _END:
                break
            batch = to_device(batch, device)
            with autocast if autocast is not None else contextlib.nullcontext():
                try:
                    outputs = model(batch)
                except LazytrainError:
                    raise
                except Exception as e:  # the model's frames are in the traceback; the batch's shapes go here
                    who = f"{type(model).__name__}.forward"
                    raise UserCodeError.raised_in(at, who, e, describe_batch(batch)) from e
            _call_user(at, f"{evaluator_name}.process", evaluator.process, batch, outputs)
            progress.step()
            beat()  # a long evaluation is progress, not a hang
    progress.done()
    with working(f"{evaluator_name}.evaluate()"):  # one long call (a gather, a metric over all the data)
        results = _call_user(where, f"{evaluator_name}.evaluate", evaluator.evaluate)
        # rank 0's results count: other ranks may return None (detectron2's evaluators do), and hooks that act
        # on results on every rank (train.best saves, a collective) must see the same dict everywhere
        results = broadcast_from_main(results)
    if results is None:
        return {}
    if not isinstance(results, Mapping):
        raise TrainingError(
            f"{evaluator_name}.evaluate returned {type(results).__name__}; it must return a dict of metrics "
            "({'accuracy': 0.9, ...}) on rank 0, or None for no metrics.",
            key="evaluator",
        )
    return dict(results)


_END = object()  # what next() returns when the loader is done


def _call_user(where: str, who: str, function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)``: user code, whose exceptions become a UserCodeError naming ``who`` and ``where``."""
    try:
        return function(*args)
    except LazytrainError:
        raise
    except Exception as e:
        raise UserCodeError.raised_in(where, who, e) from e


def _loader_name(loader: Iterable[Any]) -> str:
    dataset = getattr(loader, "dataset", None)
    what = type(loader).__name__ + (f" of {type(dataset).__name__}" if dataset is not None else "")
    return f"the test loader ({what})"


def format_results(results: Mapping[str, Any]) -> str:
    """A two-column table of (possibly nested) results for the log."""
    flat = flatten_results(results)
    if not flat:
        return "(no results)"
    width = max(len(k) for k in flat)
    return "\n".join(f"  {k:<{width}}  {v if isinstance(v, int) else f'{v:.4f}'}" for k, v in flat.items())


def flatten_results(results: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """``{"sem_seg": {"mIoU": 0.5}}`` → ``{"sem_seg/mIoU": 0.5}``: the names results are logged under."""
    flat: dict[str, float] = {}
    for key, value in results.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten_results(value, name))
        else:
            flat[name] = as_number(value)
    return flat


def as_number(value: Any) -> float:
    """A result or scalar as a Python number that keeps its kind: a count (``num_samples``, an int, a numpy or
    torch integer) stays an int, so the terminal shows ``359``, not ``359.0000``, and metrics.jsonl ``359``;
    anything else becomes a float."""
    if isinstance(value, np.generic) or (isinstance(value, torch.Tensor) and value.numel() == 1):
        value = value.item()
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return float(value)


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextlib.contextmanager
def _preserved_rng() -> Iterator[None]:
    states = random.getstate(), np.random.get_state()
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])
