"""Spherical range projection (RangeNet++ / SqueezeSeg): points → an H × W image of range, x, y, z, remission,
with each point's pixel kept so predictions go back to every point."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

__all__ = ["KITTI_MEANS", "KITTI_STDS", "Projection", "RangeProjection"]

# channel statistics of the real data (range, x, y, z, remission), as RangeNet++ uses them
KITTI_MEANS = (12.12, 10.88, 0.23, -1.04, 0.21)
KITTI_STDS = (12.32, 11.47, 6.91, 0.86, 0.16)


@dataclass
class Projection:
    """``image`` (5, H, W) float32 normalised (0 where empty); ``mask`` (H, W) bool; ``range_image`` (H, W)
    metres (0 where empty); ``v``, ``u`` (N,) int64 pixel of every point; ``order``: the point whose value
    each pixel shows is ``pixel_point[v, u]`` (-1 where empty)."""

    image: np.ndarray
    mask: np.ndarray
    range_image: np.ndarray
    v: np.ndarray
    u: np.ndarray
    pixel_point: np.ndarray


class RangeProjection:
    """Projects ``(N, 4)`` points (x, y, z, remission) for a sensor with ``height`` beams over the vertical
    field of view ``fov_up`` .. ``fov_down`` degrees, and ``width`` columns over 360°. Where several points fall
    on one pixel, the closest wins."""

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
        self.fov_up = np.radians(fov_up)
        self.fov_down = np.radians(fov_down)
        self.means = None if means is None else np.asarray(means, dtype=np.float32).reshape(-1, 1, 1)
        self.stds = None if stds is None else np.asarray(stds, dtype=np.float32).reshape(-1, 1, 1)

    def pixels(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(v, u, range)`` of each point: row from the pitch, column from the yaw, floored and clipped."""
        xyz = np.asarray(points[:, :3], dtype=np.float64)
        r = np.linalg.norm(xyz, axis=1)
        safe = np.maximum(r, 1e-8)
        yaw = np.arctan2(xyz[:, 1], xyz[:, 0])
        pitch = np.arcsin(np.clip(xyz[:, 2] / safe, -1.0, 1.0))
        fov = self.fov_up - self.fov_down
        u = 0.5 * (1.0 - yaw / np.pi) * self.width
        v = (1.0 - (pitch + abs(self.fov_down)) / fov) * self.height
        u = np.clip(np.floor(u), 0, self.width - 1).astype(np.int64)
        v = np.clip(np.floor(v), 0, self.height - 1).astype(np.int64)
        return v, u, r.astype(np.float32)

    def __call__(self, points: np.ndarray) -> Projection:
        points = np.asarray(points, dtype=np.float32)
        v, u, r = self.pixels(points)
        # sort by decreasing range, then write: the closest point is written last and wins
        order = np.argsort(-r, kind="stable")
        channels = np.zeros((5, self.height, self.width), dtype=np.float32)
        pixel_point = np.full((self.height, self.width), -1, dtype=np.int64)
        vo, uo = v[order], u[order]
        channels[0, vo, uo] = r[order]
        channels[1:4, vo, uo] = points[order, :3].T
        channels[4, vo, uo] = points[order, 3]
        pixel_point[vo, uo] = order
        mask = pixel_point >= 0
        range_image = channels[0].copy()
        if self.means is not None and self.stds is not None:
            channels = (channels - self.means) / self.stds
            channels *= mask  # empty pixels stay 0
        return Projection(channels, mask, range_image, v, u, pixel_point)
