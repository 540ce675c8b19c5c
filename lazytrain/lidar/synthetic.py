"""Synthetic SemanticKITTI: street scenes ray-cast by a simulated 64-beam LiDAR, written in the real layout.

Each scan is a deterministic function of (seed, sequence, index): a road with lane markings, sidewalks,
parking, terrain, buildings, fences, cars (some moving), trucks, people, cyclists, poles, traffic signs,
trees and bushes, plus outliers and unlabeled clutter. Remission depends on the material, so a small model
learns the classes from geometry and intensity in a few hundred iterations.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..progress import Progress

__all__ = ["REAL_DENSITY_COLUMNS", "make_scan", "write_synthetic_kitti"]

logger = logging.getLogger(__name__)

SENSOR_HEIGHT = 1.73
MAX_RANGE = 80.0
# azimuth steps that give a scan of the real sensor's density (~120k points, as an HDL-64E scan of
# SemanticKITTI); the default 1024 gives ~58k, enough to learn from and twice as fast to write
REAL_DENSITY_COLUMNS = 2150

# remission (mean, spread) by raw id: materials differ, as on the real sensor
_REMISSION = {
    40: (0.20, 0.04), 60: (0.70, 0.08), 44: (0.28, 0.04), 48: (0.33, 0.05), 49: (0.25, 0.05), 72: (0.42, 0.08),
    50: (0.30, 0.10), 51: (0.22, 0.06), 52: (0.35, 0.08), 10: (0.55, 0.15), 252: (0.55, 0.15), 18: (0.50, 0.12),
    258: (0.50, 0.12), 20: (0.45, 0.10), 13: (0.45, 0.10), 30: (0.15, 0.05), 254: (0.15, 0.05), 31: (0.25, 0.06),
    253: (0.25, 0.06), 11: (0.30, 0.08), 15: (0.40, 0.08), 80: (0.38, 0.05), 81: (0.85, 0.06), 70: (0.10, 0.04),
    71: (0.18, 0.04), 99: (0.40, 0.15), 0: (0.30, 0.20), 1: (0.50, 0.30),
}  # fmt: skip


@dataclass
class _Boxes:
    lo: np.ndarray  # (B, 3)
    hi: np.ndarray  # (B, 3)
    raw: np.ndarray  # (B,) raw semantic id
    instance: np.ndarray  # (B,)


@dataclass
class _Cylinders:
    center: np.ndarray  # (C, 2)
    radius: np.ndarray
    z_lo: np.ndarray
    z_hi: np.ndarray
    raw: np.ndarray


@dataclass
class _Spheres:
    center: np.ndarray  # (S, 3)
    radius: np.ndarray
    raw: np.ndarray


def _scene(rng: np.random.Generator) -> tuple[_Boxes, _Cylinders, _Spheres, dict]:
    ground = -SENSOR_HEIGHT
    road_half = rng.uniform(3.5, 6.0)
    walk = rng.uniform(1.5, 3.0)
    lo, hi, raw, inst = [], [], [], []
    next_instance = [1]

    def box(center, size, raw_id, z0=ground):
        cx, cy = center
        sx, sy, sz = size
        lo.append((cx - sx / 2, cy - sy / 2, z0))
        hi.append((cx + sx / 2, cy + sy / 2, z0 + sz))
        raw.append(raw_id)
        inst.append(next_instance[0])
        next_instance[0] += 1

    # vehicles on the road, some moving
    for _ in range(rng.integers(4, 12)):
        x = rng.uniform(-60, 60)
        y = rng.uniform(-road_half + 1.2, road_half - 1.2)
        kind = rng.choice(["car", "car", "car", "truck", "other"])
        if kind == "car":
            box(
                (x, y),
                (rng.uniform(3.8, 4.8), rng.uniform(1.6, 1.9), rng.uniform(1.4, 1.6)),
                252 if rng.random() < 0.3 else 10,
            )
        elif kind == "truck":
            box((x, y), (rng.uniform(7, 10), 2.4, rng.uniform(2.8, 3.4)), 258 if rng.random() < 0.3 else 18)
        else:
            box((x, y), (rng.uniform(5, 7), 2.2, rng.uniform(2.2, 2.8)), 20 if rng.random() < 0.7 else 13)
    # parked cars on a parking strip
    side = rng.choice([-1.0, 1.0])
    for _ in range(rng.integers(0, 5)):
        box((rng.uniform(-40, 40), side * (road_half + 1.2)), (4.3, 1.8, 1.5), 10)
    # people and cyclists on the sidewalks
    for _ in range(rng.integers(6, 14)):
        x = rng.uniform(-30, 30)
        y = rng.choice([-1, 1]) * (road_half + walk * rng.uniform(0.2, 0.8))
        kind = rng.random()
        if kind < 0.4:
            box((x, y), (0.5, 0.5, rng.uniform(1.6, 1.9)), 254 if rng.random() < 0.5 else 30)
        elif kind < 0.6:
            box((x, y), (1.7, 0.6, 1.8), 253 if rng.random() < 0.5 else 31)
        elif kind < 0.75:
            box((x, y), (1.7, 0.5, 1.1), 11)
        elif kind < 0.9:
            box((x, y), (2.0, 0.8, 1.3), 15)
        else:
            box((x, y), (2.0, 0.8, 1.8), 255 if rng.random() < 0.5 else 32)
    # buildings and fences beyond the sidewalks
    for s in (-1.0, 1.0):
        x = -70.0
        while x < 70:
            length = rng.uniform(8, 25)
            depth = rng.uniform(8, 15)
            setback = road_half + walk + rng.uniform(2, 8)
            if rng.random() < 0.75:
                box((x + length / 2, s * (setback + depth / 2)), (length, depth, rng.uniform(4, 15)), 50)
            else:
                box((x + length / 2, s * (road_half + walk + 0.6)), (length, 0.15, rng.uniform(1.0, 2.0)), 51)
            x += length + rng.uniform(1, 6)
    for _ in range(rng.integers(0, 3)):
        box((rng.uniform(-30, 30), rng.choice([-1, 1]) * (road_half + walk + 1.5)), (1.0, 1.0, 1.2), 99)
    # poles, some with a traffic-sign plate on top
    cylinders: list[tuple[float, float, float, float, int]] = []  # x, y, radius, height, raw id
    spheres: list[tuple[float, float, float, float, int]] = []  # x, y, z, radius, raw id
    for _ in range(rng.integers(6, 14)):
        x, y = rng.uniform(-30, 30), rng.choice([-1, 1]) * (road_half + 0.4)
        height = rng.uniform(2.0, 4.0)
        cylinders.append((x, y, rng.uniform(0.1, 0.2), height, 80))
        if height < 3.0:  # low enough for the upper beams to see the plate
            box((x, y), (0.15, 1.0, 0.9), 81, z0=ground + height)
    # trees: a trunk and a canopy; bushes
    for _ in range(rng.integers(4, 14)):
        x = rng.uniform(-50, 50)
        y = rng.choice([-1, 1]) * (road_half + walk + rng.uniform(0.5, 2.5))
        trunk_h = rng.uniform(1.5, 3.0)
        cylinders.append((x, y, rng.uniform(0.15, 0.35), trunk_h, 71))
        canopy = rng.uniform(1.5, 3.0)
        spheres.append((x, y, ground + trunk_h + canopy * 0.8, canopy, 70))
    for _ in range(rng.integers(2, 8)):
        x = rng.uniform(-40, 40)
        y = rng.choice([-1, 1]) * (road_half + walk + rng.uniform(1, 4))
        r = rng.uniform(0.6, 1.4)
        spheres.append((x, y, ground + r * 0.5, r, 70))

    boxes = _Boxes(np.array(lo), np.array(hi), np.array(raw), np.array(inst))
    cyl = np.array(cylinders, dtype=np.float64).reshape(-1, 5)
    cyls = _Cylinders(cyl[:, :2], cyl[:, 2], np.full(len(cyl), ground), ground + cyl[:, 3], cyl[:, 4].astype(np.int64))
    sph = np.array(spheres, dtype=np.float64).reshape(-1, 5)
    balls = _Spheres(sph[:, :3], sph[:, 3], sph[:, 4].astype(np.int64))
    layout = dict(road_half=road_half, walk=walk, parking_side=side, lane_width=rng.uniform(3.0, 3.7))
    return boxes, cyls, balls, layout


def _ray_boxes(origin: np.ndarray, dirs: np.ndarray, b: _Boxes) -> tuple[np.ndarray, np.ndarray]:
    if len(b.raw) == 0:
        return np.full(len(dirs), np.inf), np.zeros(len(dirs), dtype=np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = (1.0 / dirs).astype(np.float32)  # (R, 3)
        t_near = np.full((len(dirs), len(b.raw)), -np.inf, dtype=np.float32)
        t_far = np.full((len(dirs), len(b.raw)), np.inf, dtype=np.float32)
        for axis in range(3):  # slab test, one axis at a time to keep the arrays 2-D
            t1 = np.outer(inv[:, axis], (b.lo[:, axis] - origin[axis]).astype(np.float32))
            t2 = np.outer(inv[:, axis], (b.hi[:, axis] - origin[axis]).astype(np.float32))
            np.maximum(t_near, np.minimum(t1, t2), out=t_near)
            np.minimum(t_far, np.maximum(t1, t2), out=t_far)
    t = np.where((t_far >= t_near) & (t_near > 0.1), t_near, np.inf)
    idx = np.argmin(t, axis=1)
    return t[np.arange(len(dirs)), idx], idx


def _ray_cylinders(origin: np.ndarray, dirs: np.ndarray, c: _Cylinders) -> tuple[np.ndarray, np.ndarray]:
    if len(c.raw) == 0:
        return np.full(len(dirs), np.inf), np.zeros(len(dirs), dtype=np.int64)
    d = dirs[:, None, :2]  # (R, 1, 2)
    oc = (origin[:2] - c.center)[None]  # (1, C, 2)
    a = (d**2).sum(-1)
    bq = 2 * (d * oc).sum(-1)
    cq = (oc**2).sum(-1) - c.radius[None] ** 2
    disc = bq**2 - 4 * a * cq
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (-bq - np.sqrt(disc)) / (2 * a)
    z = origin[2] + t * dirs[:, 2:3]
    ok = (disc >= 0) & (t > 0.1) & (z >= c.z_lo[None]) & (z <= c.z_hi[None])
    t = np.where(ok, t, np.inf)
    idx = np.argmin(t, axis=1)
    return t[np.arange(len(dirs)), idx], idx


def _ray_spheres(origin: np.ndarray, dirs: np.ndarray, s: _Spheres) -> tuple[np.ndarray, np.ndarray]:
    if len(s.raw) == 0:
        return np.full(len(dirs), np.inf), np.zeros(len(dirs), dtype=np.int64)
    oc = (origin - s.center)[None]  # (1, S, 3)
    bq = 2 * (dirs[:, None, :] * oc).sum(-1)
    cq = (oc**2).sum(-1) - s.radius[None] ** 2
    disc = bq**2 - 4 * cq
    with np.errstate(invalid="ignore"):
        t = (-bq - np.sqrt(disc)) / 2
    t = np.where((disc >= 0) & (t > 0.1), t, np.inf)
    idx = np.argmin(t, axis=1)
    return t[np.arange(len(dirs)), idx], idx


def _ground_labels(x: np.ndarray, y: np.ndarray, layout: dict, rng: np.random.Generator) -> np.ndarray:
    half, walk, lane = layout["road_half"], layout["walk"], layout["lane_width"]
    ay = np.abs(y)
    raw = np.full(len(x), 72, dtype=np.int64)  # terrain
    raw[ay < half + walk] = 48  # sidewalk
    parking = (ay >= half) & (ay < half + 2.4) & (np.sign(y) == layout["parking_side"]) & (np.abs(x) < 45)
    raw[parking] = 44
    raw[ay < half] = 40  # road
    # dashed lane markings
    marking = (np.abs(ay - lane / 2) < 0.08) & ((np.floor(x / 3.0) % 2) == 0) & (ay < half)
    raw[marking] = 60
    other = (ay > half + walk + 10) & (np.abs(x) < 8)
    raw[other] = 49
    return raw


def make_scan(seed: int, sequence: str, index: int, columns: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic scan: ``points`` (N, 4) float32 and raw ``labels`` (N,) uint32 with instance ids."""
    rng = np.random.default_rng([seed, int(sequence), index])
    boxes, cylinders, spheres, layout = _scene(rng)
    elevation = np.radians(np.linspace(2.0, -24.8, 64))
    azimuth = np.linspace(-np.pi, np.pi, columns, endpoint=False) + rng.uniform(0, 2 * np.pi / columns)
    el, az = np.meshgrid(elevation, azimuth, indexing="ij")
    el = el + rng.normal(0, 0.0005, el.shape)
    dirs = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1).reshape(-1, 3)
    origin = np.zeros(3)

    hits = [_ray_boxes(origin, dirs, boxes), _ray_cylinders(origin, dirs, cylinders)]
    hits.append(_ray_spheres(origin, dirs, spheres))
    with np.errstate(divide="ignore"):
        t_ground = np.where(dirs[:, 2] < -1e-6, -SENSOR_HEIGHT / dirs[:, 2], np.inf)
    t_all = np.stack([h[0] for h in hits] + [t_ground], axis=1)
    which = np.argmin(t_all, axis=1)
    t = t_all[np.arange(len(dirs)), which]
    keep = np.isfinite(t) & (t < MAX_RANGE) & (rng.random(len(t)) > 0.1)  # 10% of returns are lost
    dirs, t, which = dirs[keep], t[keep], which[keep]
    hit_idx = [h[1][keep] for h in hits]
    t = t + rng.normal(0, 0.02, len(t))
    xyz = dirs * t[:, None]

    raw = np.zeros(len(t), dtype=np.int64)
    instance = np.zeros(len(t), dtype=np.int64)
    raw[which == 0] = boxes.raw[hit_idx[0][which == 0]]
    instance[which == 0] = boxes.instance[hit_idx[0][which == 0]]
    raw[which == 1] = cylinders.raw[hit_idx[1][which == 1]]
    raw[which == 2] = spheres.raw[hit_idx[2][which == 2]]
    ground = which == 3
    raw[ground] = _ground_labels(xyz[ground, 0], xyz[ground, 1], layout, rng)

    # outliers (raw 1) scattered in the air and unlabeled clutter (raw 0)
    n_out = int(len(t) * 0.003)
    outliers = rng.uniform([-30, -30, -1.5], [30, 30, 3.0], size=(n_out, 3))
    n_clutter = int(len(t) * 0.01)
    clutter_idx = rng.choice(len(t), n_clutter, replace=False)
    raw[clutter_idx] = 0
    xyz = np.concatenate([xyz, outliers])
    raw = np.concatenate([raw, np.ones(n_out, dtype=np.int64)])
    instance = np.concatenate([instance, np.zeros(n_out, dtype=np.int64)])

    remission = np.empty(len(raw), dtype=np.float64)
    for raw_id in np.unique(raw):
        sel = raw == raw_id
        mean, spread = _REMISSION.get(int(raw_id), (0.3, 0.1))
        remission[sel] = rng.normal(mean, spread, sel.sum())
    remission = np.clip(remission, 0.0, 1.0)

    points = np.concatenate([xyz, remission[:, None]], axis=1).astype("<f4")
    labels = ((instance.astype(np.uint32) << 16) | raw.astype(np.uint32)).astype("<u4")
    return points, labels


