"""Start-up time of the CLI: `lazytrain --help`, `lazytrain config configs/kitti_seg.py`, beside
`python -c "import torch"` and `python -c "import lightning"` (median of several runs, each a new process).

    python tools/bench_startup.py --runs 7
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import time

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def timed(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    lazytrain = shutil.which("lazytrain")
    cli = [lazytrain] if lazytrain else [sys.executable, "-m", "lazytrain.cli"]
    cases = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "lazytrain --help": [*cli, "--help"],
        "lazytrain config configs/kitti_seg.py": [*cli, "config", "configs/kitti_seg.py"],
        'python -c "import torch"': [sys.executable, "-c", "import torch"],
    }
    if importlib.util.find_spec("lightning"):
        cases['python -c "import lightning"'] = [sys.executable, "-c", "import lightning"]
    for name, cmd in cases.items():
        timed(cmd, 1)  # warm the file cache
        print(f"  {name:<42}{timed(cmd, args.runs):7.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
