"""Data throughput: SemanticKITTI scans per second through lazytrain's train loader (memory-mapped read, label
map, augmentation, range projection, collate) with 0, 2 and 4 workers, against the model's training step
rate, so you know whether data or compute bounds a run.

    python tools/bench_data.py                                  # synthetic scans, the flagship's 64 x 512 setup
    python tools/bench_data.py --root /data/SemanticKITTI --width 2048 --model-width 32 --model-depth 4
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from lazytrain.data import build_train_loader
from lazytrain.lidar import RangeNet, SemanticKittiDataset, collate_scans


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
    parser.add_argument("--width", type=int, default=512, help="range image width (2048 on the real sensor)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2, 4])
    parser.add_argument("--model-width", type=int, default=16)
    parser.add_argument("--model-depth", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or os.path.join(tmp, "kitti")
        dataset = SemanticKittiDataset(root, sequences=["00"], width=args.width, augment=True,
                                       synthetic_scans=0 if args.root else 16)  # fmt: skip
        points = sum(os.path.getsize(s.points_path) // 16 for s in dataset.scans[:16]) / min(16, len(dataset))
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        print(f"# {len(dataset)} scans of ~{points:.0f} points, image 64 x {args.width}, batch {args.batch_size}, "
              f"{os.cpu_count()} CPUs, torch {torch.__version__}, model on {device}")  # fmt: skip
        for workers in args.workers:
            rate = scans_per_second(dataset, args.batch_size, workers, args.batches)
            print(f"  loader, {workers} workers: {rate:8.1f} scans/s")
        rate = model_scans_per_second(dataset, args.batch_size, args.model_width, args.model_depth, args.steps, device)
        print(f"  model train step (RangeNet width {args.model_width}, depth {args.model_depth}): {rate:8.1f} scans/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
