"""Preemption under --num-procs: exit 75 of a rank is a stop every rank agreed on, not a failure; the launcher
waits for every rank to finish its end of training, then exits 75."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from conftest import TOY
from test_preemption import env_with_tests

from lazytrain import comm
from lazytrain.engine import EXIT_PREEMPTED, HookBase


class SignalsItselfAt3SlowEndOnRank0(HookBase):
    """Every rank sends itself SIGTERM after iteration 3 (a preemption each sees, as under SLURM); rank 0 then
    takes a while in after_train (a final flush) and marks that it finished it."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def after_step(self) -> None:
        if self.trainer.iter == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    def after_train(self) -> None:
        if comm.get_rank() == 0:
            time.sleep(4)  # longer than the launcher's grace before SIGKILL
            with open(self.marker, "w") as f:
                f.write("done\n")


def test_a_preempted_rank_exiting_75_lets_the_others_finish_and_the_job_exits_75(tmp_path):
    marker = tmp_path / "rank0_after_train_done"
    cfg = tmp_path / "preempt.py"
    cfg.write_text(
        f"import sys\nsys.path.insert(0, {str(TOY / 'configs')!r})\n"
        "from toy import *\nfrom lazytrain.config import L\n"
        "from test_launch_preemption import SignalsItselfAt3SlowEndOnRank0\n"
        f"hooks = [L(SignalsItselfAt3SlowEndOnRank0)(marker={str(marker)!r})]\n"
    )
    out = tmp_path / "o"
    r = subprocess.run(
        [sys.executable, "-m", "lazytrain.cli", "train", str(cfg), "--num-procs", "2", "train.max_iter=50",
         "train.eval_period=0", f"--output-dir={out}"],
        capture_output=True, text=True, env=env_with_tests(), timeout=300,
    )  # fmt: skip
    assert r.returncode == EXIT_PREEMPTED, r.stderr
    assert marker.read_text() == "done\n"  # rank 0's after_train ran to its end
    assert "error: stopped by SIGTERM after iteration" in r.stderr
    last = (out / "checkpoints" / "last_checkpoint").read_text()
    assert (out / "checkpoints" / last).is_file()
