"""The writers that read a run's metric storage: terminal (with ETA), JSON lines, TensorBoard."""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import threading
import time
from collections import defaultdict
from typing import Any, Optional

import torch

from ..fileio import atomic_write
from ..images import encode_png
from .jsonl import append_whole, encode_rows, open_for_append, repair_torn_last_line
from .storage import EventStorage

__all__ = ["ROW_KINDS", "EventWriter", "JSONWriter", "TensorboardWriter", "TerminalWriter", "scalar_tag"]

ROW_KINDS = ("train", "eval")  # metrics.jsonl's "kind" of a row: training scalars, or evaluation results


def _replaced(line: str, start_iter: int) -> bool:
    """Whether a row of metrics.jsonl belongs to an iteration after ``start_iter`` (completed before a resume)."""
    try:
        row = json.loads(line)
    except ValueError:
        return False  # not ours to judge: keep it
    if not isinstance(row, dict) or "weights" in row or not isinstance(row.get("iteration"), int):
        return False
    return bool(row["iteration"] > start_iter)


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
    """One JSON object per line with ``"iteration"`` (N: after N iterations), its ``"kind"`` and the exact value
    of each scalar new since the last write (no smoothing: the file is a record). Two kinds: a ``"train"`` row
    per logged iteration holds the training scalars (losses, lr, times, what hooks put), an ``"eval"`` row
    holds the evaluation results at that iteration (the scalars put with ``group="val"``), after the train row
    of the same iteration. Appends, so a resumed run continues the same file.

    The rows of a write go to the file in one piece: a full disk leaves the file as it was before them (and
    raises), never half a row; a torn last line left by an earlier run is cut off at :meth:`open`."""

    def __init__(self, path: str) -> None:
        self.path = self._path = path
        self._fd: Optional[int] = None  # opened at the first write: building a writer creates no file
        self._written: dict[str, int] = {}  # name -> newest iteration written

    def open(self, start_iter: int = 0) -> None:
        """A torn last line (a run stopped mid-write) is cut off, so the rows to come start on a line of their
        own. A run resumed after ``start_iter`` iterations replaces the iterations after it: the rows a crashed
        or preempted run wrote for them go (rewritten atomically), so the file holds one clean history. Rows of
        ``lazytrain eval`` (they name their ``weights``) stay."""
        repair_torn_last_line(self._path)
        self._written = {}  # a new train() writes its iterations, even ones an earlier call wrote
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
        rows: dict[tuple[int, int], dict[str, float]] = defaultdict(dict)  # (iteration, 0 train / 1 eval)
        for name, (value, iteration) in storage.new_values(self._written).items():
            rows[(iteration, int(storage.groups.get(name) == "val"))][name] = value
        if not rows:
            return
        if self._fd is None:
            self._fd = open_for_append(self._path)
        data = encode_rows(
            {"iteration": iteration + 1, "kind": ROW_KINDS[is_eval], **rows[(iteration, is_eval)]}
            for iteration, is_eval in sorted(rows)
        )
        append_whole(self._fd, data, self._path)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None  # a second train() reopens it


def scalar_tag(group: str, name: str) -> str:
    """The TensorBoard tag of scalar ``name`` of ``group``: ``val/mIoU``; a nested name (``IoU/car``) goes to a
    group of its own, ``val_IoU/car``. TensorBoard sorts cards by tag, so the headline metrics (``val/mIoU``,
    ``val/accuracy``, the losses) are the first cards, not after the 19 per-class IoUs."""
    family, slash, rest = name.partition("/")
    return f"{group}_{family}/{rest}" if slash else f"{group}/{name}"


