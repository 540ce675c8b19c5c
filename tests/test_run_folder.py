"""One output folder, one run: a rerun without --resume is refused (or --overwrite starts over), a second run
at the same time is refused, and --resume says what it cannot do in one paragraph."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TOY, cli_env
from toyproj.model import MLPClassifier

from lazytrain.engine import HookBase

CONFIG = str(TOY / "configs" / "toy.py")
TESTS = os.path.dirname(os.path.abspath(__file__))
TINY = ("train.max_iter=4", "train.log_period=1", "train.eval_period=0")


def lazytrain(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lazytrain.cli", *args], capture_output=True, text=True, env=env())


def env() -> dict[str, str]:
    environ = cli_env()
    environ["PYTHONPATH"] += os.pathsep + TESTS  # configs of these tests import WaitForFile from here
    return environ


class WaitForFile(HookBase):
    """After iteration ``at``: say so on stdout, then wait until ``path`` exists (so a test acts while the run
    is surely running)."""

    def __init__(self, path: str, at: int = 2) -> None:
        self.path, self.at = path, at

    def after_step(self) -> None:
        if self.trainer.iter + 1 == self.at:
            print(f"waiting at {self.at}", flush=True)
            deadline = time.monotonic() + 120  # a test that never writes the file fails, it does not hang
            while not os.path.exists(self.path) and time.monotonic() < deadline:
                time.sleep(0.05)


class DeeperClassifier(MLPClassifier):
    """The toy model with one more layer: its optimizer has another parameter group size."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.extra = torch.nn.Linear(4, 4)


