"""Pictures as PNG bytes without an imaging library: ``encode_png`` of an (H, W, 3) or (H, W) uint8 array
(zlib and the PNG chunk layout, as the PNG specification defines them), and ``write_png``; ``text_image``, a
line of text as such an array (drawn by Pillow), to label pictures."""

from __future__ import annotations

import functools
import struct
import zlib
from typing import Any

import numpy as np

from .fileio import atomic_write

__all__ = ["as_image", "encode_png", "text_image", "write_png"]


def as_image(image: np.ndarray) -> np.ndarray:
    """``image`` as a C-contiguous (H, W, C) uint8 array with C = 1 (grey) or 3 (RGB); (H, W) becomes grey.
    Any other shape or dtype is a ValueError naming it."""
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"an image must be uint8, got {array.dtype}.")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3) or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"an image must be (H, W), (H, W, 1) or (H, W, 3), got shape {tuple(array.shape)}.")
    return np.ascontiguousarray(array)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(image: np.ndarray, level: int = 6) -> bytes:
    """The PNG file of ``image`` (see :func:`as_image`): 8-bit grey or RGB, no interlacing, filter 0 per row."""
    array = as_image(image)
    height, width, channels = array.shape
    color_type = 2 if channels == 3 else 0
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    rows = np.concatenate([np.zeros((height, 1), dtype=np.uint8), array.reshape(height, -1)], axis=1)
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(rows.tobytes(), level)),
            _chunk(b"IEND", b""),
        ]
    )


def write_png(path: str, image: np.ndarray) -> None:
    """Write ``image`` to ``path`` as PNG (its folder is created; never half-written)."""
    atomic_write(path, encode_png(image), durable=False)


@functools.lru_cache(maxsize=8)
def _font(size: int) -> Any:
    from PIL import ImageFont  # imported on first use: only pictures need it

    # Pillow's own font (no font file to find); without FreeType, its fixed bitmap font
    return ImageFont.load_default(size=size)


def text_image(
    text: str,
    size: int = 12,
    color: tuple[int, int, int] = (0, 0, 0),
    background: tuple[int, int, int] = (255, 255, 255),
) -> np.ndarray:
    """``text`` on one line as an (H, W, 3) uint8 array just large enough for it (H about ``size`` * 1.25)."""
    from PIL import Image, ImageDraw

    font = _font(size)
    left, _, right, _ = font.getbbox(text or " ")
    ascent, descent = font.getmetrics() if hasattr(font, "getmetrics") else (size, size // 4)
    picture = Image.new("RGB", (max(1, right - min(left, 0)), ascent + descent), background)
    ImageDraw.Draw(picture).text((-min(left, 0), 0), text, font=font, fill=color)
    return np.asarray(picture, dtype=np.uint8).copy()