class TensorboardWriter(EventWriter):
    """Scalars and images to TensorBoard event files, written by tensorboard's own EventFileWriter (a background
    thread), one event per iteration holding all of that iteration's scalars, tagged as :func:`scalar_tag` says
    (``train/<name>``, ``val/<name>``, ``val_IoU/<class>``) so TensorBoard groups them, at step N for iteration
    N; each image (:meth:`EventStorage.put_image`) as a PNG. Exact values: TensorBoard smooths in its UI.
    ``config_yaml`` becomes a text summary. The Custom Scalars tab gets one multi-line chart per nested group
    (all per-class IoUs in one chart) and one of the losses. ``lr`` is also ``train/lr_log10``: TensorBoard's
    axis shows 2.3e-05 as 0, its log10 (-4.6) shows a warm-up. At the end, ``hparams`` (a few key settings) and
    the final values of the ``val/`` scalars go to TensorBoard's HParams tab, so runs can be compared."""

    def __init__(self, log_dir: str, config_yaml: str = "", hparams: Optional[dict[str, Any]] = None) -> None:
        self.log_dir = log_dir
        self.path = os.path.join(log_dir, "events.out.tfevents.*")  # the file's name once open() made it
        self.config_yaml = config_yaml
        self.hparams = dict(hparams or {})
        self._writer: Optional[Any] = None  # made by open(): building a writer creates no file
        self._written: dict[str, int] = {}
        self._written_images: dict[str, int] = {}
        self._final: dict[str, float] = {}  # the newest value of each val/ tag
        self._charted: set[str] = set()  # the groups the Custom Scalars layout written so far charts
        self._step = 0

    def open(self, start_iter: int = 0) -> None:
        """Creates the event file. A run resumed after ``start_iter`` iterations starts it with a SessionLog
        START at step ``start_iter + 1``, its first: TensorBoard then drops what earlier files hold from that
        step on, so the curves show one history, not the lost iterations twice. The config goes at that step."""
        # imported here, not at the top: tensorboard takes ~0.3 s to import, and the CLI must start fast
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        if self._writer is None:
            self._written, self._written_images = {}, {}  # a new event file: a second train() starts one
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
            tag = scalar_tag(storage.groups.get(name, "train"), name)
            by_iteration[iteration].append(Summary.Value(tag=tag, simple_value=value))
            if name == "lr" and value > 0:
                by_iteration[iteration].append(Summary.Value(tag="train/lr_log10", simple_value=math.log10(value)))
            if tag.startswith("val/"):
                self._final[tag] = value
            self._step = max(self._step, iteration + 1)
        self._write_layout([value.tag for values in by_iteration.values() for value in values])
        for name, (image, iteration) in storage.new_images(self._written_images).items():
            height, width, channels = image.shape
            picture = Summary.Image(
                height=height, width=width, colorspace=channels, encoded_image_string=encode_png(image)
            )
            # a group of their own: in Time Series the val group then holds only the headline scalars
            tag = f"{storage.groups.get(name, 'val')}_pictures/{name}"
            by_iteration[iteration].append(Summary.Value(tag=tag, image=picture))
        for iteration in sorted(by_iteration):
            self._add(Summary(value=by_iteration[iteration]), iteration + 1)

    def _write_layout(self, tags: list[str]) -> None:
        """The Custom Scalars layout, again whenever a new group appears (the tab shows the newest layout)."""
        groups = {tag.split("/", 1)[0] for tag in tags if "_" in tag.split("/", 1)[0]}
        losses = any("loss" in tag for tag in tags)
        if groups <= self._charted and (not losses or "loss" in self._charted):
            return
        from torch.utils.tensorboard.summary import custom_scalars

        self._charted |= groups | ({"loss"} if losses else set())
        charts: dict[str, dict[str, list[Any]]] = {}
        if "loss" in self._charted:
            charts["losses"] = {"train and val losses": ["Multiline", [r"(train|val)/.*loss.*"]]}
        for group in sorted(self._charted - {"loss"}):
            parent, family = group.split("_", 1)
            charts.setdefault(parent, {})[f"{family} per class ({group}/*)"] = ["Multiline", [rf"{group}/.*"]]
        self._add(custom_scalars(charts), self._step)

    def close(self) -> None:
        if self._writer is None:
            return
        if self.hparams:
            from torch.utils.tensorboard.summary import hparams

            values = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in self.hparams.items()}
            for summary in hparams(values, dict(self._final)):
                self._add(summary, self._step)
        self._writer.close()
        self._writer = None  # a second train() opens a new event file


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
    widest it has been.

    The line of a run's first step (after :meth:`open`) says that its time includes the start-up (data loader
    workers, first allocations) and shows no ETA, which that time would overstate."""

    def __init__(self, max_iter: int, window: int = 20, logger: Optional[logging.Logger] = None) -> None:
        self._max_iter = max_iter
        self._window = window
        self._logger = logger or logging.getLogger(__name__)
        self._last: Optional[tuple[int, float]] = None
        self._widths: dict[str, int] = {}
        self._first_iter: Optional[int] = None  # the index of this run's first step, once opened

    def open(self, start_iter: int = 0) -> None:
        self._first_iter = start_iter
        self._last = None  # a second train() may start before the iteration the last one printed

    def write(self, storage: EventStorage) -> None:
        iteration = storage.iter
        if self._last is not None and iteration <= self._last[0]:
            return  # already printed (the final write after training repeats the last period's)
        latest = storage.latest_with_smoothing(self._window)
        step_time = storage.median("time", self._window) if "time" in latest else None
        data_time = storage.median("data_time", self._window) if "data_time" in latest else None
        eta = self._eta(iteration, step_time)
        first = iteration == self._first_iter
        if first:
            eta = ""
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
        if first:
            parts.append("(first step includes start-up)")
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
