"""Pictures of the flagship's predictions, labelled to be read in TensorBoard's Images tab: a scan's range image,
ground truth, prediction and error mask, each panel titled, with a legend of the SemanticKITTI colours; the
confusion matrix with class names on both axes and a colour scale; the per-class IoU as named bars with their
values. (H, W, 3) uint8 RGB arrays, cheap enough to make for a few scans at each evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import numpy as np
import torch

from ..images import text_image
from .semantic_kitti import CLASS_NAMES, class_colors

__all__ = ["confusion_picture", "error_picture", "iou_picture", "label_picture", "range_picture", "scan_picture"]

_GAP = 4  # white rows between the panels of a scan picture
_TEXT = 12  # font size of every label, in pixels
_PAD = 4
_WHITE = (255, 255, 255)
_CORRECT = np.array([60, 200, 60], dtype=np.uint8)
_WRONG = np.array([230, 30, 30], dtype=np.uint8)
_SCALE_WHITE, _SCALE_BLUE = np.array([255.0, 255.0, 255.0]), np.array([20.0, 40.0, 140.0])


def _numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _names(class_names: Optional[Sequence[str]], num_classes: int) -> list[str]:
    names = list(class_names) if class_names is not None else list(CLASS_NAMES[:num_classes])
    return names + [str(c) for c in range(len(names), num_classes)]  # classes beyond the names: their ids


def _paste(canvas: np.ndarray, patch: np.ndarray, top: int, left: int) -> None:
    """``patch`` into ``canvas`` at (top, left), cut where it would leave the canvas."""
    height = min(patch.shape[0], canvas.shape[0] - top)
    width = min(patch.shape[1], canvas.shape[1] - left)
    if height > 0 and width > 0:
        canvas[top : top + height, left : left + width] = patch[:height, :width]


def _text_rows(width: int, lines: Sequence[str], size: int = _TEXT) -> np.ndarray:
    """Lines of text, left-aligned on white, as a strip ``width`` wide."""
    texts = [text_image(line, size) for line in lines]
    strip = np.full((sum(t.shape[0] for t in texts) + _PAD, width, 3), 255, dtype=np.uint8)
    top = _PAD // 2
    for text in texts:
        _paste(strip, text, top, _PAD)
        top += text.shape[0]
    return strip


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


def _legend(width: int, names: Sequence[str], colors: np.ndarray, size: int = _TEXT) -> np.ndarray:
    """A swatch of each class's colour and its name, as many per line as ``width`` holds."""
    items = []
    for name, color in zip(names, colors):
        text = text_image(name, size)
        item = np.full((text.shape[0], text.shape[0] + 3 + text.shape[1] + 3 * _PAD, 3), 255, dtype=np.uint8)
        swatch = text.shape[0] - 4
        item[2 : 2 + swatch, 2 : 2 + swatch] = 160  # a grey frame: black and pale colours stand out
        item[3 : 1 + swatch, 3 : 1 + swatch] = color
        _paste(item, text, 0, text.shape[0] + 3)
        items.append(item)
    lines: list[list[np.ndarray]] = [[]]
    used = _PAD
    for item in items:
        if lines[-1] and used + item.shape[1] > width:
            lines.append([])
            used = _PAD
        lines[-1].append(item)
        used += item.shape[1]
    line_height = max(item.shape[0] for item in items)
    legend = np.full((len(lines) * line_height + _PAD, width, 3), 255, dtype=np.uint8)
    for row, line in enumerate(lines):
        left = _PAD
        for item in line:
            _paste(legend, item, _PAD // 2 + row * line_height, left)
            left += item.shape[1]
    return legend


def scan_picture(
    range_image: np.ndarray | torch.Tensor,
    prediction: np.ndarray | torch.Tensor,
    truth: Optional[np.ndarray | torch.Tensor] = None,
    mask: Optional[np.ndarray | torch.Tensor] = None,
    row_scale: Optional[int] = None,
    ignore_index: int = 0,
    class_names: Optional[Sequence[str]] = None,
) -> np.ndarray:
    """One scan, top to bottom, each panel under its title: range, ground truth, prediction, errors (without
    ``truth``: range and prediction), then a legend of the class colours. ``prediction`` and ``truth`` are
    (H, W) training ids; pixels outside ``mask`` (no point) are black. Rows are repeated ``row_scale`` times
    (default: 3, and one more per 256 columns beyond 768: 8 at 2048): 64 beams are few rows for 2048 columns,
    and TensorBoard shrinks a wide picture to its card (about 350 px wide in the Images tab), so the text grows
    with the width too: about 12 px on the screen at any width."""
    pred = _numpy(prediction).astype(np.int64)
    if mask is not None:
        pred = np.where(_numpy(mask), pred, 0)
    panels = [("range (bright: near, black: no point)", range_picture(range_image))]
    if truth is not None:
        gt = _numpy(truth).astype(np.int64)
        panels += [
            ("ground truth", label_picture(gt)),
            ("prediction", label_picture(pred)),
            ("errors (green: right, red: wrong, black: unlabeled)", error_picture(pred, gt, ignore_index)),
        ]
    else:
        panels.append(("prediction", label_picture(pred)))
    width = panels[0][1].shape[1]
    # TensorBoard fits a picture to its ~350 px card: a 2048-column scan shrinks ~6x, a 512-column one ~1.5x
    size = max(_TEXT + 4, width // 28)
    row_scale = row_scale if row_scale is not None else max(3, width // 256)
    gap = np.full((_GAP, width, 3), 255, dtype=np.uint8)
    rows: list[np.ndarray] = []
    for title, panel in panels:
        rows += [_text_rows(width, [title], size), np.repeat(panel, row_scale, axis=0), gap]
    colors = class_colors()
    rows.append(_legend(width, _names(class_names, len(colors)), colors, size))
    return np.concatenate(rows, axis=0)


def _colour_scale(height: int) -> np.ndarray:
    """A vertical bar from dark blue (1, top) to white (0, bottom), labelled 1, 0.5 and 0."""
    fraction = np.linspace(1.0, 0.0, height)[:, None, None]
    bar = (_SCALE_WHITE + fraction * (_SCALE_BLUE - _SCALE_WHITE)).astype(np.uint8)
    labels = [text_image(value, _TEXT) for value in ("1", "0.5", "0")]
    scale = np.full((height + labels[0].shape[0], 14 + _PAD + max(t.shape[1] for t in labels), 3), 255, np.uint8)
    half = labels[0].shape[0] // 2
    scale[half : half + height, :12] = np.repeat(bar, 12, axis=1)
    for label, at in zip(labels, (0, height // 2, height - 1)):
        _paste(scale, label, at, 14 + _PAD // 2)
    return scale


def confusion_picture(
    confusion: np.ndarray | torch.Tensor,
    cell: int = 16,
    ignore_index: int = 0,
    class_names: Optional[Sequence[str]] = None,
) -> np.ndarray:
    """The confusion matrix with the class names on both axes: rows are the ground truth, columns the
    prediction, each row normalised to its points (white 0, dark blue all of the row, as the colour scale
    beside it shows); the diagonal is framed in the class colour. ``ignore_index`` is left out (never
    evaluated, never predicted); rows of classes without points stay white."""
    matrix = _numpy(confusion).astype(np.float64)
    classes = [c for c in range(len(matrix)) if c != ignore_index]
    names = _names(class_names, len(matrix))
    matrix = matrix[np.ix_(classes, classes)]
    fraction = matrix / np.maximum(matrix.sum(1, keepdims=True), 1.0)
    cells = (_SCALE_WHITE + fraction[:, :, None] * (_SCALE_BLUE - _SCALE_WHITE)).astype(np.uint8)
    grid = np.repeat(np.repeat(cells, cell, axis=0), cell, axis=1)
    colors = class_colors(len(names))
    for i, c in enumerate(classes):
        block = grid[i * cell : (i + 1) * cell, i * cell : (i + 1) * cell]
        block[[0, 1, -2, -1], :] = colors[c]
        block[:, [0, 1, -2, -1]] = colors[c]
    row_names = [text_image(names[c], _TEXT) for c in classes]
    column_names = [np.rot90(text) for text in row_names]  # read bottom to top, as a chart's column labels
    left = max(t.shape[1] for t in row_names) + 2 * _PAD
    top = max(t.shape[0] for t in column_names) + 2 * _PAD
    scale = _colour_scale(grid.shape[0])
    body = np.full((top + grid.shape[0] + _PAD, left + grid.shape[1] + 2 * _PAD + scale.shape[1], 3), 255, np.uint8)
    body[top : top + grid.shape[0], left : left + grid.shape[1]] = grid
    for i, (row, column) in enumerate(zip(row_names, column_names)):
        _paste(body, row, top + i * cell + (cell - row.shape[0]) // 2, left - _PAD - row.shape[1])
        _paste(body, column, top - _PAD - column.shape[0], left + i * cell + (cell - column.shape[1]) // 2)
    _paste(
        body,
        scale,
        top - scale.shape[0] + grid.shape[0] + text_image("1", _TEXT).shape[0] // 2,
        left + grid.shape[1] + 2 * _PAD,
    )
    title = [
        "Confusion matrix: rows are the ground truth, columns the prediction;",
        "each row normalised to its points",
    ]
    return np.concatenate([_text_rows(body.shape[1], title), body], axis=0)


def iou_picture(
    iou: np.ndarray | torch.Tensor,
    ignore_index: int = 0,
    class_names: Optional[Sequence[str]] = None,
    bar_length: int = 240,
) -> np.ndarray:
    """Per-class IoU, one named bar per class in its colour with its value (``n/a``: left out of the mean), on
    grey lines at 0.25, 0.5 and 0.75; the title gives the mIoU, their mean. ``ignore_index`` is left out."""
    values = _numpy(iou).astype(np.float64)
    classes = [c for c in range(len(values)) if c != ignore_index]
    names = _names(class_names, len(values))
    colors = class_colors(len(values))
    shown = values[classes]
    miou = float(np.nanmean(shown)) if np.isfinite(shown).any() else float("nan")
    labels = [text_image(names[c], _TEXT) for c in classes]
    row = max(t.shape[0] for t in labels) + 2
    left = max(t.shape[1] for t in labels) + 2 * _PAD
    value_width = text_image("0.000", _TEXT).shape[1] + 2 * _PAD
    body = np.full((row * len(classes) + _PAD, left + bar_length + value_width, 3), 255, dtype=np.uint8)
    for level in (0.25, 0.5, 0.75):
        body[:, left + int(level * bar_length)] = 200
    body[:, left] = 120
    for i, (c, label) in enumerate(zip(classes, labels)):
        top = i * row + 1
        _paste(body, label, top, left - _PAD - label.shape[1])
        value = values[c]
        if np.isfinite(value):
            length = int(np.rint(np.clip(value, 0.0, 1.0) * bar_length))
            body[top + 2 : top + row - 2, left + 1 : left + 1 + length] = colors[c]
        text = text_image(f"{value:.3f}" if np.isfinite(value) else "n/a", _TEXT)
        _paste(body, text, top, left + bar_length + _PAD)
    return np.concatenate([_text_rows(body.shape[1], [f"IoU per class (mIoU {miou:.3f})"]), body], axis=0)
