"""A rank that is alive but stuck is named, with its iteration, frame and stack, instead of hanging the job."""

from __future__ import annotations

import ctypes
import subprocess
import time

import pytest
from conftest import train_toy
from toyproj.evaluator import AccuracyEvaluator
from toyproj.model import MLPClassifier

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


class SlowToSave(HookBase):
    """A hook whose state (saved in every checkpoint) takes ``seconds`` to gather: a save that takes long."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def state_dict(self) -> dict:
        time.sleep(self.seconds)
        return {}


class SlowToEvaluate(AccuracyEvaluator):
    """An evaluator whose ``evaluate()`` takes 3 s (a metric over a large confusion matrix, a gather)."""

    def evaluate(self):
        time.sleep(3)
        return super().evaluate()


class EvalForwardHangs(MLPClassifier):
    def forward(self, batch):
        while not self.training:
            time.sleep(0.05)
        return super().forward(batch)


class HoldsTheGilAt(HookBase):
    """At ``iteration``, on ``rank`` (None: every rank), calls C code that holds the GIL and does not return
    (libc's sleep through ctypes.PyDLL, which keeps the GIL): no Python thread of the process runs."""

    def __init__(self, iteration: int, rank: int | None = None) -> None:
        self.iteration, self.rank = iteration, rank

    def after_step(self) -> None:
        from lazytrain import comm

        if self.trainer.iter == self.iteration and self.rank in (None, comm.get_rank()):
            ctypes.PyDLL(None).sleep(600)


def run(tmp_path, hook: str, *args: str, body: str = "", timeout: float = 240) -> subprocess.CompletedProcess:
    # generous: it guards against the 1800 s process-group timeout, not for speed (figures: docs/benchmarks.md)
    config = f"from test_watchdog import *\nhooks = [{hook}]\n" + body
    return train_toy(
        tmp_path, config, "train.hang_timeout=2", "train.max_iter=20", *args, name="stuck.py", timeout=timeout
    )


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


@pytest.mark.parametrize("slow", ["evaluate", "save"])
def test_a_long_evaluate_or_checkpoint_save_is_work_not_a_hang(tmp_path, slow):
    hook, body = ("", "evaluator._target_ = SlowToEvaluate\n") if slow == "evaluate" else ("L(SlowToSave)(3)", "")
    # 3 s in one call with train.hang_timeout=2: a save or evaluate() may take up to 10 x that
    r = run(tmp_path, hook, "train.max_iter=4", "train.eval_period=2", "train.checkpoint_period=2", body=body)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "out" / "checkpoints" / "model_final.pth").is_file()


def test_a_final_evaluation_that_hangs_is_named_as_the_end_of_training(tmp_path):
    r = run(tmp_path, "", "train.max_iter=4", "train.eval_period=0", body="model._target_ = EvalForwardHangs\n",
            timeout=120)  # fmt: skip
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: rank 0 is stuck after iteration 4, at the end of training in "), last
    assert "in forward: no progress for" in last


def test_a_rank_holding_the_gil_in_c_code_still_dumps_its_stack_and_ends(tmp_path):
    r = run(tmp_path, "L(HoldsTheGilAt)(iteration=3)", timeout=120)
    assert r.returncode == 1
    assert "Timeout (" in r.stderr and "most recent call first" in r.stderr  # faulthandler's C thread
    assert "in after_step" in r.stderr.split("Timeout (")[1]  # the frame that holds the GIL
