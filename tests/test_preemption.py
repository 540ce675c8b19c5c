"""Preemption: SIGTERM / SIGUSR1 / Ctrl-C finish the step, save, exit 75, and --resume repeats the
uninterrupted run's losses bit for bit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import TOY, cli_env

from lazytrain.engine import EXIT_PREEMPTED, HookBase

TESTS = os.path.dirname(os.path.abspath(__file__))
COMMON = ["train.max_iter=24", "train.log_period=1", "train.checkpoint_period=100", "train.deterministic=True",
          "model.dropout=0.2", "train.eval_period=0"]  # fmt: skip


class AnnounceSteps(HookBase):
    """Prints how many iterations are done (so the test knows when to send its signal) and slows the steps down."""

    def after_step(self) -> None:
        print(f"finished {self.trainer.iter + 1}", flush=True)
        time.sleep(0.05)


def env_with_tests(**extra: str) -> dict[str, str]:
    env = cli_env()
    env["PYTHONPATH"] += os.pathsep + TESTS
    env["CUDA_VISIBLE_DEVICES"] = ""
    env.update(extra)
    return env


def config(tmp_path) -> str:
    path = tmp_path / "slow.py"
    path.write_text(
        f"import sys\nsys.path.insert(0, {str(TOY / 'configs')!r})\n"
        "from toy import *\nfrom lazytrain.config import L\nfrom test_preemption import AnnounceSteps\n"
        "hooks = [L(AnnounceSteps)()]\n"
    )
    return str(path)


def train(cfg: str, out, *args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lazytrain.cli", "train", cfg, *COMMON, f"--output-dir={out}", *args],
                          capture_output=True, text=True, env=env or env_with_tests(), timeout=300)  # fmt: skip


def losses(out) -> dict[int, float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["iteration"]: r["total_loss"] for r in rows if "total_loss" in r}


def interrupt(cfg: str, out, signum: int, after: int, env=None) -> tuple[int, str, str]:
    """Start a run, send ``signum`` once ``after`` iterations are done, return (exit code, stdout, stderr)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "lazytrain.cli", "train", cfg, *COMMON, f"--output-dir={out}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env or env_with_tests(),
    )  # fmt: skip
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.strip() == f"finished {after}":
            proc.send_signal(signum)
            break
    stdout, stderr = proc.communicate(timeout=300)
    return proc.returncode, "".join(seen) + stdout, stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_a_checkpoint_and_resume_repeats_the_losses(tmp_path, signum):
    cfg = config(tmp_path)
    full = train(cfg, tmp_path / "full")
    assert full.returncode == 0, full.stderr
    code, stdout, stderr = interrupt(cfg, tmp_path / "parts", signum, after=6)
    assert code == EXIT_PREEMPTED, stderr
    name = signal.Signals(signum).name
    assert f"error: stopped by {name} after iteration" in stderr and "--resume` continues" in stderr
    stopped = int(stderr.split("after iteration ")[1].split(" ")[0])  # iterations done
    log = (tmp_path / "parts" / "log.txt").read_text()
    assert f"]: stopped by {name} after iteration {stopped} " in log and "--resume` continues" in log
    assert f"stopped by {name}" not in stdout  # on the terminal once: the closing error line
    assert f"Trained {stopped} iterations in " in stdout
    assert stopped >= 6 and "(of 24)" in stderr  # the step in progress finished (the signal may land one later)
    assert (tmp_path / "parts" / "checkpoints" / f"model_{stopped:07d}.pth").exists()
    assert (tmp_path / "parts" / "checkpoints" / "last_checkpoint").read_text() == f"model_{stopped:07d}.pth"
    assert max(losses(tmp_path / "parts")) == stopped  # nothing of a later iteration was logged

    resumed = train(cfg, tmp_path / "parts", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"finished {stopped}\n" not in resumed.stdout and f"finished {stopped + 1}\n" in resumed.stdout
    a, b = losses(tmp_path / "full"), losses(tmp_path / "parts")
    assert sorted(b) == list(range(1, 25))
    assert [a[i] for i in range(1, 25)] == [b[i] for i in range(1, 25)]  # to the last bit


def test_sigusr1_under_slurm_requeues_the_job_after_saving(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "scontrol.args"
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" > {record}\n')
    (bin_dir / "scontrol").chmod(0o755)
    env = env_with_tests(SLURM_JOB_ID="4242", SLURM_PROCID="0", SLURM_NTASKS="1")
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    code, stdout, stderr = interrupt(config(tmp_path), tmp_path / "run", signal.SIGUSR1, after=3, env=env)
    assert code == EXIT_PREEMPTED, stderr
    assert record.read_text().split() == ["requeue", "4242"]
    assert "requeued SLURM job 4242" in stdout


def second_ctrl_c(tmp_path, *overrides: str) -> tuple[int, str]:
    """A run whose hook hangs after iteration 3, sent Ctrl-C twice: (exit code, stderr)."""
    (tmp_path / "hang.py").write_text(
        f"import sys\nsys.path.insert(0, {str(TOY / 'configs')!r})\n"
        "from toy import *\nfrom lazytrain.config import L\nfrom test_preemption import HangsAt\n"
        "hooks = [L(HangsAt)()]\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "lazytrain.cli", "train", str(tmp_path / "hang.py"), f"--output-dir={tmp_path / 'o'}",
         *overrides],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_with_tests(),
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if "hanging" in line:
            break
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    return proc.returncode, stderr


def test_a_second_ctrl_c_stops_at_once(tmp_path):
    """The escape hatch when the step itself hangs: the second Ctrl-C raises KeyboardInterrupt (exit 130)."""
    code, stderr = second_ctrl_c(tmp_path)
    assert code == 130, stderr
    assert stderr.strip().splitlines()[-1] == "interrupted: no checkpoint yet"


def test_a_second_ctrl_c_names_the_last_checkpoint_on_disk(tmp_path):
    code, stderr = second_ctrl_c(tmp_path, "train.checkpoint_period=1")
    assert code == 130, stderr
    last = tmp_path / "o" / "checkpoints" / "model_0000003.pth"  # written before the hook hangs after iteration 3
    assert stderr.strip().splitlines()[-1] == f"interrupted: no checkpoint written; the last one is {last}"


class HangsAt(HookBase):
    def after_step(self) -> None:
        if self.trainer.iter == 2:
            print("hanging", flush=True)
            while True:
                time.sleep(0.1)


def test_sigterm_to_the_launcher_stops_every_rank_at_one_iteration_and_resume_repeats_the_losses(tmp_path):
    cfg = config(tmp_path)
    procs = ("--num-procs", "2")
    full = train(cfg, tmp_path / "full", *procs)
    assert full.returncode == 0, full.stderr
    proc = subprocess.Popen(
        [sys.executable, "-m", "lazytrain.cli", "train", cfg, *COMMON, f"--output-dir={tmp_path / 'parts'}", *procs],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_with_tests(),
    )  # fmt: skip
    for line in proc.stdout:
        if line.strip() == "finished 6":
            proc.send_signal(signal.SIGTERM)  # to the launcher only: it passes it on to the workers
            break
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_PREEMPTED, stderr
    assert stderr.strip().splitlines()[-1].startswith("error: stopped by SIGTERM after iteration ")
    stopped = int(stderr.split("after iteration ")[1].split(" ")[0])
    assert (tmp_path / "parts" / "checkpoints" / "last_checkpoint").read_text() == f"model_{stopped:07d}.pth"
    resumed = train(cfg, tmp_path / "parts", "--resume", *procs)
    assert resumed.returncode == 0, resumed.stderr
    a, b = losses(tmp_path / "full"), losses(tmp_path / "parts")
    assert [a[i] for i in range(1, 25)] == [b[i] for i in range(1, 25)]  # means over both ranks, to the last bit


def start(cfg: str, out, *args: str, env=None) -> subprocess.Popen:
    """A run in a session of its own: its process group holds the launcher (and, unless the launcher moves them
    out, its workers), as a shell's foreground job does."""
    return subprocess.Popen(
        [sys.executable, "-m", "lazytrain.cli", "train", cfg, *COMMON, f"--output-dir={out}", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env or env_with_tests(), start_new_session=True,
    )  # fmt: skip


def signal_after(proc: subprocess.Popen, after: int, send) -> tuple[str, str]:
    """Call ``send()`` once iteration ``after`` has finished; return (stdout, stderr) of the whole run."""
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.strip() == f"finished {after}":
            send()
            break
    stdout, stderr = proc.communicate(timeout=300)
    return "".join(seen) + stdout, stderr


def test_ctrl_c_in_the_terminal_under_num_procs_saves_and_resume_continues(tmp_path):
    """A terminal's Ctrl-C sends SIGINT to the whole foreground process group. The workers must get it once,
    through the launcher: then they finish the step, save and exit 75, as a single process does."""
    cfg = config(tmp_path)
    procs = ("--num-procs", "2")
    proc = start(cfg, tmp_path / "parts", *procs)
    _, stderr = signal_after(proc, 6, lambda: os.killpg(proc.pid, signal.SIGINT))
    assert proc.returncode == EXIT_PREEMPTED, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: stopped by SIGINT after iteration ") and "--resume` continues" in last
    stopped = int(last.split("after iteration ")[1].split(" ")[0])
    checkpoints = tmp_path / "parts" / "checkpoints"
    assert (checkpoints / "last_checkpoint").read_text() == f"model_{stopped:07d}.pth"
    assert not list(checkpoints.glob(".tmp-*"))
    resumed = train(cfg, tmp_path / "parts", "--resume", *procs)
    assert resumed.returncode == 0, resumed.stderr
    assert f"Resumed from {checkpoints / f'model_{stopped:07d}.pth'} at iteration {stopped}; " in resumed.stdout
    assert sorted(losses(tmp_path / "parts")) == list(range(1, 25))


def test_sigusr1_to_the_launcher_under_slurm_saves_and_requeues(tmp_path):
    """SLURM's --signal=USR1@120 warning reaches the launcher: it passes SIGUSR1 on, rank 0 saves and requeues."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "scontrol.args"
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {record}\n')
    (bin_dir / "scontrol").chmod(0o755)
    env = env_with_tests(SLURM_JOB_ID="4242", SLURM_PROCID="0", SLURM_NTASKS="1")  # one task: lazytrain launches
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    proc = start(config(tmp_path), tmp_path / "run", "--num-procs", "2", env=env)
    stdout, stderr = signal_after(proc, 3, lambda: proc.send_signal(signal.SIGUSR1))
    assert proc.returncode == EXIT_PREEMPTED, stderr
    assert stderr.strip().splitlines()[-1].startswith("error: stopped by SIGUSR1 after iteration ")
    assert record.read_text().splitlines() == ["requeue 4242"]  # once, by rank 0
    assert "requeued SLURM job 4242" in stdout and "received SIGINT" not in stdout


def test_under_torchrun_the_first_signal_promises_a_checkpoint_only_if_every_rank_gets_there(monkeypatch):
    """torchrun stops the surviving ranks of a failed job with SIGTERM too; a rank cannot tell that from a
    preemption, so it does not promise the checkpoint (under lazytrain's launcher it can: see test_launch)."""
    import logging

    from lazytrain import comm
    from lazytrain.engine import GracefulStop

    monkeypatch.delenv("LAZYTRAIN_ERROR_DIR", raising=False)
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())  # type: ignore[method-assign]
    log = logging.getLogger("lazytrain.engine.preemption")
    log.addHandler(handler)
    try:
        GracefulStop()._on_signal(signal.SIGTERM, None)
    finally:
        log.removeHandler(handler)
    assert messages == [
        "received SIGTERM: stopping after this step; a checkpoint follows if every rank reaches the end of the step."
    ]


class SignalsItselfInEvaluation:
    """A slow evaluator that sends its own process ``signal_name`` from process(), as a Ctrl-C or a scheduler's
    SIGTERM during a long final evaluation would."""

    def __init__(self, signal_name: str) -> None:
        self.signal_name = signal_name

    def reset(self) -> None:
        pass

    def process(self, inputs, outputs) -> None:
        os.kill(os.getpid(), getattr(signal, self.signal_name))
        time.sleep(5)  # the rest of a long evaluation, which the signal must cut short

    def evaluate(self) -> dict:
        return {"never": 1.0}


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM"])
def test_a_signal_during_the_final_evaluation_stops_it_after_the_final_checkpoint_and_exits_75(tmp_path, name):
    cfg = tmp_path / "eval_signal.py"
    cfg.write_text(
        f"import sys\nsys.path.insert(0, {str(TOY / 'configs')!r})\n"
        "from toy import *\nfrom lazytrain.config import L\nfrom test_preemption import SignalsItselfInEvaluation\n"
        f"evaluator = L(SignalsItselfInEvaluation)(signal_name={name!r})\n"
    )
    run = train(str(cfg), tmp_path / "o", "train.max_iter=4")
    assert run.returncode == EXIT_PREEMPTED, run.stderr
    final = tmp_path / "o" / "checkpoints" / "model_final.pth"
    assert final.is_file()
    closing = run.stderr.strip().splitlines()[-1]
    assert closing.startswith(
        f"error: stopped by {name} while the run was finishing. Training had finished after iteration 4 (of 4): "
        f"the final checkpoint {final} was written; nothing more."
    )
    assert "'never'" not in run.stdout + run.stderr
