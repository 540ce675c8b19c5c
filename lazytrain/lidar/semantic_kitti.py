"""The SemanticKITTI on-disk format: scan and label files, the raw → training id map, the official split.

Files are memory-mapped, so loading is fast and DataLoader workers share the pages.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import numpy as np

from ..errors import DataError

__all__ = [
    "CLASS_NAMES",
    "LEARNING_MAP",
    "OFFICIAL_SPLIT",
    "ScanFile",
    "list_scans",
    "map_labels",
    "read_labels",
    "read_points",
]

# raw semantic id -> training id (semantic-kitti-api's learning_map); everything else is unknown -> 0
LEARNING_MAP: dict[int, int] = {
    0: 0, 1: 0, 10: 1, 11: 2, 13: 5, 15: 3, 16: 5, 18: 4, 20: 5, 30: 6, 31: 7, 32: 8, 40: 9, 44: 10, 48: 11,
    49: 12, 50: 13, 51: 14, 52: 0, 60: 9, 70: 15, 71: 16, 72: 17, 80: 18, 81: 19, 99: 0, 252: 1, 253: 7,
    254: 6, 255: 8, 256: 5, 257: 5, 258: 4, 259: 5,
}  # fmt: skip

CLASS_NAMES: tuple[str, ...] = (
    "unlabeled", "car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist",
    "motorcyclist", "road", "parking", "sidewalk", "other-ground", "building", "fence", "vegetation",
    "trunk", "terrain", "pole", "traffic-sign",
)  # fmt: skip

OFFICIAL_SPLIT: dict[str, tuple[str, ...]] = {
    "train": ("00", "01", "02", "03", "04", "05", "06", "07", "09", "10"),
    "valid": ("08",),
    "test": tuple(f"{i:02d}" for i in range(11, 22)),
}

_LUT_SIZE = 260
_LUT = np.zeros(_LUT_SIZE, dtype=np.int64)
_KNOWN = np.zeros(_LUT_SIZE, dtype=bool)
for _raw, _train in LEARNING_MAP.items():
    _LUT[_raw] = _train
    _KNOWN[_raw] = True


class ScanFile:
    """One scan: its ``.bin`` and (for labelled sequences) ``.label`` path."""

    __slots__ = ("label_path", "points_path", "sequence")

    def __init__(self, sequence: str, points_path: str, label_path: str | None) -> None:
        self.sequence, self.points_path, self.label_path = sequence, points_path, label_path

    def __repr__(self) -> str:
        return f"ScanFile({self.points_path!r})"


def list_scans(root: str, sequences: Sequence[str], *, labels: bool = True) -> list[ScanFile]:
    """Every scan of ``sequences`` under ``<root>/dataset/sequences``, sizes checked now (before training):
    a ``.bin`` whose size is not a multiple of 16 bytes, a missing ``.label`` or one whose count differs from
    its scan is a DataError naming the file(s)."""
    scans: list[ScanFile] = []
    for seq in sequences:
        folder = os.path.join(root, "dataset", "sequences", seq)
        velodyne = os.path.join(folder, "velodyne")
        if not os.path.isdir(velodyne):
            raise DataError(
                f"sequence folder '{velodyne}' does not exist.",
                hint="Point dataset.root at the folder that holds dataset/sequences/, or choose other sequences.",
            )
        for name in sorted(os.listdir(velodyne)):
            if not name.endswith(".bin"):
                continue
            points_path = os.path.join(velodyne, name)
            label_path = os.path.join(folder, "labels", name[: -len(".bin")] + ".label") if labels else None
            _check_sizes(points_path, label_path)
            scans.append(ScanFile(seq, points_path, label_path))
    return scans


def _check_sizes(points_path: str, label_path: str | None) -> None:
    size = os.path.getsize(points_path)
    if size % 16 != 0 or size == 0:
        raise DataError(
            f"scan file '{points_path}' is corrupt: {size} bytes is not a positive multiple of 16 "
            "(4 float32 values per point).",
            hint="Re-extract it from the data set archive.",
        )
    if label_path is None:
        return
    if not os.path.isfile(label_path):
        raise DataError(f"label file '{label_path}' for scan '{points_path}' does not exist.")
    count = os.path.getsize(label_path)
    if count % 4 != 0 or count // 4 != size // 16:
        raise DataError(
            f"label file '{label_path}' holds {count / 4:g} labels but scan '{points_path}' has {size // 16} "
            "points; the pair is corrupt.",
            hint="Re-extract both files from the data set archives.",
        )


def read_points(path: str) -> np.ndarray:
    """``(N, 4)`` float32 x, y, z, remission, memory-mapped (read-only)."""
    try:
        data = np.memmap(path, dtype="<f4", mode="r")
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read scan file '{path}': {e}") from e
    if data.size % 4 != 0:
        raise DataError(f"scan file '{path}' is corrupt: its size is not a multiple of 16 bytes.")
    return data.reshape(-1, 4)


def read_labels(path: str, num_points: int | None = None) -> np.ndarray:
    """Raw ``uint32`` labels (semantic id in the lower 16 bits, instance id in the upper 16), memory-mapped."""
    try:
        labels = np.memmap(path, dtype="<u4", mode="r")
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read label file '{path}': {e}") from e
    if num_points is not None and labels.size != num_points:
        raise DataError(f"label file '{path}' holds {labels.size} labels for a scan of {num_points} points.")
    return labels


def map_labels(raw: np.ndarray, source: str = "") -> np.ndarray:
    """Training ids (``int64``) from raw labels: instance bits stripped, ``learning_map`` applied.

    Unknown raw ids become 0 (unlabeled) with a warning that counts them: never a crash in the loss.
    """
    semantic = (np.asarray(raw) & 0xFFFF).astype(np.int64)
    inside = semantic < _LUT_SIZE
    clipped = np.where(inside, semantic, 0)
    known = inside & _KNOWN[clipped]
    if not known.all():
        unknown_ids = np.unique(semantic[~known])
        warnings.warn(
            f"{source or 'labels'}: {int((~known).sum())} points have raw ids not in the learning map "
            f"({', '.join(map(str, unknown_ids[:10]))}); they are mapped to 0 (unlabeled).",
            stacklevel=2,
        )
    return np.where(known, _LUT[clipped], 0)
