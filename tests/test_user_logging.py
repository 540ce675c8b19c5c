"""A user's own loggers (``logging.getLogger(__name__)`` in a hook, a dataset, a model) show on the terminal and
in log.txt under their own name, as lazytrain's do; installed packages' info lines stay out."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import sysconfig

import pytest
from conftest import TOY, cli_env

from lazytrain.engine.logger import setup_logger


def test_a_users_hook_logs_with_its_own_name_to_the_terminal_and_log_txt(tmp_path):
    package = tmp_path / "myproj"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "hooks.py").write_text(
        "import logging\nfrom lazytrain.engine import HookBase\n"
        "logger = logging.getLogger(__name__)\n"
        "class SaysHello(HookBase):\n"
        "    def before_train(self):\n"
        "        logger.info('hello from the hook at iteration %d', self.trainer.iter)\n"
        "        logger.debug('a debug line, for log.txt only')\n"
    )
    (tmp_path / "cfg.py").write_text(
        f"import sys\nsys.path.insert(0, {str(TOY / 'configs')!r})\n"
        "from toy import *\nfrom myproj.hooks import SaysHello\nhooks = [L(SaysHello)()]\n"
        "train.update(max_iter=2, log_period=1, checkpoint_period=0, eval_period=0)\n"
    )
    env = cli_env()
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    out = tmp_path / "out"
    command = [sys.executable, "-m", "lazytrain.cli", "train", str(tmp_path / "cfg.py"), f"--output-dir={out}"]
    r = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    line = next(line for line in r.stdout.splitlines() if "hello from the hook" in line)
    assert line.endswith(" myproj.hooks]: hello from the hook at iteration 0")
    log = (out / "log.txt").read_text()
    assert " myproj.hooks]: hello from the hook at iteration 0" in log
    assert "a debug line" not in r.stdout + log  # the logger's level (INFO, inherited) holds


@pytest.fixture
def restored_logging():
    """The loggers setup_logger configures, as they were: later tests do not write to this test's streams."""
    loggers = [logging.getLogger(name) for name in ("", "lazytrain", "fvcore", "py.warnings")]
    saved = [(lg, lg.level, lg.propagate, list(lg.handlers)) for lg in loggers]
    yield
    for lg, level, propagate, handlers in saved:
        for handler in [h for h in lg.handlers if h not in handlers]:
            lg.removeHandler(handler)
            handler.close()
        lg.setLevel(level)
        lg.propagate = propagate


def test_an_installed_packages_info_lines_stay_out_but_its_warnings_show(tmp_path, capsys, restored_logging):
    setup_logger(str(tmp_path))
    installed = os.path.join(sysconfig.get_paths()["purelib"], "somepkg", "core.py")
    mine = str(tmp_path / "mymodule.py")
    for name, path, level, text in [
        ("somepkg.core", installed, logging.INFO, "chatty info"),
        ("somepkg.core", installed, logging.WARNING, "a real warning"),
        ("mymodule", mine, logging.INFO, "my own info"),
    ]:
        logging.getLogger(name).handle(logging.LogRecord(name, level, path, 1, text, None, None))
    shown = capsys.readouterr().out
    assert "chatty info" not in shown and "somepkg.core WARNING]: a real warning" in shown
    assert "mymodule]: my own info" in shown
    assert "my own info" in (tmp_path / "log.txt").read_text()


def test_an_installed_project_shows_its_info_lines_once_the_user_sets_its_level(tmp_path, capsys, restored_logging):
    setup_logger(str(tmp_path))
    installed = os.path.join(sysconfig.get_paths()["purelib"], "myproject", "hooks.py")  # pip install .
    record = logging.LogRecord("myproject.hooks", logging.INFO, installed, 1, "my installed info", None, None)
    logging.getLogger("myproject.hooks").handle(record)
    assert "my installed info" not in capsys.readouterr().out  # as any installed package's info line
    logging.getLogger("myproject").setLevel(logging.INFO)
    logging.getLogger("myproject.hooks").handle(record)
    assert "myproject.hooks]: my installed info" in capsys.readouterr().out
    logging.getLogger("myproject").setLevel(logging.NOTSET)
