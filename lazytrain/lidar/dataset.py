"""`SemanticKittiDataset`: scans of a split as range images, with augmentation for training and the per-point
data the point-wise evaluator needs; synthetic scans are written only where the caller asked for them. Also
RangeNet++'s loss weights from the label frequencies of a split."""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import hashlib
import inspect
import json
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any, Optional, ParamSpec, TypeVar, Union

import numpy as np
import torch
from torch.utils.data import Dataset
from torch.utils.data._utils.collate import default_collate

from ..errors import ConfigError, DataError
from ..fileio import atomic_write, outside_run
from ..progress import Progress
from ..warn import warn_once
from .projection import KITTI_MEANS, KITTI_STDS, RangeProjection, finite_rows
from .semantic_kitti import OFFICIAL_SPLIT, list_scans, map_labels, read_labels, read_points
from .synthetic import write_synthetic_kitti

__all__ = [
    "ClassWeightsFromLabels",
    "SemanticKittiDataset",
    "collate_scans",
    "compute_class_weights",
    "prepare_root",
]

logger = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")

POINT_KEYS = ("point_labels", "proj_v", "proj_u", "point_range", "sequence", "frame")


def same_folder(a: str, b: str) -> bool:
    """Whether two paths name the same folder (relative paths against the working directory)."""
    return os.path.realpath(a) == os.path.realpath(b)


