"""Shared fixtures: the example project is importable, and configs load the way the CLI loads them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TOY = REPO / "examples" / "toy_project"
sys.path.insert(0, str(TOY))

# Tests of the CUDA paths run where a GPU is present (`python -m pytest -k cuda` on a GPU machine) and are
# skipped elsewhere; most are the CPU tests, parametrized over the device.
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DEVICES = ["cpu", pytest.param("cuda", marks=requires_cuda)]


def load_config(path: str | os.PathLike, *overrides: str):
    """What `lazytrain train PATH OVERRIDES...` builds before it trains."""
    from lazytrain.engine import load_run_config

    return load_run_config(path, overrides)


@pytest.fixture
def toy_config(tmp_path):
    """The example project's config, writing into a temp folder, small enough for a unit test."""

    def make(*overrides: str):
        return load_config(
            TOY / "configs" / "toy.py", f"train.output_dir={tmp_path / 'out'}", "train.max_iter=10", *overrides
        )

    return make


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TOY), str(REPO), env.get("PYTHONPATH", "")])
    return env


@pytest.fixture
def log_lines():
    """What lazytrain logs during the test (its loggers, and 'py.warnings' once captured), as
    ``"<LEVEL> <logger>: <message>"`` lines."""
    import logging

    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(f"{record.levelname} {record.name}: {record.getMessage()}")

    handler = Collect(logging.DEBUG)
    loggers = [logging.getLogger(name) for name in ("lazytrain", "py.warnings")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    yield lines
    for lg, level in zip(loggers, levels):
        lg.removeHandler(handler)
        lg.setLevel(level)


def train_toy(
    tmp_path: Path, body: str, *args: str, name: str = "exp.py", timeout: float = 300
) -> subprocess.CompletedProcess:
    """`lazytrain train` of a config ``name`` in ``tmp_path/configs`` that is the toy config plus ``body`` (the
    tests folder importable, so ``body`` may import the tests' hooks and models), into ``tmp_path/out``, on the
    CPU; ``args``: more overrides."""
    folder = tmp_path / "configs"
    folder.mkdir(exist_ok=True)
    shutil.copy(TOY / "configs" / "toy.py", folder / "toy.py")
    (folder / name).write_text("from .toy import *\nfrom lazytrain.config import L\n" + body)
    env = cli_env()
    env["PYTHONPATH"] += os.pathsep + os.path.dirname(os.path.abspath(__file__))
    env["CUDA_VISIBLE_DEVICES"] = ""
    return subprocess.run(
        [sys.executable, "-m", "lazytrain.cli", "train", str(folder / name), f"--output-dir={tmp_path / 'out'}", *args],
        capture_output=True, text=True, env=env, timeout=timeout,
    )  # fmt: skip


def last_line(r: subprocess.CompletedProcess) -> str:
    """The closing line of a command's stderr."""
    return r.stderr.strip().splitlines()[-1]