def write_lock(folder: Path, pid: int, host: str | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    holder = {"pid": pid, "host": host or socket.gethostname(), "since": "2026-12-08 01:00:00 UTC",
              "command": "lazytrain train toy.py"}  # fmt: skip
    (folder / "run.lock").write_text(json.dumps(holder))


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def iterations(metrics: Path) -> list[int]:
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    return [row["iteration"] for row in rows if "total_loss" in row]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("first") / "toy"
    r = lazytrain("train", CONFIG, *TINY, f"--output-dir={out}")
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture
def run_folder(first_run, tmp_path):
    """A copy of the first run's folder, for a test to change."""
    out = tmp_path / "toy"
    shutil.copytree(first_run, out)
    return out


def test_a_second_train_in_the_same_folder_exits_2_and_leaves_the_first_run_as_it_was(run_folder):
    before = files_of(run_folder)
    r = lazytrain("train", CONFIG, "train.max_iter=6", f"--output-dir={run_folder}")
    assert r.returncode == 2, r.stderr
    message = r.stderr.strip()
    assert message.startswith(f"error: train.output_dir: {run_folder} already holds a run (checkpoints/ (")
    assert "metrics.jsonl, 1 TensorBoard events file)" in message
    assert "--resume" in message and "--overwrite" in message and "--output-dir=DIR" in message
    assert len(message.splitlines()) == 1 and "Traceback" not in r.stderr
    assert files_of(run_folder) == before  # no log line appended, no config.yaml written


def test_overwrite_starts_over_with_one_run_in_metrics_and_tensorboard(run_folder):
    first_log = (run_folder / "log.txt").read_text()
    r = lazytrain("train", CONFIG, "train.max_iter=3", "train.log_period=1", "train.eval_period=0",
                  f"--output-dir={run_folder}", "--overwrite")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert iterations(run_folder / "metrics.jsonl") == [1, 2, 3]
    assert len(list(run_folder.glob("events.out.tfevents.*"))) == 1
    assert "max_iter: 3\n" in (run_folder / "config.yaml").read_text()
    assert (run_folder / "log.txt.1").read_text() == first_log
    assert "--overwrite: removed the earlier run's checkpoints/ (" in (run_folder / "log.txt").read_text()


def test_resume_in_a_folder_that_holds_a_run_is_not_refused(run_folder):
    r = lazytrain("train", CONFIG, "train.max_iter=5", "train.log_period=1", "train.eval_period=0",
                  f"--output-dir={run_folder}", "--resume")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert iterations(run_folder / "metrics.jsonl") == [1, 2, 3, 4, 5]


def test_a_dry_run_writing_into_a_run_folder_is_refused_and_one_in_its_own_folder_is_not(run_folder):
    before = files_of(run_folder)
    r = lazytrain("train", CONFIG, "--dry-run", f"--output-dir={run_folder}")
    assert r.returncode == 2, r.stderr
    assert "already holds a run" in r.stderr and files_of(run_folder) == before
    # without --output-dir the dry run writes into a temporary folder: the run in train.output_dir is no matter
    r = lazytrain("train", CONFIG, "--dry-run", f"train.output_dir={run_folder}")
    assert r.returncode == 0, r.stderr
    assert files_of(run_folder) == before


def test_a_lock_held_by_a_live_process_makes_train_exit_2_naming_it(tmp_path):
    write_lock(tmp_path / "out", os.getpid())
    r = lazytrain("train", CONFIG, *TINY, f"--output-dir={tmp_path / 'out'}")
    assert r.returncode == 2, r.stderr
    assert f"another run is training in {tmp_path / 'out'} (pid {os.getpid()} on {socket.gethostname()}, since " \
        "2026-12-08 01:00:00 UTC: lazytrain train toy.py)" in r.stderr  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["run.lock"]  # nothing written


def test_a_lock_from_another_host_is_refused_with_a_hint_to_delete_it(tmp_path):
    write_lock(tmp_path / "out", 12345, host="some-other-node")
    r = lazytrain("train", CONFIG, *TINY, f"--output-dir={tmp_path / 'out'}")
    assert r.returncode == 2, r.stderr
    assert "pid 12345 on some-other-node" in r.stderr
    assert f"if that run is gone, delete {tmp_path / 'out' / 'run.lock'}" in r.stderr


def test_a_lock_of_a_dead_process_is_taken_over_with_a_log_line_and_removed_at_the_end(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # reaped: its pid names no process now
    write_lock(tmp_path / "out", gone.pid)
    r = lazytrain("train", CONFIG, *TINY, f"--output-dir={tmp_path / 'out'}")
    assert r.returncode == 0, r.stderr
    assert f"took over {tmp_path / 'out' / 'run.lock'}: the run that held it (pid {gone.pid} on " in r.stdout
    assert "is no longer running" in r.stdout
    assert not (tmp_path / "out" / "run.lock").exists()


def test_a_second_run_while_the_first_trains_exits_2_and_the_first_finishes_normally(tmp_path):
    go = tmp_path / "go"
    config = tmp_path / "waits.py"
    config.write_text(
        f"import sys\nsys.path.insert(0, {str(TOY / 'configs')!r})\n"
        "from toy import *\nfrom lazytrain.config import L\nfrom test_run_folder import WaitForFile\n"
        f"hooks = [L(WaitForFile)(path={str(go)!r})]\n"
    )
    out = tmp_path / "out"
    first = subprocess.Popen(
        [sys.executable, "-m", "lazytrain.cli", "train", str(config), *TINY, f"--output-dir={out}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(),
    )  # fmt: skip
    try:
        assert first.stdout is not None
        for line in first.stdout:
            if line.strip() == "waiting at 2":
                break
        second = lazytrain("train", str(config), *TINY, f"--output-dir={out}")
        go.write_text("")
        _, errors = first.communicate(timeout=120)
    finally:
        go.write_text("")
        if first.poll() is None:  # a failed assertion above: leave no run behind
            first.kill()
            first.wait()
    assert second.returncode == 2, second.stderr
    assert f"another run is training in {out} (pid {first.pid} on " in second.stderr
    assert first.returncode == 0, errors
    assert iterations(out / "metrics.jsonl") == [1, 2, 3, 4]
    assert not (out / "run.lock").exists()


def test_resume_into_the_folder_of_another_model_is_one_paragraph(run_folder, tmp_path):
    config = tmp_path / "deeper.py"
    config.write_text(
        f"import sys\nsys.path.insert(0, {str(TOY / 'configs')!r})\n"
        "from toy import *\nfrom test_run_folder import DeeperClassifier\n"
        "model = L(DeeperClassifier)(in_features=8, num_classes=4, hidden=32)\n"
    )
    before = files_of(run_folder)["metrics.jsonl"]
    r = lazytrain("train", str(config), *TINY, f"--output-dir={run_folder}", "--resume")
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: --resume: {run_folder} holds a run of another config: its checkpoint ")
    assert "was trained with another model or optimizer" in last
    assert "model._target_ ('toyproj.model.MLPClassifier' -> " in last
    assert f"({run_folder / 'config.yaml'})" in last and "--output-dir=DIR" in last and "train.init_checkpoint=" in last
    assert files_of(run_folder)["metrics.jsonl"] == before


def test_resume_of_a_finished_run_says_nothing_is_left_and_changes_no_file(run_folder):
    before = {name: data for name, data in files_of(run_folder).items() if name != "log.txt"}
    r = lazytrain("train", CONFIG, *TINY, "train.eval_period=2", f"--output-dir={run_folder}", "--resume")
    assert r.returncode == 0, r.stderr
    final = run_folder / "checkpoints" / "model_final.pth"
    assert f"--resume: nothing left to train: {final} is at iteration 4, train.max_iter. To train longer, raise " \
        "it: train.max_iter=8 --resume." in r.stdout  # fmt: skip
    assert "Evaluation" not in r.stdout and "Training done" not in r.stdout
    assert {name: data for name, data in files_of(run_folder).items() if name != "log.txt"} == before


def test_a_dry_run_into_a_folder_a_run_trains_in_exits_2_naming_it(tmp_path):
    write_lock(tmp_path / "out", os.getpid())
    r = lazytrain("train", CONFIG, "--dry-run", f"--output-dir={tmp_path / 'out'}")
    assert r.returncode == 2, r.stderr
    assert f"another run is training in {tmp_path / 'out'} (pid {os.getpid()} on " in r.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["run.lock"]
