"""Pictures as PNG bytes without an imaging library: ``encode_png`` of an (H, W, 3) or (H, W) uint8 array
(zlib and the PNG chunk layout, as the PNG specification defines them), and ``write_png``."""

from __future__ import annotations

import struct
import zlib

import numpy as np

from .fileio import atomic_write

__all__ = ["as_image", "encode_png", "write_png"]


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
