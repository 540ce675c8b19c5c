"""The benchmark tools under tools/ run and print what docs/benchmarks.md reads (figures are not asserted:
speed is measured by running the tools, never by timed tests)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from conftest import REPO, cli_env

sys.path.insert(0, str(REPO / "tools"))


def tool(*args: str) -> str:
    env = cli_env()
    env["CUDA_VISIBLE_DEVICES"] = ""  # the CPU cases; on a GPU machine the CUDA cases would take minutes
    r = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_bench_overhead_prints_each_trainer_beside_the_control():
    out = tool("tools/bench_overhead.py", "--case", "tiny", "--repeats", "1", "--iters", "30", "--threads", "1")
    assert "tiny MLP on cpu, 30 it x 1 repeats" in out
    rows = {line.split()[0] for line in out.splitlines() if line.startswith("  ") and " ms " in line}
    assert {"lazytrain", "lazytrain*", "A/A"} <= rows


def test_bench_overhead_ddp_case_runs_both_loops_in_one_process_group():
    out = tool("tools/bench_overhead.py", "--case", "ddp", "--repeats", "1", "--iters", "30")
    assert "2-process DDP on cpu" in out
    rows = {line.split()[0] for line in out.splitlines() if line.startswith("  ") and " ms " in line}
    assert rows == {"lazytrain", "A/A"}


def test_bench_data_compares_loader_and_model_rates():
    out = tool("tools/bench_data.py", "--width", "128", "--batches", "2", "--workers", "0", "--steps", "1",
               "--model-width", "8", "--model-depth", "2", "--stage-repeats", "1")  # fmt: skip
    assert "loader, 0 workers:" in out and "model train step" in out
    for stage in ("read .bin", "augmentation", "projection (pixels", "label image", "collate", "scans/s per core"):
        assert stage in out


def test_bench_startup_times_the_cli():
    out = tool("tools/bench_startup.py", "--runs", "1")
    assert "lazytrain --help" in out and "lazytrain config configs/kitti_seg.py" in out


def test_bench_exit_times_a_case():
    out = tool("tools/bench_exit.py", "--runs", "1", "--case", "raise")
    assert "time from the fault to the launcher's exit" in out and "a rank raises (FailAt), 2 processes" in out


def test_bench_memory_prints_each_case_with_and_without_checkpointing(tmp_path):
    out = tool("tools/bench_memory.py", "--config", "configs/kitti_seg.py", f"dataset.root={tmp_path}",
               "dataset.synthetic_scans=1", "dataset.projection.width=64", "dataset.projection.height=16",
               "model.width=4", "model.depth=2", "dataloader.train.batch_size=2", "--steps", "1")  # fmt: skip
    row = next(line for line in out.splitlines() if line.startswith("| configs/kitti_seg.py"))
    assert "| (2, 5, 16, 64) | 6 (stem, down.0, down.1, up.0 ...) |" in row and row.count(" MiB") == 4
    assert "device: cpu" in out


class Sleeper:
    """A stand-in for the hand-written loop whose step takes a known time."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def step(self) -> None:
        time.sleep(self.seconds)


def test_interleave_charges_each_loop_its_own_step_time():
    from bench_overhead import Interleave

    interleave = Interleave(Sleeper(0.005), warmup=2)  # type: ignore[arg-type]
    for _ in range(12):  # the "trainer": a 10 ms step, then its callback
        time.sleep(0.010)
        interleave()
    trainer, hand = interleave.step_times()
    assert trainer / hand == pytest.approx(2.0, rel=0.3)
