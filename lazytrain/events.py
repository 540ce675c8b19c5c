"""Metric storage for one run and the writers that read it: terminal (with ETA), JSON lines, TensorBoard.

A value put at ``storage.iter`` (an index) is written as iteration ``storage.iter + 1``: see
:mod:`lazytrain.iterations`.

Scalars may be put as device tensors: they are turned into floats together, once per write, so logging
costs one host-device sync per log period instead of one per value per step.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import statistics
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from typing import Any, Optional, Union

import numpy as np
import torch

from .fileio import atomic_write
from .images import as_image, encode_png

__all__ = [
    "EventStorage",
    "EventWriter",
    "JSONWriter",
    "TensorboardWriter",
    "TerminalWriter",
    "beat",
    "get_event_storage",
]

_CURRENT_STORAGE: list[EventStorage] = []  # the one per-run storage, a context (innermost last)
Number = Union[float, int, torch.Tensor]


def beat() -> None:
    """Mark progress in the storage of the run in progress, if there is one (evaluation calls it per batch)."""
    if _CURRENT_STORAGE:
        _CURRENT_STORAGE[-1].beat()


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
        self._pending: list[tuple[str, torch.Tensor, int, bool]] = []
        self.first_nonfinite: Optional[tuple[int, dict[str, float]]] = None
        self.last_progress = time.monotonic()  # see beat(): a finished step or evaluation batch
        self._images: dict[str, tuple[np.ndarray, int]] = {}  # name -> (newest image, iteration)

    def beat(self) -> None:
        """Mark progress now (a step or an evaluation batch finished); the hang watchdog reads it."""
        self.last_progress = time.monotonic()

    def put_scalar(
        self, name: str, value: Number, smoothing_hint: bool = True, check_finite: bool = False, group: str = "train"
    ) -> None:
        """Record ``value`` for ``name`` at the current iteration; tensors are converted later, in bulk.
        ``group`` ("train", "val") is the TensorBoard section the scalar goes to (``val/mIoU``)."""
        self._smoothing.setdefault(name, smoothing_hint)
        self.groups.setdefault(name, group)
        if isinstance(value, torch.Tensor):
            value = value.detach()
            self._pending.append((name, value if value.dim() == 0 else value.reshape(()), self.iter, check_finite))
        else:
            self._record([(name, float(value), self.iter, check_finite)])

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
        for i, (_, tensor, _, _) in enumerate(pending):
            groups[(tensor.device, tensor.dtype)].append(i)
        values: list[float] = [0.0] * len(pending)
        for indices in groups.values():
            stacked = torch.stack([pending[i][1] for i in indices]).cpu().tolist()
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
        values = [v for v, _ in _newest(self._history[name], window)]
        return statistics.median(values) if values else float("nan")

    def latest_with_smoothing(self, window: int) -> dict[str, tuple[float, int]]:
        """Like :meth:`latest`, with values that asked for smoothing replaced by their median over ``window``."""
        self._flush_for_read()
        out = {}
        for name, (value, iteration) in self._latest.items():
            if self._smoothing.get(name, True):
                recent = [v for v, it in _newest(self._history[name], window) if it <= iteration]
                value = statistics.median(recent) if recent else value
            out[name] = (value, iteration)
        return out

    def __enter__(self) -> EventStorage:
        _CURRENT_STORAGE.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        assert _CURRENT_STORAGE[-1] is self
        _CURRENT_STORAGE.pop()


def _mean_over_ranks(
    entries: list[tuple[str, float, int, bool]], every_rank: list[list[tuple[str, float, int]]]
) -> list[tuple[str, float, int, bool]]:
    """This rank's entries, each value replaced by its mean over the ranks with the same (name, iteration)."""
    values: dict[tuple[str, int], list[float]] = defaultdict(list)
    for rank_entries in every_rank:
        for name, value, iteration in rank_entries:
            values[(name, iteration)].append(value)
    return [(name, statistics.fmean(values[(name, it)]), it, check) for name, _, it, check in entries]


def _replaced(line: str, start_iter: int) -> bool:
    """Whether a row of metrics.jsonl belongs to an iteration after ``start_iter`` (completed before a resume)."""
    try:
        row = json.loads(line)
    except ValueError:
        return False  # not ours to judge: keep it
    if not isinstance(row, dict) or "weights" in row or not isinstance(row.get("iteration"), int):
        return False
    return bool(row["iteration"] > start_iter)


def _newest(history: deque, n: int) -> list:
    """The newest ``n`` entries of a deque without copying all of it (indexing near its end is O(1))."""
    n = min(n, len(history))
    return [history[i] for i in range(-n, 0)]


