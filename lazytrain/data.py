"""Data loading: an infinite, seeded, rank-sharded train stream that resumes exactly; a test loader that sees
each sample once across ranks; `to_device` for nested batches.

Batches loaded by worker processes are drawn with the Python, NumPy and torch RNGs seeded from (seed, their
position in the stream), so random augmentations repeat exactly after a resume.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import random
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from . import comm
from .errors import LazytrainError, from_worker
from .loader_workers import IgnoreStopSignals, shut_down_workers

__all__ = [
    "InferenceSampler",
    "StreamOrder",
    "StreamPositionSampler",
    "TrainLoader",
    "auto_pin_memory",
    "build_test_loader",
    "build_train_loader",
    "describe_batch",
    "to_device",
]

logger = logging.getLogger(__name__)


class StreamOrder:
    """Which dataset index sits at each position of the infinite training stream: epoch ``e`` covers positions
    ``e*size .. (e+1)*size-1`` in a permutation seeded by (seed, e). The current epoch's order is cached."""

    def __init__(self, size: int, seed: int = 0, shuffle: bool = True) -> None:
        if size <= 0:
            raise ValueError(f"the training stream needs a non-empty dataset, got size {size}.")
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self._epoch, self._order = -1, list(range(size))

    def index(self, position: int) -> int:
        epoch, offset = divmod(position, self.size)
        return self._epoch_order(epoch)[offset]

    def indices(self, positions: list[int]) -> list[int]:
        """``[index(p) for p in positions]``, by one slice when the positions are evenly spaced in one epoch
        (a batch almost always is)."""
        first, last = positions[0], positions[-1]
        step = positions[1] - first if len(positions) > 1 else 1
        epoch = first // self.size
        if step > 0 and last // self.size == epoch and positions == list(range(first, last + 1, step)):
            offset = first - epoch * self.size
            return self._epoch_order(epoch)[offset : offset + step * len(positions) : step]
        return [self.index(p) for p in positions]

    def _epoch_order(self, epoch: int) -> list[int]:
        if epoch != self._epoch and self.shuffle:
            generator = torch.Generator().manual_seed(_mix(self.seed, epoch))
            self._order = torch.randperm(self.size, generator=generator).tolist()
        self._epoch = epoch
        return self._order


class StreamPositionSampler(Sampler):
    """The stream positions of rank ``r`` of ``W``: ``r, r+W, r+2W, ...``, from its ``start``-th one, without
    end. Positions (plain ints, yielded at C speed) become dataset indices through :class:`StreamOrder`, in
    whichever process loads the batch."""

    def __init__(self, size: int, *, rank: int = 0, world_size: int = 1, start: int = 0) -> None:
        if size <= 0:
            raise ValueError(f"StreamPositionSampler needs a non-empty dataset, got size {size}.")
        self.size, self.rank, self.world_size, self.start = size, rank, world_size, start

    def __iter__(self) -> Iterator[int]:
        return itertools.count(self.start * self.world_size + self.rank, self.world_size)


