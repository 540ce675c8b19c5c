"""One output folder, one run: a rerun without --resume is refused (or --overwrite starts over), a second run
at the same time is refused, and --resume says what it cannot do in one paragraph."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TOY, cli_env

CONFIG = str(TOY / "configs" / "toy.py")
TINY = ("train.max_iter=4", "train.log_period=1", "train.eval_period=0")


def lazytrain(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lazytrain.cli", *args], capture_output=True, text=True, env=cli_env())


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