class EventWriter:
    """Writes what the storage holds; called by the PeriodicWriter hook. ``path``: the file it writes (for the
    message when a write fails), None when it writes none of its own."""

    path: Optional[str] = None

    def open(self, start_iter: int = 0) -> None:
        """Called before training starts, with ``start_iter`` the iterations completed before (> 0 when
        resumed): slow set-up goes here, so it does not stall a training step."""

    def write(self, storage: EventStorage) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class JSONWriter(EventWriter):
    """One JSON object per line with ``"iteration"`` (N: after N iterations) and the exact value of each scalar
    new since the last write (no smoothing: the file is a record). Appends, so a resumed run continues the same
    file."""

    def __init__(self, path: str) -> None:
        self.path = self._path = path
        self._file: Optional[Any] = None  # opened at the first write: building a writer creates no file
        self._written: dict[str, int] = {}  # name -> newest iteration written

    def open(self, start_iter: int = 0) -> None:
        """A run resumed after ``start_iter`` iterations replaces the iterations after it: the rows a crashed
        or preempted run wrote for them go (rewritten atomically), so the file holds one clean history. Rows of
        ``lazytrain eval`` (they name their ``weights``) stay."""
        if start_iter <= 0 or not os.path.isfile(self._path):
            return
        with open(self._path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        kept = [line for line in lines if not _replaced(line, start_iter)]
        if len(kept) < len(lines):
            atomic_write(self._path, "".join(line + "\n" for line in kept))
            logging.getLogger(__name__).info(
                "%s: removed %d rows of iterations after %d, which this resumed run replaces.",
                self._path,
                len(lines) - len(kept),
                start_iter,
            )

    def write(self, storage: EventStorage) -> None:
        rows: dict[int, dict[str, float]] = defaultdict(dict)
        for name, (value, iteration) in storage.new_values(self._written).items():
            rows[iteration][name] = value
        if rows and self._file is None:
            os.makedirs(os.path.dirname(os.path.abspath(self._path)), exist_ok=True)
            self._file = open(self._path, "a", encoding="utf-8")  # noqa: SIM115 - open for the whole run
        for iteration in sorted(rows):
            line = json.dumps({"iteration": iteration + 1, **rows[iteration]}, sort_keys=False)
            self._file.write(line + "\n")  # type: ignore[union-attr]
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class TensorboardWriter(EventWriter):
    """Scalars and images to TensorBoard event files, written by tensorboard's own EventFileWriter (a background
    thread), one event per iteration holding all of that iteration's scalars, tagged ``train/<name>`` or
    ``val/<name>`` so TensorBoard groups them, at step N for iteration N (after N iterations); each image
    (:meth:`EventStorage.put_image`) as a PNG. Exact
    values: TensorBoard smooths in its UI. ``config_yaml`` becomes a text
    summary; at the end, ``hparams`` (a few key settings) and the final values of the ``val/`` scalars go to
    TensorBoard's HParams tab, so runs can be compared."""

    def __init__(self, log_dir: str, config_yaml: str = "", hparams: Optional[dict[str, Any]] = None) -> None:
        self.log_dir = log_dir
        self.path = os.path.join(log_dir, "events.out.tfevents.*")  # the file's name once open() made it
        self.config_yaml = config_yaml
        self.hparams = dict(hparams or {})
        self._writer: Optional[Any] = None  # made by open(): building a writer creates no file
        self._written: dict[str, int] = {}
        self._written_images: dict[str, int] = {}
        self._final: dict[str, float] = {}  # the newest value of each val/ tag
        self._step = 0

    def open(self, start_iter: int = 0) -> None:
        """Creates the event file. A run resumed after ``start_iter`` iterations starts it with a SessionLog
        START at step ``start_iter + 1``, its first: TensorBoard then drops what earlier files hold from that
        step on, so the curves show one history, not the lost iterations twice. The config goes at that step."""
        # imported here, not at the top: tensorboard takes ~0.3 s to import, and the CLI must start fast
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        if self._writer is None:
            _quiet_writer_thread_errors()
            self._writer = EventFileWriter(self.log_dir, flush_secs=30)
            self.path = getattr(self._writer, "_file_name", self.path)
            self._step = start_iter + 1
            if start_iter > 0:
                start = SessionLog(status=SessionLog.START)
                self._writer.add_event(Event(wall_time=time.time(), step=start_iter + 1, session_log=start))
            if self.config_yaml:
                from torch.utils.tensorboard.summary import text

                # markdown: indented by 4 spaces, the YAML shows as a code block
                body = "\n".join("    " + line for line in self.config_yaml.splitlines())
                self._add(text("config", body), start_iter + 1)

    def _add(self, summary: Any, step: int) -> None:
        from tensorboard.compat.proto.event_pb2 import Event

        assert self._writer is not None
        self._writer.add_event(Event(wall_time=time.time(), step=step, summary=summary))

    def write(self, storage: EventStorage) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary

        self.open()  # a no-op after the first time; a writer used outside PeriodicWriter opens here
        by_iteration: dict[int, list[Summary.Value]] = defaultdict(list)
        for name, (value, iteration) in storage.new_values(self._written).items():
            tag = f"{storage.groups.get(name, 'train')}/{name}"
            by_iteration[iteration].append(Summary.Value(tag=tag, simple_value=value))
            if tag.startswith("val/"):
                self._final[tag] = value
            self._step = max(self._step, iteration + 1)
        for name, (image, iteration) in storage.new_images(self._written_images).items():
            height, width, channels = image.shape
            picture = Summary.Image(
                height=height, width=width, colorspace=channels, encoded_image_string=encode_png(image)
            )
            tag = f"{storage.groups.get(name, 'val')}/{name}"
            by_iteration[iteration].append(Summary.Value(tag=tag, image=picture))
        for iteration in sorted(by_iteration):
            self._add(Summary(value=by_iteration[iteration]), iteration + 1)

    def close(self) -> None:
        if self._writer is None:
            return
        if self.hparams:
            from torch.utils.tensorboard.summary import hparams

            values = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in self.hparams.items()}
            for summary in hparams(values, dict(self._final)):
                self._add(summary, self._step)
        self._writer.close()


