"""Pictures of the flagship's predictions: a scan's range image, ground truth, prediction and error mask in
the SemanticKITTI colour map, stacked; the confusion matrix and the per-class IoU as images. Plain NumPy,
(H, W, 3) uint8 RGB, cheap enough to make for a few scans at each evaluation."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from .semantic_kitti import class_colors

__all__ = ["confusion_picture", "error_picture", "iou_picture", "label_picture", "range_picture", "scan_picture"]

_GAP = 2  # white rows between the panels of a scan picture
_CORRECT = np.array([60, 200, 60], dtype=np.uint8)
_WRONG = np.array([230, 30, 30], dtype=np.uint8)


def _numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def range_picture(range_image: np.ndarray | torch.Tensor, max_range: float = 50.0) -> np.ndarray:
    """Range as grey: near is bright, ``max_range`` metres and beyond dark grey, empty pixels black."""
    r = _numpy(range_image).astype(np.float32)
    grey = 255.0 - 200.0 * np.clip(r / max_range, 0.0, 1.0)
    grey = np.where(r > 0, grey, 0.0).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def label_picture(labels: np.ndarray | torch.Tensor, colors: Optional[np.ndarray] = None) -> np.ndarray:
    """Training ids (H, W) in the SemanticKITTI colour map (0, unlabeled and empty pixels: black)."""
    colors = class_colors() if colors is None else colors
    return colors[np.clip(_numpy(labels).astype(np.int64), 0, len(colors) - 1)]


def error_picture(
    prediction: np.ndarray | torch.Tensor, truth: np.ndarray | torch.Tensor, ignore_index: int = 0
) -> np.ndarray:
    """Green where the prediction is right, red where wrong, black where the ground truth is ``ignore_index``
    (unlabeled or empty)."""
    pred, gt = _numpy(prediction), _numpy(truth)
    picture = np.where((pred == gt)[:, :, None], _CORRECT, _WRONG)
    picture[gt == ignore_index] = 0
    return picture.astype(np.uint8)


def _stack(panels: list[np.ndarray], row_scale: int) -> np.ndarray:
    width = panels[0].shape[1]
    gap = np.full((_GAP, width, 3), 255, dtype=np.uint8)
    rows: list[np.ndarray] = []
    for i, panel in enumerate(panels):
        if i:
            rows.append(gap)
        rows.append(np.repeat(panel, row_scale, axis=0))
    return np.concatenate(rows, axis=0)


def scan_picture(
    range_image: np.ndarray | torch.Tensor,
    prediction: np.ndarray | torch.Tensor,
    truth: Optional[np.ndarray | torch.Tensor] = None,
    mask: Optional[np.ndarray | torch.Tensor] = None,
    row_scale: int = 2,
    ignore_index: int = 0,
) -> np.ndarray:
    """One scan, top to bottom: range, ground truth, prediction, error mask (without ``truth``: range and
    prediction). ``prediction`` and ``truth`` are (H, W) training ids; pixels outside ``mask`` (no point) are
    black. Rows are repeated ``row_scale`` times: 64 beams are few rows for 2048 columns."""
    pred = _numpy(prediction).astype(np.int64)
    if mask is not None:
        pred = np.where(_numpy(mask), pred, 0)
    panels = [range_picture(range_image)]
    if truth is not None:
        gt = _numpy(truth).astype(np.int64)
        panels += [label_picture(gt), label_picture(pred), error_picture(pred, gt, ignore_index)]
    else:
        panels.append(label_picture(pred))
    return _stack(panels, row_scale)


def confusion_picture(confusion: np.ndarray | torch.Tensor, cell: int = 12, ignore_index: int = 0) -> np.ndarray:
    """The confusion matrix (rows: ground truth, columns: prediction, class 0 first), each row normalised to
    its points: white is 0, dark blue all of the row; the diagonal is framed in the class colour. Rows of
    ``ignore_index`` and of classes without points stay white."""
    matrix = _numpy(confusion).astype(np.float64)
    matrix[ignore_index, :] = 0
    fraction = matrix / np.maximum(matrix.sum(1, keepdims=True), 1.0)
    white, blue = np.array([255.0, 255.0, 255.0]), np.array([20.0, 40.0, 140.0])
    cells = (white + fraction[:, :, None] * (blue - white)).astype(np.uint8)
    picture = np.repeat(np.repeat(cells, cell, axis=0), cell, axis=1)
    colors = class_colors(len(matrix))
    for c in range(len(matrix)):
        block = picture[c * cell : (c + 1) * cell, c * cell : (c + 1) * cell]
        block[[0, 1, -2, -1], :] = colors[c]
        block[:, [0, 1, -2, -1]] = colors[c]
    return picture


def iou_picture(iou: np.ndarray | torch.Tensor, height: int = 100, bar: int = 12, ignore_index: int = 0) -> np.ndarray:
    """Per-class IoU as bars in the class colours (class 0 first; its place stays empty), on a white
    background with grey lines at 0.25, 0.5 and 0.75."""
    values = np.nan_to_num(_numpy(iou).astype(np.float64), nan=0.0)
    colors = class_colors(len(values))
    picture = np.full((height, bar * len(values), 3), 255, dtype=np.uint8)
    for level in (0.25, 0.5, 0.75):
        picture[height - 1 - int(level * (height - 1)), :] = 200
    for c, value in enumerate(values):
        if c == ignore_index:
            continue
        top = height - int(np.rint(np.clip(value, 0.0, 1.0) * height))
        picture[top:, c * bar + 1 : (c + 1) * bar - 1] = colors[c]
    return picture