class InferenceSampler(Sampler):
    """Indices ``0..size-1`` split into contiguous parts, one per rank: every sample exactly once, no padding."""

    def __init__(self, size: int, rank: Optional[int] = None, world_size: Optional[int] = None) -> None:
        rank = comm.get_rank() if rank is None else rank
        world_size = comm.get_world_size() if world_size is None else world_size
        per_rank, extra = divmod(size, world_size)
        begin = rank * per_rank + min(rank, extra)
        self.indices = range(begin, begin + per_rank + (1 if rank < extra else 0))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class _SeededSamples(Dataset):
    """``dataset[[position, ...]]``: one batch of the training stream.

    In worker processes, each batch is drawn with the Python, NumPy and torch RNGs seeded from (seed, the
    position of its first sample): a worker's RNG stream would otherwise restart from its beginning after a
    resume. The seeding costs the worker a few microseconds, off the training process's critical path. In
    the main process (``num_workers=0``) the global RNGs simply run on, like in a hand-written loop; their
    states are in every checkpoint, so a resume repeats them exactly. ``seed_batches=True`` seeds there too
    (then the samples are the same whatever the worker count, and the torch RNG of training is restored
    after each batch), at a cost that shows on steps under a millisecond.
    """

    def __init__(self, dataset: Any, seed: int, shuffle: bool, seed_batches: Optional[bool] = None) -> None:
        self.dataset, self.seed, self.seed_batches = dataset, seed, seed_batches
        self.order = StreamOrder(len(dataset), seed, shuffle)

    def __getitem__(self, position: int) -> Any:
        return self.__getitems__([position])[0]

    def __getitems__(self, positions: list[int]) -> list[Any]:
        dataset = self.dataset
        in_main_process = torch.utils.data.get_worker_info() is None
        if self.seed_batches is False or (self.seed_batches is None and in_main_process):
            return [dataset[i] for i in self.order.indices(positions)]
        seed = _mix(self.seed, positions[0], 0x5EED)
        torch_state = torch.default_generator.get_state() if in_main_process else None
        random.seed(seed)
        np.random.seed(seed)
        torch.default_generator.manual_seed(seed)
        try:
            return [dataset[i] for i in self.order.indices(positions)]
        finally:
            if torch_state is not None:
                torch.default_generator.set_state(torch_state)

    def __len__(self) -> int:
        return len(self.dataset)


class TrainLoader:
    """Training batches without end: an infinite, seeded, shuffled stream; ``batch_size`` is per process and
    rank ``r`` of ``W`` takes stream positions ``r, r+W, ...`` (every batch is full: the stream never ends).

    Its ``state_dict`` is the stream position, saved in checkpoints; after ``load_state_dict`` the next
    ``iter()`` continues where the checkpointed run stopped. ``pin_memory=None`` pins when CUDA is available;
    a run's loaders get an explicit value from ``engine.build.build_loader`` (whether the run's device is CUDA).
    ``seed_batches``: None seeds the RNGs per batch in worker processes only (what exact resume needs); True
    also in the main process, so a run draws the same samples whatever ``num_workers`` is; False never
    (augmentations in workers then do not resume exactly).
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        *,
        num_workers: int = 0,
        collate_fn: Optional[Callable[[list[Any]], Any]] = None,
        pin_memory: Optional[bool] = None,
        shuffle: bool = True,
        seed: int = 0,
        seed_batches: Optional[bool] = None,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.collate_fn = collate_fn
        self.pin_memory = auto_pin_memory(pin_memory)
        self.shuffle = shuffle
        self.seed = seed
        self.seed_batches = seed_batches
        self.rank, self.world_size = comm.get_rank(), comm.get_world_size()
        self.consumed = 0  # samples this rank has handed out

    def __iter__(self) -> Iterator[Any]:
        sampler = StreamPositionSampler(
            len(self.dataset), rank=self.rank, world_size=self.world_size, start=self.consumed
        )
        loader = DataLoader(
            _SeededSamples(self.dataset, self.seed, self.shuffle, self.seed_batches),
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=self.collate_fn,
            pin_memory=self.pin_memory,
            # a generator of its own, so making workers does not draw from the global torch RNG
            generator=torch.Generator().manual_seed(self.seed),
            # a stop signal sent to the process group is the trainer's to handle (see loader_workers.py)
            worker_init_fn=IgnoreStopSignals(),
        )
        batches = iter(loader)
        try:
            for batch in _worker_errors_unwrapped(batches):
                self.consumed += self.batch_size
                yield batch
        finally:
            shut_down_workers(batches)

    def state_dict(self) -> dict[str, Any]:
        return {"consumed": self.consumed, "world_size": self.world_size, "seed": self.seed}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state["world_size"] != self.world_size:
            logger.warning(
                "the checkpoint was written with %d processes and this run has %d: the data stream resumes at "
                "the same total sample count, but not with the same samples per rank.",
                state["world_size"],
                self.world_size,
            )
        self.consumed = state["consumed"] * state["world_size"] // self.world_size


build_train_loader = TrainLoader  # the name configs use, as detectron2's; the one class behind it


def _worker_errors_unwrapped(batches: Iterator[Any]) -> Iterator[Any]:
    """Re-raise a lazytrain error from a worker process as the one paragraph it was, not torch's wrapping."""
    try:
        yield from batches
    except LazytrainError as e:
        raise from_worker(e) from None


