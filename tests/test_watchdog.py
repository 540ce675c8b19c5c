"""A rank that is alive but stuck is named, with its iteration, frame and stack, instead of hanging the job."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest
from conftest import TOY, cli_env

from lazytrain.engine import HookBase


class StuckAt(HookBase):
    """At ``iteration``, on ``rank`` (None: every rank), loops forever (a hook with an endless loop)."""

    def __init__(self, iteration: int, rank: int | None = None) -> None:
        self.iteration, self.rank = iteration, rank

    def after_step(self) -> None:
        from lazytrain import comm

        if self.trainer.iter == self.iteration and self.rank in (None, comm.get_rank()):
            while True:
                time.sleep(0.05)


def run(tmp_path, hook: str, *args: str) -> subprocess.CompletedProcess:
    folder = tmp_path / "configs"
    folder.mkdir()
    shutil.copy(TOY / "configs" / "toy.py", folder / "toy.py")
    (folder / "stuck.py").write_text(
        f"from .toy import *\nfrom lazytrain.config import L\nfrom test_watchdog import StuckAt\nhooks = [{hook}]\n"
    )
    env = cli_env()
    env["PYTHONPATH"] += os.pathsep + os.path.dirname(os.path.abspath(__file__))
    env["CUDA_VISIBLE_DEVICES"] = ""
    # generous: it guards against the 1800 s process-group timeout, not for speed (figures: docs/benchmarks.md)
    return subprocess.run(
        [sys.executable, "-m", "lazytrain.cli", "train", str(folder / "stuck.py"), "train.hang_timeout=2",
         "train.max_iter=20", f"--output-dir={tmp_path / 'out'}", *args],
        capture_output=True, text=True, env=env, timeout=240,
    )  # fmt: skip


def test_a_stuck_hook_is_named_with_its_iteration_frame_and_stack(tmp_path):
    r = run(tmp_path, "L(StuckAt)(iteration=3)")
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    # trainer.iter == 3: the 4th iteration
    assert last.startswith("error: rank 0 is stuck at iteration 4 in ") and "in after_step: no progress for" in last
    assert "test_watchdog.py:" in last and "(train.hang_timeout=2)" in last
    assert "Most recent call first" in r.stderr or "most recent call first" in r.stderr  # faulthandler's dump
    assert r.stderr.count("error: ") == 1
    log = (tmp_path / "out" / "log.txt").read_text()
    assert "rank 0 made no progress for " in log and "time.sleep(0.05)" in log  # the main thread's stack, in log.txt
    assert last[len("error: ") :] in log


def test_hang_timeout_zero_disables_the_watchdog(toy_config):
    from lazytrain.engine import build_hooks

    names = [type(h).__name__ for h in build_hooks(toy_config("train.hang_timeout=0"))]
    assert "HangWatchdog" not in names and "HangWatchdog" in [type(h).__name__ for h in build_hooks(toy_config())]


@pytest.mark.parametrize("stuck_rank", [1])
def test_under_num_procs_the_stuck_rank_is_named_and_the_job_stops(tmp_path, stuck_rank):
    r = run(tmp_path, f"L(StuckAt)(iteration=3, rank={stuck_rank})", "--num-procs", "2")
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert f"rank {stuck_rank} is stuck at iteration 4 in " in last and "in after_step" in last, r.stderr[-3000:]
    assert "the other ranks waited for it in a collective" in last
    assert r.stderr.count("error: ") == 1  # said once (by the launcher), not by every rank too
    # log.txt (rank 0's) has what the paragraph promises: every rank's stack, the stuck one's frame in it
    log = (tmp_path / "out" / "log.txt").read_text()
    assert "rank 0 made no progress for " in log and f"rank {stuck_rank} made no progress for " in log
    assert "time.sleep(0.05)" in log.split(f"rank {stuck_rank} made no progress for ")[1]
    assert last[len("error: ") :] in log