def _quiet_writer_thread_errors() -> None:
    """tensorboard's writer thread re-raises a failed write (a full disk), so Python prints its traceback; the
    same exception reaches the training thread at the next write, where PeriodicWriter reports it as one
    paragraph. Keep the thread's copy quiet (an OSError from that thread only)."""
    previous = threading.excepthook
    if getattr(previous, "_lazytrain", False):
        return

    def hook(args: Any) -> None:
        if isinstance(args.exc_value, OSError) and type(args.thread).__name__ == "_AsyncWriterThread":
            return
        previous(args)

    hook._lazytrain = True  # type: ignore[attr-defined]
    threading.excepthook = hook


class TerminalWriter(EventWriter):
    """The log line: iteration/max, ETA, each loss, step and data time, lr, peak memory.

    Numbers keep one format from line to line, so columns line up: losses with 4 decimals, times in
    seconds with 4, the lr in scientific notation with 3 (``lr: 1.000e-03``); each field is padded to the
    widest it has been."""

    def __init__(self, max_iter: int, window: int = 20, logger: Optional[logging.Logger] = None) -> None:
        self._max_iter = max_iter
        self._window = window
        self._logger = logger or logging.getLogger(__name__)
        self._last: Optional[tuple[int, float]] = None
        self._widths: dict[str, int] = {}

    def write(self, storage: EventStorage) -> None:
        iteration = storage.iter
        if self._last is not None and iteration <= self._last[0]:
            return  # already printed (the final write after training repeats the last period's)
        latest = storage.latest_with_smoothing(self._window)
        step_time = storage.median("time", self._window) if "time" in latest else None
        data_time = storage.median("data_time", self._window) if "data_time" in latest else None
        eta = self._eta(iteration, step_time)
        lr = latest.get("lr")
        fields: list[tuple[str, str]] = [
            ("iter", f"{iteration + 1:>{len(str(self._max_iter))}}/{self._max_iter}"),
            ("eta", eta),
            *((name, f"{value:.4f}") for name, (value, it) in latest.items() if "loss" in name and it == iteration),
            ("time", f"{step_time:.4f}" if step_time is not None else ""),
            ("data_time", f"{data_time:.4f}" if data_time is not None else ""),
            ("lr", f"{lr[0]:.3e}" if lr else ""),
        ]
        parts = [f"{name}: {self._padded(name, text)}" for name, text in fields if text]
        memory = _peak_memory()
        if memory:
            parts.append(memory)
        self._logger.info("  ".join(parts))

    def _padded(self, name: str, text: str) -> str:
        width = self._widths[name] = max(self._widths.get(name, 0), len(text))
        return text.rjust(width)

    def _eta(self, iteration: int, step_time: Optional[float]) -> str:
        now = time.perf_counter()
        seconds = None
        if step_time is not None and math.isfinite(step_time):
            seconds = step_time * (self._max_iter - iteration - 1)
        elif self._last is not None and iteration > self._last[0]:
            seconds = (now - self._last[1]) / (iteration - self._last[0]) * (self._max_iter - iteration - 1)
        self._last = (iteration, now)
        return str(datetime.timedelta(seconds=int(seconds))) if seconds is not None else ""


def _peak_memory() -> str:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return f"max_mem: {torch.cuda.max_memory_allocated() / 2**20:.0f}M"
    try:
        import resource

        return f"max_rss: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}M"
    except ImportError:  # Windows
        return ""
