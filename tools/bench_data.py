"""Data throughput: SemanticKITTI scans per second through lazytrain's train loader (read, label map,
augmentation, range projection, collate), per stage on one core and through the loader with 0, 2 and 4
workers, against the model's training step rate, so you know whether data or compute bounds a run.

    python tools/bench_data.py --width 2048 --density real    # synthetic scans of real density (~120k points)
    python tools/bench_data.py                                 # the flagship's 64 x 512 setup, ~58k points
    python tools/bench_data.py --root /data/SemanticKITTI --width 2048 --model-width 32 --model-depth 4

The per-stage table times each stage of ``SemanticKittiDataset.__getitem__`` on the same scans in this process
with one thread (the cost per scan of one loader worker); "scans/s per core" is 1000 / the total ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from lazytrain.data import build_train_loader
from lazytrain.lidar import RangeNet, SemanticKittiDataset, collate_scans
from lazytrain.lidar.dataset import keep_freed_memory
from lazytrain.lidar.projection import finite_rows
from lazytrain.lidar.semantic_kitti import map_labels, read_labels, read_points
from lazytrain.lidar.synthetic import REAL_DENSITY_COLUMNS, write_synthetic_kitti


class _Stages:
    """Adds the time since the last mark to a stage's list."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {}
        self.last = time.perf_counter()

    def start(self) -> None:
        self.last = time.perf_counter()

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.times.setdefault(name, []).append((now - self.last) * 1e3)
        self.last = now


def stage_times(dataset: SemanticKittiDataset, scans: int, repeats: int) -> dict[str, float]:
    """Median ms per scan of each stage, as ``__getitem__`` runs them (one thread, this process)."""
    keep_freed_memory()
    proj = dataset.projection
    clock = _Stages()
    for _ in range(repeats):
        for i in range(scans):
            scan = dataset.scans[i % len(dataset)]
            clock.start()
            points = read_points(scan.points_path)
            clock.mark("read .bin")
            labels = map_labels(read_labels(str(scan.label_path)), "")
            clock.mark("read .label + label map")
            finite_rows(points).all()
            clock.mark("finite check")
            points, labels = dataset._augment(points, labels)
            clock.mark("augmentation (drop-out, yaw, flip)")
            proj.pixels(points)
            clock.mark("(projection's first part: pixel of each point)")
            out = proj(points)
            clock.mark("projection (pixels, nearest point, normalised image)")
            label_image = np.zeros(out.mask.shape, dtype=np.int64)
            label_image[out.mask] = labels[out.pixel_point[out.mask]]
            torch.from_numpy(label_image), torch.from_numpy(out.image)
            clock.mark("label image")
        for i in range(0, scans - 3, 4):
            samples = [dataset[(i + k) % len(dataset)] for k in range(4)]
            clock.start()
            collate_scans(samples)
            clock.mark("collate (a batch of 4, per scan)")
    medians = {name: statistics.median(values) for name, values in clock.times.items()}
    medians["collate (a batch of 4, per scan)"] /= 4
    start = time.perf_counter()
    for _ in range(repeats):
        for i in range(scans):
            dataset[i % len(dataset)]
    medians["__getitem__ (the stages above but collate)"] = (time.perf_counter() - start) * 1e3 / (repeats * scans)
    return medians


def scans_per_second(dataset: SemanticKittiDataset, batch_size: int, workers: int, batches: int) -> float:
    loader = build_train_loader(dataset, batch_size, num_workers=workers, collate_fn=collate_scans)
    it = iter(loader)
    next(it)  # workers started, first batch ready
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    elapsed = time.perf_counter() - start
    it.close()
    return batches * batch_size / elapsed


def model_scans_per_second(dataset: SemanticKittiDataset, batch_size: int, width: int, depth: int, steps: int,
                           device: torch.device) -> float:  # fmt: skip
    model = RangeNet(num_classes=20, width=width, depth=depth).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = collate_scans([dataset[i % len(dataset)] for i in range(batch_size)])
    batch = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
    for step in range(steps + 2):
        if step == 2:  # after warm-up
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        loss = model(batch)["loss_ce"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", help="SemanticKITTI root (default: a temporary synthetic set)")
    parser.add_argument("--density", choices=["real", "light"], default="light",
                        help="synthetic scans: real (~120k points, as the HDL-64E) or light (~58k)")  # fmt: skip
    parser.add_argument("--width", type=int, default=512, help="range image width (2048 on the real sensor)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2, 4])
    parser.add_argument("--stage-repeats", type=int, default=3, help="passes over 16 scans for the stage table")
    parser.add_argument("--model-width", type=int, default=16)
    parser.add_argument("--model-depth", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="model steps (0: skip the model)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or os.path.join(tmp, "kitti")
        if not args.root:
            columns = REAL_DENSITY_COLUMNS if args.density == "real" else 1024
            write_synthetic_kitti(root, ["00"], 16, columns=columns)
        dataset = SemanticKittiDataset(root, sequences=["00"], width=args.width, augment=True)
        points = sum(os.path.getsize(s.points_path) // 16 for s in dataset.scans[:16]) / min(16, len(dataset))
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        print(f"# {len(dataset)} scans of ~{points:.0f} points, image 64 x {args.width}, batch {args.batch_size}, "
              f"{os.cpu_count()} CPUs, torch {torch.__version__}, numpy {np.__version__}, "
              f"model on {device}")  # fmt: skip
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        stages = stage_times(dataset, min(16, len(dataset)), args.stage_repeats)
        torch.set_num_threads(threads)
        print("  per scan, one core (median ms):")
        for name, ms in stages.items():
            print(f"    {name:54s} {ms:7.2f}")
        total = stages["__getitem__ (the stages above but collate)"] + stages["collate (a batch of 4, per scan)"]
        print(f"  scans/s per core (getitem + collate): {1000 / total:8.1f}")
        for workers in args.workers:
            rate = scans_per_second(dataset, args.batch_size, workers, args.batches)
            print(f"  loader, {workers} workers: {rate:8.1f} scans/s")
        if args.steps > 0:
            rate = model_scans_per_second(dataset, args.batch_size, args.model_width, args.model_depth, args.steps,
                                          device)  # fmt: skip
            print(
                f"  model train step (RangeNet width {args.model_width}, depth {args.model_depth}): {rate:8.1f} scans/s"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
