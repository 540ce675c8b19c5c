"""Spherical range projection (RangeNet++ / SqueezeSeg): points → an H × W image of range, x, y, z, remission,
with each point's pixel kept so predictions go back to every point."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

__all__ = ["KITTI_MEANS", "KITTI_STDS", "Projection", "RangeProjection", "finite_rows"]

# channel statistics of the real data (range, x, y, z, remission), as RangeNet++ uses them
KITTI_MEANS = (12.12, 10.88, 0.23, -1.04, 0.21)
KITTI_STDS = (12.32, 11.47, 6.91, 0.86, 0.16)


def finite_rows(points: np.ndarray) -> np.ndarray:
    """``(N,)`` bool: whether every value of each row of an ``(N, 4)`` array is finite. (The four bools of a
    row read as one uint32: 16x faster than ``.all(axis=1)``, and no BLAS call, whose threads fight the loader
    workers for the cores.)"""
    ok = np.isfinite(np.ascontiguousarray(points))
    if ok.ndim != 2 or ok.shape[1] != 4:
        return ok.all(axis=1)
    return ok.view(np.uint32).ravel() == 0x01010101


@dataclass
class Projection:
    """``image`` (5, H, W) float32 normalised (0 where empty); ``mask`` (H, W) bool; ``range_image`` (H, W)
    metres (0 where empty); ``v``, ``u`` (N,) int64 pixel of every point; ``point_range`` (N,) float32 metres;
    the point whose value each pixel shows is ``pixel_point[v, u]`` (-1 where empty)."""

    image: np.ndarray
    mask: np.ndarray
    range_image: np.ndarray
    v: np.ndarray
    u: np.ndarray
    pixel_point: np.ndarray
    point_range: np.ndarray


class RangeProjection:
    """Projects ``(N, 4)`` points (x, y, z, remission) for a sensor with ``height`` beams over the vertical
    field of view ``fov_up`` .. ``fov_down`` degrees, and ``width`` columns over 360°. Where several points fall
    on one pixel, the closest wins.

    The pixel of each point is computed in float32 with the operations of semantic-kitti-api's ``LaserScan``
    (RangeNet++'s projection), so both put every point on the same pixel. Instead of sorting the points by range
    (the reference's ``argsort``, 2/3 of a 120k-point scan's time), the nearest range of each pixel is found with
    one ``np.minimum.at``. Points with a non-finite coordinate (a corrupt scan) are left out of the image."""

    def __init__(
        self,
        height: int = 64,
        width: int = 2048,
        fov_up: float = 3.0,
        fov_down: float = -25.0,
        means: Optional[tuple[float, ...]] = KITTI_MEANS,
        stds: Optional[tuple[float, ...]] = KITTI_STDS,
    ) -> None:
        if fov_up <= fov_down:
            raise ValueError(f"fov_up ({fov_up}) must be above fov_down ({fov_down}).")
        self.height, self.width = height, width
        self.fov_up = fov_up / 180.0 * np.pi
        self.fov_down = fov_down / 180.0 * np.pi
        self.means = None if means is None else np.asarray(means, dtype=np.float32).reshape(-1, 1)
        self.stds = None if stds is None else np.asarray(stds, dtype=np.float32).reshape(-1, 1)

    def pixels(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(v, u, range)`` of each point: row from the pitch, column from the yaw, floored and clipped (float32
        arithmetic, in the reference's order of operations)."""
        x, y, z = (np.asarray(points[:, i], dtype=np.float32) for i in range(3))
        r = np.sqrt(x * x + y * y + z * z)
        yaw = -np.arctan2(y, x)
        pitch = np.arcsin(np.clip(z / (r + np.float32(1e-8)), -1.0, 1.0))
        fov = abs(self.fov_down) + abs(self.fov_up)
        u = 0.5 * (yaw / np.pi + 1.0) * self.width
        v = (1.0 - (pitch + abs(self.fov_down)) / fov) * self.height
        u = np.clip(np.floor(u), 0, self.width - 1).astype(np.int64)
        v = np.clip(np.floor(v), 0, self.height - 1).astype(np.int64)
        return v, u, r

    def __call__(self, points: np.ndarray) -> Projection:
        points = np.asarray(points, dtype=np.float32)
        n = len(points)
        finite = finite_rows(points)
        all_finite = bool(finite.all())
        if not all_finite:  # corrupt points: a pixel of their own is computed from zeros, none is written
            points = np.where(finite[:, None], points, np.float32(0))
        v, u, r = self.pixels(points)
        pixel = v * self.width + u
        nearest = np.full(self.height * self.width, np.inf, dtype=np.float32)
        np.minimum.at(nearest, pixel, r if all_finite else np.where(finite, r, np.inf))
        winners = np.flatnonzero(r == nearest[pixel])
        if not all_finite:
            winners = winners[finite[winners]]
        pixel_point = np.full(self.height * self.width, -1, dtype=np.int64)
        pixel_point[pixel[winners]] = winners  # equal ranges on one pixel: one of them
        # each channel per point, plus a last column of zeros that the empty pixels (-1) pick
        values = np.empty((5, n + 1), dtype=np.float32)
        values[0, :n] = r
        values[1:, :n] = points.T
        values[:, n] = 0.0
        range_image = values[0].take(pixel_point)
        if self.means is not None and self.stds is not None:
            values[:, :n] -= self.means
            values[:, :n] /= self.stds
        image = values.take(pixel_point, axis=1)
        shape = (self.height, self.width)
        return Projection(
            image.reshape(5, *shape),
            pixel_point.reshape(shape) >= 0,
            range_image.reshape(shape),
            v,
            u,
            pixel_point.reshape(shape),
            r,
        )
