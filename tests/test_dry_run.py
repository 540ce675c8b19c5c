"""``lazytrain train CONFIG --dry-run``: every stage of a run in seconds, one line each, nothing left behind."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time

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
    assert re.search(r"^dry run passed in [\d.]+ s since the command started", r.stdout, flags=re.M)
    folder = re.search(r"^dry run in (\S+) \(deleted afterwards\):", r.stdout, flags=re.M).group(1)
    assert not os.path.exists(folder) and not os.path.exists(tmp_path / "output")
    assert f"deleted {folder}; the run wrote nothing outside it" in r.stdout


def test_dry_run_prints_one_line_per_stage_and_its_total_counts_the_start_up(tmp_path):
    started = time.time()
    r = dry_run(str(TOY / "configs" / "toy.py"), cwd=tmp_path)
    measured = time.time() - started
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1 + 5 + 2, r.stdout  # the folder, the stages, the total and what was deleted
    assert not any("Evaluation at iteration" in line or "iter: " in line for line in lines)
    assert re.search(r"^  evaluate 2 test batches .* accuracy [\d.]+, num_samples 128$", r.stdout, flags=re.M)
    total = float(re.search(r"^dry run passed in ([\d.]+) s since the command started", r.stdout, flags=re.M)[1])
    stages = float(re.search(r"\(([\d.]+) s in the stages above", r.stdout)[1])
    assert stages < total <= measured + 0.1


def test_dry_run_names_what_it_kept_outside_the_output_folder(tmp_path):
    shutil.copy(TOY / "configs" / "toy.py", tmp_path / "toy.py")
    (tmp_path / "cached_blobs.py").write_text(
        "import logging\nfrom lazytrain.fileio import outside_run\nfrom toyproj.data import BlobsDataset\n"
        "class CachedBlobs(BlobsDataset):\n"
        "    def __init__(self, **kwargs):\n"
        "        super().__init__(**kwargs)\n"
        "        logging.getLogger('lazytrain.data').info('cached', extra=outside_run('/tmp/blob-cache', 'a cache'))\n"
    )
    (tmp_path / "cached.py").write_text(
        "from .toy import *\nfrom cached_blobs import CachedBlobs\n"
        "dataloader.train.dataset._target_ = CachedBlobs\nexport = None\n"
    )
    r = dry_run(str(tmp_path / "cached.py"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "; kept what the run wrote outside it, which the next run reuses: /tmp/blob-cache (a cache)" in r.stdout


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
