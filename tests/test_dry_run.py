"""``lazytrain train CONFIG --dry-run``: every stage of a run in seconds, one line each, nothing left behind."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

from conftest import TOY, cli_env


class BrokenEvaluator:
    def reset(self) -> None:
        pass

    def process(self, batch, outputs) -> None:
        raise IndexError("the evaluator indexes past the end")

    def evaluate(self) -> dict:
        return {}


def dry_run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = cli_env()
    env["PYTHONPATH"] += os.pathsep + os.path.dirname(os.path.abspath(__file__))
    return subprocess.run([sys.executable, "-m", "lazytrain.cli", "train", *args, "--dry-run"], capture_output=True,
                          text=True, env=env, timeout=300, cwd=cwd)  # fmt: skip


def test_dry_run_prints_each_stage_and_deletes_what_it_wrote(tmp_path):
    r = dry_run(str(TOY / "configs" / "toy.py"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    stages = re.findall(r"^  (build|train 2 steps|evaluate 2 test batches|checkpoint round trip|export check)",
                        r.stdout, flags=re.M)  # fmt: skip
    assert stages == ["build", "train 2 steps", "evaluate 2 test batches", "checkpoint round trip", "export check"]
    assert "model, optimizer, lr_scheduler, train_loader equal after resume" in r.stdout
    assert re.search(r"^dry run passed in [\d.]+ s$", r.stdout, flags=re.M)
    folder = re.search(r"^dry run in (\S+) \(deleted afterwards\):", r.stdout, flags=re.M).group(1)
    assert not os.path.exists(folder) and not os.path.exists(tmp_path / "output")
    assert f"deleted {folder}; what the config wrote elsewhere stays" in r.stdout


def test_dry_run_names_the_stage_an_evaluator_bug_breaks(tmp_path):
    shutil.copy(TOY / "configs" / "toy.py", tmp_path / "toy.py")
    (tmp_path / "broken.py").write_text(
        "from .toy import *\nfrom lazytrain.config import L\nfrom test_dry_run import BrokenEvaluator\n"
        "evaluator = L(BrokenEvaluator)()\n"
    )
    r = dry_run(str(tmp_path / "broken.py"))
    assert r.returncode == 1
    assert re.search(r"^  train 2 steps \(every hook\) +FAILED after", r.stdout, flags=re.M)
    assert "IndexError: the evaluator indexes past the end" in r.stderr


def test_dry_run_with_output_dir_keeps_the_files(tmp_path):
    r = dry_run(str(TOY / "configs" / "toy.py"), f"--output-dir={tmp_path / 'kept'}")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "kept" / "checkpoints" / "model_final.pth").exists() and (
        tmp_path / "kept" / "model.onnx"
    ).exists()