def evenly_spread(items: Sequence[Any], count: Optional[int]) -> list[Any]:
    """``count`` items spread evenly over the whole of ``items`` (the middle one of each of ``count`` equal
    parts), so every sequence of a split gets its share; all of them when ``count`` is None or not smaller."""
    if count is None or count >= len(items):
        return list(items)
    if count <= 0:
        return []
    n = len(items)
    return [items[((2 * i + 1) * n) // (2 * count)] for i in range(count)]


_MEMORY_TUNED_IN: Optional[int] = None  # the process (pid) whose allocator keep_freed_memory() set


def keep_freed_memory() -> None:
    """Let this process's C allocator reuse freed memory for the next scan instead of handing it back to the
    OS and page-faulting it in again (glibc only; elsewhere nothing). A 64 x 2048 scan allocates some 10 MB of
    arrays; glibc serves blocks that large with fresh ``mmap`` pages, and touching them cost more than half of
    a scan's time (9.9 → 3.1 ms for the projection, docs/benchmarks.md). Once per process (loader workers too)."""
    global _MEMORY_TUNED_IN
    if os.getpid() == _MEMORY_TUNED_IN:
        return
    _MEMORY_TUNED_IN = os.getpid()
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 64 << 20)  # blocks under 64 MB come from the heap ...
    mallopt(m_trim_threshold, 256 << 20)  # ... which keeps up to 256 MB of freed memory for reuse


def _holds_scans(root: str) -> bool:
    base = os.path.join(root, "dataset", "sequences")
    return os.path.isdir(base) and any(
        os.path.isdir(os.path.join(base, s, "velodyne")) for s in os.listdir(base) if not s.startswith(".")
    )


def prepare_root(root: str, sequences: Sequence[str], synthetic_scans: int = 0, seed: int = 0) -> None:
    """Make sure ``root`` holds ``sequences``. With ``synthetic_scans > 0`` (the caller asked for a synthetic set
    there), a root that holds no scans at all, or a synthetic one that lacks some of the sequences, gets that
    many synthetic scans per missing sequence; a real data set is never added to. Without it, a root that holds
    no scans is a DataError naming the folder."""
    base = os.path.join(root, "dataset", "sequences")
    has_any = _holds_scans(root)
    synthetic = os.path.exists(os.path.join(root, "SYNTHETIC.txt"))
    missing = [s for s in sequences if not os.path.isdir(os.path.join(base, s, "velodyne"))]
    if missing and synthetic_scans > 0 and (not has_any or synthetic):
        logger.info(
            "No SemanticKITTI scans for sequences %s under '%s': writing %d synthetic scans per sequence there "
            "(set dataset.root to the real data set to train on it).",
            " ".join(missing),
            os.path.abspath(root),
            synthetic_scans,
            extra=outside_run(root, "synthetic data set, written on first use"),
        )
        # the test sequences of the real data set have no labels: neither do synthetic ones
        labelled = [s for s in missing if s not in OFFICIAL_SPLIT["test"]]
        unlabelled = [s for s in missing if s in OFFICIAL_SPLIT["test"]]
        write_synthetic_kitti(root, labelled, synthetic_scans, seed=seed)
        write_synthetic_kitti(root, unlabelled, synthetic_scans, seed=seed, labels=False)
    elif not has_any:
        where = os.path.abspath(root)
        layout = os.path.join("dataset", "sequences", "<SS>", "velodyne")
        state = "does not exist" if not os.path.exists(where) else f"holds no {layout} folder"
        raise ConfigError(  # a setting to fix (exit 2), not a broken file
            f"no SemanticKITTI scans under '{where}': it {state} (looked for sequences {', '.join(sequences)}).",
            hint="Set dataset.root to the folder that holds dataset/sequences/ of the data set (is there a typo?), "
            "or opt in to a synthetic set written there with dataset.synthetic_scans=N.",
        )


class SemanticKittiDataset(Dataset):
    """Scans of ``split`` ("train", "valid", "test") or of explicit ``sequences`` under ``root``.

    A sample is a dict: ``image`` (5, H, W) float32, ``mask`` (H, W) bool, ``label_image`` (H, W) int64
    (training ids, 0 where empty or unlabeled); with ``return_points`` also the per-point ``point_labels``,
    ``proj_v``, ``proj_u``, ``point_range`` and the ``range_image`` (for point-wise metrics and KNN).
    The test split (sequences 11-21) has no label files: its ``label_image`` and ``point_labels`` are 0
    (``labels``: whether to read label files; default: unless the split is "test" or a sequence is one of
    11-21). With ``return_points`` a sample also names its scan: ``index`` (in this dataset), ``sequence``
    ("08") and ``frame`` ("000123"), so predictions can be written per scan.
    ``augment`` (training): random yaw rotation, x-flip, point dropout, drawn from NumPy's global RNG (which
    lazytrain's train loader seeds per sample).

    Synthetic scans are written into ``root`` only where asked for: ``synthetic_scans > 0`` (an explicit
    opt-in, for any root), or ``root`` being ``synthetic_default_root`` (the flagship's own folder, which gets
    ``synthetic_default_scans`` per sequence). Any other root that holds no scans is a DataError naming it, so
    a mistyped root never trains on synthetic data. ``max_scans``: that many scans, spread evenly over the
    whole split.
    """

    def __init__(
        self,
        root: str,
        split: str = "train",
        sequences: Optional[Sequence[str]] = None,
        *,
        height: int = 64,
        width: int = 2048,
        fov_up: float = 3.0,
        fov_down: float = -25.0,
        means: Sequence[float] = KITTI_MEANS,
        stds: Sequence[float] = KITTI_STDS,
        augment: bool = False,
        dropout: float = 0.1,
        return_points: bool = False,
        synthetic_scans: int = 0,
        synthetic_seed: int = 0,
        synthetic_default_root: Optional[str] = None,
        synthetic_default_scans: int = 0,
        max_scans: Optional[int] = None,
        labels: Optional[bool] = None,
    ) -> None:
        if sequences is None:
            if split not in OFFICIAL_SPLIT:
                raise DataError(f"unknown split {split!r}: use one of {', '.join(OFFICIAL_SPLIT)} or give sequences.")
            sequences = OFFICIAL_SPLIT[split]
        self.sequences = [f"{int(s):02d}" for s in sequences]
        self.root = root
        if synthetic_scans <= 0 and synthetic_default_root is not None and same_folder(root, synthetic_default_root):
            synthetic_scans = synthetic_default_scans
        prepare_root(root, self.sequences, synthetic_scans, synthetic_seed)
        if labels is None:
            labels = split != "test" and not any(s in OFFICIAL_SPLIT["test"] for s in self.sequences)
        self.labelled = labels
        self.scans = evenly_spread(list_scans(root, self.sequences, labels=self.labelled), max_scans)
        if not self.scans:
            raise DataError(f"no scans found for sequences {', '.join(self.sequences)} under '{root}'.")
        self.projection = RangeProjection(height, width, fov_up, fov_down, tuple(means), tuple(stds))
        self.augment, self.dropout, self.return_points = augment, dropout, return_points

    def __len__(self) -> int:
        return len(self.scans)

    def __getitem__(self, index: int) -> dict[str, Any]:
        keep_freed_memory()
        scan = self.scans[index]
        points = read_points(scan.points_path)
        if scan.label_path is not None:
            labels = map_labels(read_labels(scan.label_path, len(points)), scan.label_path)
        else:
            labels = np.zeros(len(points), dtype=np.int64)
        finite = finite_rows(points)
        if not finite.all():
            bad = int((~finite).sum())
            if self.return_points:  # every point keeps its place (predictions): it is only left out of the image
                labels = np.where(finite, labels, 0)
                what = "they are left out of the range image and of the metrics (label 0)"
            else:
                points, labels = points[finite], labels[finite]
                what = "they are dropped"
            warn_once(logger, f"scan '{scan.points_path}' has {bad} points with NaN or infinite values; {what}.")
        if self.augment:
            points, labels = self._augment(points, labels)
        proj = self.projection(points)
        label_image = np.zeros(proj.mask.shape, dtype=np.int64)
        label_image[proj.mask] = labels[proj.pixel_point[proj.mask]]
        sample: dict[str, Any] = {
            "image": torch.from_numpy(proj.image),
            "mask": torch.from_numpy(proj.mask),
            "label_image": torch.from_numpy(label_image),
        }
        if self.return_points:
            sample.update(
                point_labels=torch.from_numpy(labels),
                proj_v=torch.from_numpy(proj.v),
                proj_u=torch.from_numpy(proj.u),
                point_range=torch.from_numpy(proj.point_range),
                range_image=torch.from_numpy(proj.range_image),
                index=index,
                sequence=scan.sequence,
                frame=os.path.splitext(os.path.basename(scan.points_path))[0],
            )
        return sample

    def _augment(self, points: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A new array of points: a random fraction up to ``dropout`` of them dropped, the rest rotated by a
        random yaw and mirrored in x half of the time (float32)."""
        angle = np.random.uniform(0, 2 * np.pi)
        c, s = np.cos(angle), np.sin(angle)
        flip = -1.0 if np.random.random() < 0.5 else 1.0
        if self.dropout > 0:
            threshold = int(np.random.uniform(0, self.dropout) * 65536)
            keep = np.flatnonzero(np.random.randint(0, 65536, len(points), dtype=np.uint16) >= threshold)
            points, labels = points.take(keep, axis=0), labels.take(keep)
        else:
            points = points.copy()
        # x' = flip * (c x - s y), y' = s x + c y; z and remission unchanged (element-wise float32: a 4 x 4
        # matrix product would call BLAS, whose threads fight the loader workers for the cores)
        x, y = points[:, 0].copy(), points[:, 1].copy()
        cf, sf = np.float32(flip * c), np.float32(flip * s)
        c32, s32 = np.float32(c), np.float32(s)
        np.subtract(cf * x, sf * y, out=points[:, 0])
        np.add(s32 * x, c32 * y, out=points[:, 1])
        return points, labels


def collate_scans(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the image-shaped tensors; keep per-point tensors (a different length per scan) as lists."""
    batch = default_collate([{k: v for k, v in s.items() if k not in POINT_KEYS} for s in samples])
    for key in POINT_KEYS:
        if key in samples[0]:
            batch[key] = [s[key] for s in samples]
    return batch


@dataclasses.dataclass(repr=False)
class ClassWeightsFromLabels:
    """RangeNet++'s loss weights ``1 / (f_c + 0.001)`` from the class frequencies of the labels of the whole
    split (every label file; with ``max_scans``, that many spread evenly over the split), 0 for the ignored
    class 0, computed when called: building one reads nothing. A model given one
    (``RangeNet(class_weights=...)``) calls it at its first training step unless a checkpoint already gave it
    the weights, so evaluating or exporting a model never touches the training split.

    Calling it reads labels only: the scans must be there. The result is cached per root, sequences and label
    files (their sizes and times) in ``cache_dir`` (default ``~/.cache/lazytrain``), so the files are read once.
    ``compute_class_weights(...)`` takes the same arguments and computes at once."""

    root: str
    num_classes: int
    split: str = "train"
    sequences: Optional[Sequence[str]] = None
    max_scans: Optional[int] = None
    cache_dir: Optional[str] = None

    def __call__(self) -> list[float]:
        sequences = [f"{int(s):02d}" for s in (self.sequences or OFFICIAL_SPLIT[self.split])]
        chosen = evenly_spread(list_scans(self.root, sequences), self.max_scans)
        label_paths = [str(s.label_path) for s in chosen]  # list_scans(labels=True) gives every scan one
        stats = [(os.path.getsize(p), os.path.getmtime(p)) for p in label_paths]
        key_text = json.dumps([os.path.abspath(self.root), sequences, label_paths, stats, self.num_classes])
        key = hashlib.sha1(key_text.encode()).hexdigest()[:16]
        cache_dir = self.cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "lazytrain")
        cache = os.path.join(cache_dir, f"class_weights_{key}.json")
        if os.path.exists(cache):
            with open(cache, encoding="utf-8") as f:
                return json.load(f)
        logger.info(
            "Class weights from the labels of %d scans of sequences %s under '%s' (read once, then cached in %s).",
            len(label_paths),
            " ".join(sequences),
            os.path.abspath(self.root),
            cache_dir,
            extra=outside_run(cache_dir, "class-weight cache"),
        )
        counts = np.zeros(self.num_classes, dtype=np.int64)
        progress = Progress("Class weights: label files", len(label_paths), unit="file", logger=logger)
        for path in label_paths:
            labels = map_labels(read_labels(path), path)
            counts += np.bincount(labels, minlength=self.num_classes)[: self.num_classes]
            progress.step()
        progress.done()
        weights = class_weights_from_counts(counts)
        try:
            os.makedirs(cache_dir, exist_ok=True)
            atomic_write(cache, json.dumps(weights))  # several ranks may write it at once
        except OSError as e:
            logger.warning("Could not cache the class weights in %s (%s); they are computed again next time.", cache, e)
        return weights

    def __repr__(self) -> str:
        which = f"sequences={list(self.sequences)}" if self.sequences is not None else f"split={self.split!r}"
        return f"ClassWeightsFromLabels(root={self.root!r}, {which})"


def _called(deferred: Callable[P, Callable[[], R]]) -> Callable[P, R]:
    """The function that builds ``deferred(...)`` and calls it at once: one signature for both."""

    @functools.wraps(deferred, assigned=("__module__",))
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        return deferred(*args, **kwargs)()

    returns = inspect.signature(deferred.__call__).return_annotation  # type: ignore[operator]
    call.__signature__ = inspect.signature(deferred).replace(return_annotation=returns)  # type: ignore[attr-defined]
    return call


compute_class_weights = _called(ClassWeightsFromLabels)
compute_class_weights.__name__ = compute_class_weights.__qualname__ = "compute_class_weights"
compute_class_weights.__doc__ = """``ClassWeightsFromLabels(...)()``: RangeNet++'s loss weights from the labels of
the split, computed now (and cached): see :class:`ClassWeightsFromLabels` for the arguments."""


def class_weights_from_counts(counts: Union[np.ndarray, Sequence[int]]) -> list[float]:
    """``1 / (f_c + 0.001)`` with ``f_c`` the fraction of points of class c; 0 for class 0 (ignored)."""
    counts = np.asarray(counts, dtype=np.float64)
    freq = counts / max(counts.sum(), 1.0)
    weights = 1.0 / (freq + 0.001)
    weights[0] = 0.0
    return weights.tolist()
