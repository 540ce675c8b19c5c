"""Time from a fault to the launcher's exit, on the toy project (examples/toy_project/configs/toy.py): a SIGTERM
to one process and to the launcher of two (each saves a checkpoint and exits 75), a rank that raises
(tests/dist_helpers.py FailAt), a rank SIGKILLed, and a hung rank with train.hang_timeout=5 (there: the time
beyond the timeout). Median of --runs runs, each a new command; what docs/benchmarks.md records.

    python tools/bench_exit.py --runs 5
    python tools/bench_exit.py --runs 1 --case raise
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Optional

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
TOY = os.path.join(REPO, "examples", "toy_project")
sys.path.insert(0, os.path.join(REPO, "tests"))  # dist_helpers, here and in the runs' processes

from dist_helpers import FailAt  # noqa: E402

from lazytrain import comm  # noqa: E402
from lazytrain.engine import HookBase  # noqa: E402

FAULT_AT = 5  # the iteration after which the fault happens
HANG_TIMEOUT = 5

# name: (what the table calls it, processes, fault hook or None for a signal, expected exit code)
CASES = {
    "sigterm-1": ("SIGTERM, 1 process (checkpoint, exit 75)", 1, None, 75),
    "sigterm-2": ("SIGTERM to the launcher, 2 processes (checkpoint, exit 75)", 2, None, 75),
    "raise": ("a rank raises (FailAt), 2 processes", 2, "raise", 1),
    "kill": ("a rank is SIGKILLed, 2 processes", 2, "kill", 1),
    "hang": (f"a rank hangs, 2 processes: beyond train.hang_timeout={HANG_TIMEOUT}", 2, "hang", 1),
}


class Announce(HookBase):
    """Prints each finished iteration (the signal cases send theirs after iteration FAULT_AT) and slows the
    steps a little, so that a signal lands while training runs."""

    def after_step(self) -> None:
        print(f"finished {self.trainer.iter}", flush=True)
        time.sleep(0.02)


class TimedFault(FailAt):
    """FailAt that prints the wall time of its fault first; ``how="hang"`` loops forever instead."""

    def after_step(self) -> None:
        if self.trainer.iter != self.iteration or (self.rank is not None and comm.get_rank() != self.rank):
            return
        print(f"fault at {time.time():.6f}", flush=True)
        if self.how == "hang":
            while True:
                time.sleep(0.05)
        super().after_step()


def run_once(case: str, folder: str) -> float:
    """Seconds from the fault to the launcher's exit (for the hang: beyond the timeout)."""
    _, procs, how, expected = CASES[case]
    config = os.path.join(folder, f"{case}.py")
    hooks = ["L(Announce)()"]
    if how is not None:
        hooks.append(f"L(TimedFault)(iteration={FAULT_AT}, rank=1, how={how!r})")
    with open(config, "w") as f:
        f.write(
            f"import sys\nsys.path.insert(0, {os.path.join(TOY, 'configs')!r})\n"
            "from toy import *\nfrom lazytrain.config import L\nfrom bench_exit import Announce, TimedFault\n"
            f"hooks = [{', '.join(hooks)}]\n"
        )
    env = dict(os.environ)
    paths = [TOY, REPO, os.path.join(REPO, "tools"), os.path.join(REPO, "tests"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["CUDA_VISIBLE_DEVICES"] = ""  # gloo on the CPU, as the tests
    cmd = [
        sys.executable, "-m", "lazytrain.cli", "train", config, "--num-procs", str(procs),
        "train.max_iter=100000", "train.eval_period=0", "train.checkpoint_period=100000",
        f"train.hang_timeout={HANG_TIMEOUT if how == 'hang' else 300}",
        f"--output-dir={os.path.join(folder, case + '-out')}",
        "--overwrite",  # each run a new one: the folder holds the previous run's checkpoint
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    fault: Optional[float] = None
    assert proc.stdout is not None
    for line in proc.stdout:
        if how is None and fault is None and line.strip() == f"finished {FAULT_AT}":
            fault = time.time()
            proc.send_signal(signal.SIGTERM)
        elif line.startswith("fault at ") and fault is None:
            fault = float(line.split()[-1])
    _, stderr = proc.communicate()
    end = time.time()
    if proc.returncode != expected or fault is None:
        raise SystemExit(f"{case}: exit code {proc.returncode} (expected {expected}):\n{stderr[-3000:]}")
    return end - fault - (HANG_TIMEOUT if how == "hang" else 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--case", action="append", choices=list(CASES), help="only these cases (default: all)")
    args = parser.parse_args()
    cases = args.case or list(CASES)
    print(f"time from the fault to the launcher's exit, toy project, median of {args.runs} runs (min-max):")
    with tempfile.TemporaryDirectory(prefix="lazytrain-bench-exit-") as folder:
        for case in cases:
            times = [run_once(case, folder) for _ in range(args.runs)]
            name = CASES[case][0]
            print(f"  {name:<62}{statistics.median(times):6.2f} s  ({min(times):.2f}-{max(times):.2f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