def write_synthetic_kitti(
    root: str, sequences: Sequence[str], scans: int, seed: int = 0, columns: int = 1024, labels: bool = True
) -> None:
    """Write ``scans`` scans for each sequence into ``<root>/dataset/sequences/<SS>/`` (velodyne, labels, calib,
    poses, times). Each sequence is written to a temp folder and renamed into place, so concurrent writers
    (several ranks) and interrupted runs never leave a half-written sequence. Progress with an ETA is logged
    every few seconds (:class:`lazytrain.progress.Progress`)."""
    base = os.path.join(root, "dataset", "sequences")
    os.makedirs(base, exist_ok=True)
    with open(os.path.join(root, "SYNTHETIC.txt"), "w", encoding="utf-8") as f:
        f.write("Synthetic scans written by lazytrain.lidar.synthetic (not the real SemanticKITTI).\n")
    todo = [seq for seq in sequences if not os.path.isdir(os.path.join(base, seq))]
    progress = Progress("Synthetic scans", len(todo) * scans, unit="scan", logger=logger)
    for seq in todo:
        final = os.path.join(base, seq)
        tmp = os.path.join(base, f".tmp-{seq}-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(os.path.join(tmp, "velodyne"))
        if labels:
            os.makedirs(os.path.join(tmp, "labels"))
        for i in range(scans):
            points, raw = make_scan(seed, seq, i, columns)
            points.tofile(os.path.join(tmp, "velodyne", f"{i:06d}.bin"))
            if labels:
                raw.tofile(os.path.join(tmp, "labels", f"{i:06d}.label"))
            progress.step(note=f"sequence {seq}")
        _write_metadata(tmp, scans)
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished the same (identical) sequence first
            shutil.rmtree(tmp, ignore_errors=True)
    progress.done()


def _write_metadata(folder: str, scans: int) -> None:
    identity = "1 0 0 0 0 1 0 0 0 0 1 0"
    with open(os.path.join(folder, "calib.txt"), "w", encoding="utf-8") as f:
        for name in ("P0", "P1", "P2", "P3"):
            f.write(f"{name}: 718.856 0 607.1928 0 0 718.856 185.2157 0 0 0 1 0\n")
        f.write(f"Tr: {identity}\n")
    with open(os.path.join(folder, "poses.txt"), "w", encoding="utf-8") as f:
        for i in range(scans):
            f.write(f"1 0 0 {i * 1.0:.1f} 0 1 0 0 0 0 1 0\n")
    with open(os.path.join(folder, "times.txt"), "w", encoding="utf-8") as f:
        for i in range(scans):
            f.write(f"{i * 0.1:.6e}\n")
