"""Promises about the package's shape: the engine never imports the flagship's domain code, and the CLI
starts without importing torch."""

from __future__ import annotations

import subprocess
import sys

from conftest import cli_env


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env())


def test_engine_does_not_import_the_lidar_package():
    r = python(
        "import sys\n"
        "import lazytrain.engine, lazytrain.launch, lazytrain.export, lazytrain.data, lazytrain.evaluation\n"
        "import lazytrain.cli, lazytrain.checkpoint, lazytrain.events\n"
        "print(sorted(m for m in sys.modules if m.startswith('lazytrain.lidar')))"
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_cli_help_imports_neither_torch_nor_omegaconf():
    r = python(
        "import sys, contextlib, io\n"
        "import lazytrain.cli\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    lazytrain.cli.main(['--help'])\n"
        "print([m for m in ('torch', 'omegaconf', 'onnx', 'tensorboard') if m in sys.modules])"
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
