"""``lazytrain config CONFIG --where [KEY]``: where each value was set."""

from __future__ import annotations

import subprocess
import sys

from conftest import cli_env


def where(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lazytrain.cli", "config", str(tmp_path / "exp.py"), *args],
                          capture_output=True, text=True, env=cli_env(), cwd=tmp_path)  # fmt: skip


def write_configs(tmp_path):
    (tmp_path / "common").mkdir()
    (tmp_path / "common" / "__init__.py").write_text("")
    (tmp_path / "common" / "base.py").write_text(
        "data = dict(num_classes=4, width=8)\n"
        "model = dict(\n    hidden=32,\n    classes='${data.num_classes}',\n)\n"
        "train = dict(max_iter=10)\n"
    )
    (tmp_path / "exp.py").write_text("from .common.base import data, model, train\n\nmodel.hidden = 64\n")


def test_where_follows_imports_later_assignments_interpolations_and_defaults(tmp_path):
    write_configs(tmp_path)
    r = where(tmp_path, "--where", "model.hidden")
    assert r.stdout.strip() == "model.hidden = 64: exp.py:3", r.stderr  # the importing file's later assignment
    r = where(tmp_path, "--where", "data.width")
    assert r.stdout.strip() == "data.width = 8: common/base.py:1"
    r = where(tmp_path, "--where", "model.classes")
    assert r.stdout.strip() == (
        "model.classes = 4: common/base.py:4: interpolation ${data.num_classes}, whose value comes from: "
        "common/base.py:1"
    )
    r = where(tmp_path, "--where", "train.seed")
    assert r.stdout.strip() == "train.seed = 0: default of train settings (README: Run settings)"
    r = where(tmp_path, "--where", "train.max_iter")
    assert r.stdout.strip() == "train.max_iter = 10: common/base.py:6"


def test_where_names_the_command_line_and_lists_what_overrides_changed(tmp_path):
    write_configs(tmp_path)
    r = where(tmp_path, "model.hidden=128", "train.seed=3", "--where", "model.hidden")
    assert r.stdout.strip() == "model.hidden = 128: command line"
    r = where(tmp_path, "model.hidden=128", "train.seed=3", "--where")
    assert r.stdout.strip().splitlines() == ["model.hidden = 128: command line", "train.seed = 3: command line"]


def test_where_an_unknown_key_suggests(tmp_path):
    write_configs(tmp_path)
    r = where(tmp_path, "--where", "model.hiden")
    assert (
        r.returncode == 2 and r.stderr.strip() == "error: model.hiden: no such config key. Did you mean 'model.hidden'?"
    )


def test_where_followed_by_an_override_takes_it_as_an_override_and_lists_what_it_changed(tmp_path):
    write_configs(tmp_path)
    r = where(tmp_path, "--where", "model.hidden=128")
    assert (r.returncode, r.stdout.strip()) == (0, "model.hidden = 128: command line"), r.stderr
    r = where(tmp_path, "model.hidden=1", "--where", "model.hidden=2", "train.seed=3")
    assert r.stdout.strip().splitlines() == ["model.hidden = 2: command line", "train.seed = 3: command line"]
