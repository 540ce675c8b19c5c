"""What a run folder records can be trusted: config.yaml is how the run was trained, whatever ran after it."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import TOY, cli_env

CONFIG = str(TOY / "configs" / "toy.py")


def lazytrain(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lazytrain.cli", *args], capture_output=True, text=True, env=cli_env())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "toy"
    r = lazytrain("train", CONFIG, "train.max_iter=4", "train.eval_period=0", f"--output-dir={out}")
    assert r.returncode == 0, r.stderr
    return out


def test_eval_after_train_leaves_config_yaml_byte_identical(trained):
    before = (trained / "config.yaml").read_bytes()
    r = lazytrain("eval", CONFIG, "--weights", str(trained / "checkpoints" / "model_final.pth"),
                  f"--output-dir={trained}", "train.max_iter=300", "train.log_period=100")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (trained / "config.yaml").read_bytes() == before
    assert b"max_iter: 4\n" in before


def test_a_train_that_fails_at_start_up_leaves_config_yaml_as_it_was(trained):
    before = (trained / "config.yaml").read_bytes()
    # the build fails (a layer of negative width) after the output folder exists
    r = lazytrain("train", CONFIG, "model.hidden=-5", "train.max_iter=7", f"--output-dir={trained}")
    assert r.returncode != 0
    assert (trained / "config.yaml").read_bytes() == before


def test_a_train_that_fails_at_start_up_writes_no_config_yaml(tmp_path):
    r = lazytrain("train", CONFIG, "model.hidden=-5", f"--output-dir={tmp_path / 'out'}")
    assert r.returncode != 0
    assert not (tmp_path / "out" / "config.yaml").exists()