class _TestLoader(DataLoader):
    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        return _worker_errors_unwrapped(super().__iter__())


def auto_pin_memory(pin_memory: Optional[bool]) -> bool:
    """A loader's ``pin_memory=None`` ("auto"): pin when CUDA is available. ``engine.build.build_loader``
    passes an explicit value instead (whether the run's device is CUDA: a CPU run on a GPU machine pins
    nothing, as pinning costs time and a CUDA context per process)."""
    return torch.cuda.is_available() if pin_memory is None else pin_memory


def build_test_loader(
    dataset: Any,
    batch_size: int = 1,
    *,
    num_workers: int = 0,
    collate_fn: Optional[Callable[[list[Any]], Any]] = None,
    pin_memory: Optional[bool] = None,
) -> DataLoader:
    """A loader over this rank's part of ``dataset``, in order: across ranks each sample is seen exactly once.
    ``pin_memory=None``: as for :class:`TrainLoader`."""
    return _TestLoader(
        dataset,
        batch_size=batch_size,
        sampler=InferenceSampler(len(dataset)),
        num_workers=num_workers,
        collate_fn=collate_fn,
        pin_memory=auto_pin_memory(pin_memory),
        drop_last=False,
        worker_init_fn=IgnoreStopSignals(),
    )


def to_device(batch: Any, device: torch.device | str, non_blocking: Optional[bool] = None) -> Any:
    """Move every tensor inside dicts, lists, tuples, named tuples and dataclasses to ``device``.

    Copies are non-blocking when the tensor is pinned (set ``non_blocking`` to force either way).
    """
    if isinstance(batch, torch.Tensor):
        nb = batch.is_pinned() if non_blocking is None else non_blocking
        return batch.to(device, non_blocking=nb)
    if isinstance(batch, Mapping):
        moved = {k: to_device(v, device, non_blocking) for k, v in batch.items()}
        return moved if type(batch) is dict else _rebuild_mapping(batch, moved)
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(to_device(v, device, non_blocking) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device, non_blocking) for v in batch)
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        changes = {
            f.name: to_device(getattr(batch, f.name), device, non_blocking) for f in dataclasses.fields(batch) if f.init
        }
        return dataclasses.replace(batch, **changes)
    return batch


def describe_batch(batch: Any, depth: int = 0) -> str:
    """The structure of a batch for an error message: ``{image: float32[2, 5, 64, 512], names: list[2]}``."""
    if isinstance(batch, torch.Tensor):
        return f"{str(batch.dtype).replace('torch.', '')}[{', '.join(map(str, batch.shape))}]"
    if depth >= 3:
        return type(batch).__name__
    if isinstance(batch, Mapping):
        return "{" + ", ".join(f"{k}: {describe_batch(v, depth + 1)}" for k, v in batch.items()) + "}"
    if isinstance(batch, (list, tuple)):
        if (batch and all(isinstance(v, torch.Tensor) for v in batch)) or len(batch) <= 4:
            return f"{type(batch).__name__}[" + ", ".join(describe_batch(v, depth + 1) for v in batch) + "]"
        return f"{type(batch).__name__}[{len(batch)} x {type(batch[0]).__name__}]"
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        fields = ", ".join(
            f"{f.name}: {describe_batch(getattr(batch, f.name), depth + 1)}" for f in dataclasses.fields(batch)
        )
        return f"{type(batch).__name__}({fields})"
    return type(batch).__name__


def _rebuild_mapping(original: Mapping, moved: dict) -> Mapping:
    try:
        return type(original)(moved)  # type: ignore[call-arg]
    except TypeError:
        return moved


def _mix(*values: int) -> int:
    """A well-spread 31-bit seed from integers (seed, epoch / position, salt): splitmix64 steps, cheap enough
    to run once per sample."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (value & _MASK64)) * 0xBF58476D1CE4E5B9 & _MASK64
        state = (state ^ (state >> 31)) * 0x94D049BB133111EB & _MASK64
        state ^= state >> 29
    return state & 0x7FFFFFFF


_MASK64 = (1 << 64) - 1
