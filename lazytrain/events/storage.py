"""The metric storage of one run: hooks put scalars and images at ``storage.iter``; writers read them.

A value put at ``storage.iter`` (an index) is written as iteration ``storage.iter + 1``: see
:mod:`lazytrain.iterations`. Scalars may be put as device tensors: they are turned into floats together, once
per write, so logging costs one host-device sync per log period instead of one per value per step.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from typing import Any, Optional, Union, cast

import numpy as np
import torch

from ..images import as_image

__all__ = ["EventStorage", "beat", "get_event_storage", "newest", "working"]

_CURRENT_STORAGE: list[EventStorage] = []  # the one per-run storage, a context (innermost last)
Number = Union[float, int, torch.Tensor]


def beat() -> None:
    """Mark progress in the storage of the run in progress, if there is one (evaluation calls it per batch)."""
    if _CURRENT_STORAGE:
        _CURRENT_STORAGE[-1].beat()


@contextlib.contextmanager
def working(what: str) -> Iterator[None]:
    """Mark ``what`` (``"saving checkpoint model_final"``) as work in progress in the storage of the run in
    progress, if there is one: one long call (a save, ``evaluator.evaluate()``) that cannot beat per batch."""
    if not _CURRENT_STORAGE:
        yield
        return
    with _CURRENT_STORAGE[-1].working(what):
        yield


def get_event_storage() -> EventStorage:
    """The storage of the run in progress (inside ``with EventStorage(...)``)."""
    if not _CURRENT_STORAGE:
        raise RuntimeError("get_event_storage() called outside of a training run (no EventStorage is open).")
    return _CURRENT_STORAGE[-1]


class EventStorage:
    """Per-run scalars: ``put_scalar(name, value)`` at ``storage.iter``; writers read histories and latest values.

    Tensors put are turned into floats by :meth:`flush`. With ``gather`` (``comm.all_gather`` in a process
    group; ``all_reduce_sum`` makes the common case one all_reduce of a flat tensor) a flush is a collective
    that makes each value the mean over the ranks, so only the collective
    flush ever turns pending values into floats: reads (:meth:`latest`, :meth:`history`, :meth:`median`) see
    the values up to the last flush and never flush on one rank alone. Without ``gather`` reads flush first.

    ``check_finite=True`` marks a value that must be finite (the losses): :meth:`flush` remembers the first
    iteration where one was not, in :attr:`first_nonfinite`.
    """

    def __init__(
        self,
        start_iter: int = 0,
        history_length: int = 10000,
        gather: Optional[Callable[[Any], list[Any]]] = None,
        all_reduce_sum: Optional[Callable[[torch.Tensor], None]] = None,
    ) -> None:
        self.iter = start_iter
        self.gather = gather
        self.all_reduce_sum = all_reduce_sum  # with gather: the fast path, once the ranks agree on the layout
        self._layout: Optional[tuple[tuple[str, int], ...]] = None  # (name, iteration offset) agreed by all ranks
        self._world = 1
        self._history: dict[str, deque[tuple[float, int]]] = defaultdict(lambda: deque(maxlen=history_length))
        self._latest: dict[str, tuple[float, int]] = {}
        self._smoothing: dict[str, bool] = {}
        self.groups: dict[str, str] = {}  # name -> "train" / "val"
        self._pending: list[tuple[str, torch.Tensor | float, int, bool]] = []
        self.first_nonfinite: Optional[tuple[int, dict[str, float]]] = None
        self.last_progress = time.monotonic()  # see beat(): a finished step or evaluation batch
        self.busy: Optional[str] = None  # see working(): the long call in progress (a save), for the watchdog
        self._at_exit: list[Callable[[], None]] = []
        self._images: dict[str, tuple[np.ndarray, int]] = {}  # name -> (newest image, iteration)

    def beat(self) -> None:
        """Mark progress now (a step or an evaluation batch finished); the hang watchdog reads it."""
        self.last_progress = time.monotonic()

    def at_exit(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the run's ``with`` block ends, after every hook's ``after_train``."""
        self._at_exit.append(callback)

    @contextlib.contextmanager
    def working(self, what: str) -> Iterator[None]:
        """Inside: ``busy`` is ``what`` (the watchdog allows one long call more time); progress on both ends."""
        previous, self.busy = self.busy, what
        self.beat()
        try:
            yield
        finally:
            self.busy = previous
            self.beat()

    def put_scalar(
        self,
        name: str,
        value: Number,
        smoothing_hint: bool = True,
        check_finite: bool = False,
        group: str = "train",
        same_on_every_rank: bool = False,
    ) -> None:
        """Record ``value`` for ``name`` at the current iteration; tensors are converted later, in bulk.
        ``group`` ("train", "val") is the TensorBoard section the scalar goes to (``val/mIoU``). In a process
        group every value, float or tensor, waits for the next :meth:`flush` and becomes the mean over the
        ranks (checked there with ``check_finite``), unless ``same_on_every_rank`` (an evaluation result):
        then it is recorded as put."""
        self._smoothing.setdefault(name, smoothing_hint)
        self.groups.setdefault(name, group)
        if isinstance(value, torch.Tensor):
            value = value.detach()
            self._pending.append((name, value if value.dim() == 0 else value.reshape(()), self.iter, check_finite))
        elif self.gather is not None and not same_on_every_rank:
            # a step's time or a float loss is this rank's: averaged, and checked, where every rank takes part
            self._pending.append((name, float(value), self.iter, check_finite))
        else:
            # a Python int stays an int (a count: num_samples): writers show it as one, without decimals
            number = value if isinstance(value, int) and not isinstance(value, bool) else float(value)
            self._record([(name, number, self.iter, check_finite)])

    def put_scalars(
        self, *, smoothing_hint: bool = True, check_finite: bool = False, group: str = "train", **values: Number
    ) -> None:
        for name, value in values.items():
            self.put_scalar(name, value, smoothing_hint=smoothing_hint, check_finite=check_finite, group=group)

    def put_image(self, name: str, image: np.ndarray, group: str = "val") -> None:
        """Record a picture for ``name`` at the current iteration: an (H, W, 3) RGB or (H, W) grey uint8 array.
        Only the newest image of each name is kept, until a newer one replaces it (writers take the ones new
        since their last write). Images are no part of :meth:`flush`'s collective and are never averaged over
        ranks: put them on the main process only. ``group`` is the TensorBoard section (``val/<name>``)."""
        self.groups.setdefault(name, group)
        self._images[name] = (as_image(image), self.iter)

    def new_images(self, written: dict[str, int]) -> dict[str, tuple[np.ndarray, int]]:
        """Each image newer than ``written[name]``, as ``(image, iteration)``; updates ``written``."""
        fresh = {name: (im, it) for name, (im, it) in self._images.items() if it > written.get(name, -1)}
        written.update({name: it for name, (_, it) in fresh.items()})
        return fresh

    def flush(self) -> None:
        """Turn pending tensors into floats: one stack and one device-to-host copy per device and dtype.

        With ``gather`` this is a collective (every rank must flush at the same points, even with nothing
        pending): each value becomes the mean over the ranks that put the same name at the same iteration.
        """
        gather = self.gather
        if not self._pending and gather is None:
            return
        pending, self._pending = self._pending, []
        groups: dict[tuple[torch.device, torch.dtype], list[int]] = defaultdict(list)
        values: list[float] = [0.0] * len(pending)
        for i, (_, tensor, _, _) in enumerate(pending):
            if isinstance(tensor, torch.Tensor):
                groups[(tensor.device, tensor.dtype)].append(i)
            else:
                values[i] = tensor
        for indices in groups.values():
            stacked = torch.stack([cast(torch.Tensor, pending[i][1]) for i in indices]).cpu().tolist()
            for i, v in zip(indices, stacked):
                values[i] = float(v)
        entries = [(name, value, iteration, check) for (name, _, iteration, check), value in zip(pending, values)]
        if gather is not None:
            entries = self._mean_over_ranks(entries, gather)
        self._record(entries)

    def _mean_over_ranks(
        self, entries: list[tuple[str, float, int, bool]], gather: Callable[[Any], list[Any]]
    ) -> list[tuple[str, float, int, bool]]:
        """Each value averaged over the ranks. Fast path: one all_reduce of the values as a flat tensor, when
        every rank put the same names at the same iterations as last time (its last element counts the ranks
        whose layout changed). Otherwise, and the first time, every rank's entries are gathered (pickled) and
        the layout agreed anew."""
        base = min((it for _, _, it, _ in entries), default=self.iter)
        layout = tuple((name, it - base) for name, _, it, _ in entries)
        if self.all_reduce_sum is not None and self._layout is not None:
            size = len(self._layout)
            buffer = torch.zeros(size + 1, dtype=torch.float64)
            if layout == self._layout:
                buffer[:size] = torch.tensor([value for _, value, _, _ in entries], dtype=torch.float64)
            else:
                buffer[size] = 1.0
            self.all_reduce_sum(buffer)
            if buffer[size].item() == 0.0:
                means = (buffer[:size] / self._world).tolist()
                return [(name, mean, it, check) for (name, _, it, check), mean in zip(entries, means)]
        every_rank = gather((layout, [(name, value, it) for name, value, it, _ in entries]))
        layouts = {rank_layout for rank_layout, _ in every_rank}
        self._layout = layout if len(layouts) == 1 else None
        self._world = len(every_rank)
        return _mean_over_ranks(entries, [rank_entries for _, rank_entries in every_rank])

    def _record(self, entries: list[tuple[str, float, int, bool]]) -> None:
        bad = [it for _, value, it, check in entries if check and not math.isfinite(value)]
        if bad and (self.first_nonfinite is None or min(bad) < self.first_nonfinite[0]):
            first = min(bad)
            self.first_nonfinite = (first, {n: v for n, v, it, check in entries if check and it == first})
        for name, value, iteration, _ in entries:
            self._history[name].append((value, iteration))
            self._latest[name] = (value, iteration)

    def _flush_for_read(self) -> None:
        if self.gather is None:  # in a process group only the collective flush may record values
            self.flush()

    def history(self, name: str) -> list[tuple[float, int]]:
        self._flush_for_read()
        return list(self._history[name])

    def latest(self) -> dict[str, tuple[float, int]]:
        """``{name: (value, iteration)}`` of the newest value of every scalar."""
        self._flush_for_read()
        return dict(self._latest)

    def new_values(self, written: dict[str, int]) -> dict[str, tuple[float, int]]:
        """The latest value of each scalar newer than ``written[name]``; updates ``written`` (a writer's own)."""
        fresh = {name: (v, it) for name, (v, it) in self.latest().items() if it > written.get(name, -1)}
        written.update({name: it for name, (_, it) in fresh.items()})
        return fresh

    def median(self, name: str, window: int) -> float:
        self._flush_for_read()
        values = [v for v, _ in newest(self._history[name], window)]
        return statistics.median(values) if values else float("nan")

    def latest_with_smoothing(self, window: int) -> dict[str, tuple[float, int]]:
        """Like :meth:`latest`, with values that asked for smoothing replaced by their median over ``window``."""
        self._flush_for_read()
        out = {}
        for name, (value, iteration) in self._latest.items():
            if self._smoothing.get(name, True):
                recent = [v for v, it in newest(self._history[name], window) if it <= iteration]
                value = statistics.median(recent) if recent else value
            out[name] = (value, iteration)
        return out

    def __enter__(self) -> EventStorage:
        _CURRENT_STORAGE.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        assert _CURRENT_STORAGE[-1] is self
        _CURRENT_STORAGE.pop()
        callbacks, self._at_exit = self._at_exit, []
        for callback in callbacks:
            callback()


def _mean_over_ranks(
    entries: list[tuple[str, float, int, bool]], every_rank: list[list[tuple[str, float, int]]]
) -> list[tuple[str, float, int, bool]]:
    """This rank's entries, each value replaced by its mean over the ranks with the same (name, iteration)."""
    values: dict[tuple[str, int], list[float]] = defaultdict(list)
    for rank_entries in every_rank:
        for name, value, iteration in rank_entries:
            values[(name, iteration)].append(value)
    return [(name, statistics.fmean(values[(name, it)]), it, check) for name, _, it, check in entries]


def newest(history: deque, n: int) -> list:
    """The newest ``n`` entries of a deque without copying all of it (indexing near its end is O(1))."""
    n = min(n, len(history))
    return [history[i] for i in range(-n, 0)]
