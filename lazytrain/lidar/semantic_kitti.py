"""The SemanticKITTI on-disk format: scan and label files, the raw → training id map, the official split.

Files are read whole with one ``read`` into memory the process reuses (faster than memory-mapping them: a new
mapping page-faults every page of every scan again).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np

from ..errors import DataError
from ..warn import warn_once

__all__ = [
    "CLASS_NAMES",
    "COLOR_MAP_BGR",
    "LEARNING_MAP",
    "LEARNING_MAP_INV",
    "OFFICIAL_SPLIT",
    "ScanFile",
    "list_scans",
    "map_labels",
    "read_labels",
    "read_points",
]

logger = logging.getLogger(__name__)

# raw semantic id -> training id (semantic-kitti-api's learning_map); everything else is unknown -> 0
LEARNING_MAP: dict[int, int] = {
    0: 0, 1: 0, 10: 1, 11: 2, 13: 5, 15: 3, 16: 5, 18: 4, 20: 5, 30: 6, 31: 7, 32: 8, 40: 9, 44: 10, 48: 11,
    49: 12, 50: 13, 51: 14, 52: 0, 60: 9, 70: 15, 71: 16, 72: 17, 80: 18, 81: 19, 99: 0, 252: 1, 253: 7,
    254: 6, 255: 8, 256: 5, 257: 5, 258: 4, 259: 5,
}  # fmt: skip

# training id -> raw id (learning_map_inv): what a benchmark submission holds
LEARNING_MAP_INV: dict[int, int] = {
    0: 0, 1: 10, 2: 11, 3: 15, 4: 18, 5: 20, 6: 30, 7: 31, 8: 32, 9: 40, 10: 44, 11: 48, 12: 49, 13: 50,
    14: 51, 15: 70, 16: 71, 17: 72, 18: 80, 19: 81,
}  # fmt: skip

# raw id -> colour, in BGR order as semantic-kitti.yaml's color_map stores it (class_colors() gives RGB)
COLOR_MAP_BGR: dict[int, tuple[int, int, int]] = {
    0: (0, 0, 0), 1: (0, 0, 255), 10: (245, 150, 100), 11: (245, 230, 100), 13: (250, 80, 100),
    15: (150, 60, 30), 16: (255, 0, 0), 18: (180, 30, 80), 20: (255, 0, 0), 30: (30, 30, 255),
    31: (200, 40, 255), 32: (90, 30, 150), 40: (255, 0, 255), 44: (255, 150, 255), 48: (75, 0, 75),
    49: (75, 0, 175), 50: (0, 200, 255), 51: (50, 120, 255), 52: (0, 150, 255), 60: (170, 255, 150),
    70: (0, 175, 0), 71: (0, 60, 135), 72: (80, 240, 150), 80: (150, 240, 255), 81: (0, 0, 255),
    99: (255, 255, 50), 252: (245, 150, 100), 253: (200, 40, 255), 254: (30, 30, 255), 255: (90, 30, 150),
    256: (255, 0, 0), 257: (250, 80, 100), 258: (180, 30, 80), 259: (255, 0, 0),
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

# every 16-bit semantic id -> training id, -1 where unknown: one gather maps a scan
_LUT16 = np.full(1 << 16, -1, dtype=np.int64)
for _raw, _train in LEARNING_MAP.items():
    _LUT16[_raw] = _train
_INV_LUT = np.array([LEARNING_MAP_INV[i] for i in range(len(LEARNING_MAP_INV))], dtype="<u4")


def class_colors(num_classes: int = len(LEARNING_MAP_INV)) -> np.ndarray:
    """``(num_classes, 3)`` uint8 RGB colour of each training id: its raw id's colour in the official map."""
    colors = np.zeros((num_classes, 3), dtype=np.uint8)
    for train_id in range(min(num_classes, len(LEARNING_MAP_INV))):
        colors[train_id] = COLOR_MAP_BGR[LEARNING_MAP_INV[train_id]][::-1]
    return colors


def to_raw_ids(train_ids: np.ndarray) -> np.ndarray:
    """Raw SemanticKITTI ids (``uint32``, instance bits 0) of training ids, through ``learning_map_inv``; an id
    outside the map is a ValueError."""
    train_ids = np.asarray(train_ids)
    if train_ids.size and (train_ids.min() < 0 or train_ids.max() >= len(_INV_LUT)):
        raise ValueError(f"training ids must be in 0..{len(_INV_LUT) - 1}, got {train_ids.min()}..{train_ids.max()}.")
    return _INV_LUT[train_ids]


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
    """``(N, 4)`` float32 x, y, z, remission."""
    try:
        data = np.fromfile(path, dtype="<f4")
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read scan file '{path}': {e}") from e
    if data.size % 4 != 0:
        raise DataError(f"scan file '{path}' is corrupt: its size is not a multiple of 16 bytes.")
    return data.reshape(-1, 4)


def read_labels(path: str, num_points: int | None = None) -> np.ndarray:
    """Raw ``uint32`` labels (semantic id in the lower 16 bits, instance id in the upper 16)."""
    try:
        labels = np.fromfile(path, dtype="<u4")
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read label file '{path}': {e}") from e
    if num_points is not None and labels.size != num_points:
        raise DataError(f"label file '{path}' holds {labels.size} labels for a scan of {num_points} points.")
    return labels


def map_labels(raw: np.ndarray, source: str = "") -> np.ndarray:
    """Training ids (``int64``) from raw labels: instance bits stripped, ``learning_map`` applied.

    Unknown raw ids become 0 (unlabeled) with a warning (logged, once per message) that counts them: never a
    crash in the loss.
    """
    mapped = _LUT16[np.asarray(raw) & 0xFFFF]
    unknown = mapped < 0
    if unknown.any():
        unknown_ids = np.unique(np.asarray(raw)[unknown] & 0xFFFF)
        warn_once(
            logger,
            f"{source or 'labels'}: {int(unknown.sum())} points have raw ids not in the learning map "
            f"({', '.join(map(str, unknown_ids[:10]))}); they are mapped to 0 (unlabeled).",
        )
        mapped[unknown] = 0
    return mapped
