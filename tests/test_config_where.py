"""``lazytrain config CONFIG --where [KEY]``: where each value was set."""

from __future__ import annotations

import subprocess
import sys

import pytest
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


def test_where_prints_a_call_config_as_the_call(tmp_path):
    (tmp_path / "exp.py").write_text(
        "import torch\nfrom lazytrain.config import LazyCall as L\n\nmodel = L(torch.nn.Linear)(4, out_features=2)\n"
    )
    r = where(tmp_path, "--where", "model")
    assert r.stdout.strip() == "model = L(torch.nn.Linear)(out_features=2, in_features=4): exp.py:4", r.stderr


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


def line_of(tmp_path, monkeypatch, key: str, body: str, files: dict[str, str] | None = None) -> tuple:
    """Where key_line (what --where and type errors print) says ``key`` was set, in exp.py = ``body``."""
    from lazytrain.config import LazyConfig
    from lazytrain.config.provenance import key_line

    monkeypatch.chdir(tmp_path)
    for name, text in (files or {}).items():
        (tmp_path / name).write_text(text)
    (tmp_path / "exp.py").write_text(body)
    return key_line(LazyConfig.load(tmp_path / "exp.py", check=False), key)


def test_where_a_subscript_assignment_sets_a_key(tmp_path, monkeypatch):
    body = "train = dict(max_iter=10)\ntrain['seed'] = 7\nlayers = [dict(w=1)]\nlayers[0]['w'] = 2\n"
    assert line_of(tmp_path, monkeypatch, "train.seed", body) == ("exp.py", 2)
    assert line_of(tmp_path, monkeypatch, "train.max_iter", body) == ("exp.py", 1)
    assert line_of(tmp_path, monkeypatch, "layers.0.w", body) == ("exp.py", 4)


def test_where_update_sets_the_keys_it_names(tmp_path, monkeypatch):
    body = "optimizer = dict(lr=0.1, momentum=0.9, eps=1.0)\noptimizer.update(lr=0.2)\n"
    body += "optimizer.update(\n    {'eps': 2.0},\n)\n"
    assert line_of(tmp_path, monkeypatch, "optimizer.lr", body) == ("exp.py", 2)
    assert line_of(tmp_path, monkeypatch, "optimizer.momentum", body) == ("exp.py", 1)
    assert line_of(tmp_path, monkeypatch, "optimizer.eps", body) == ("exp.py", 4)


def test_where_assignments_inside_if_for_with_and_try(tmp_path, monkeypatch):
    body = (
        "import contextlib\n"
        "from lazytrain.config import L; model = L(dict)(width=1, depth=2, act='relu', bias=True)\n"
        "if model.width > 5:\n"
        "    model.width = 8\n"
        "else:\n"
        "    model.width = 4\n"
        "for _ in range(1):\n"
        "    model.depth = 3\n"
        "with contextlib.suppress(KeyError):\n"
        "    model.act = 'gelu'\n"
        "try:\n"
        "    pass\n"
        "except ValueError:\n"
        "    pass\n"
        "finally:\n"
        "    model.bias = False\n"
        "def helper():\n"
        "    model.depth = 99\n"
    )
    assert line_of(tmp_path, monkeypatch, "model.width", body) == ("exp.py", 6)
    assert line_of(tmp_path, monkeypatch, "model.depth", body) == ("exp.py", 8)  # not inside a function
    assert line_of(tmp_path, monkeypatch, "model.act", body) == ("exp.py", 10)
    assert line_of(tmp_path, monkeypatch, "model.bias", body) == ("exp.py", 16)


def test_where_follows_load_rel_into_the_file_it_loads(tmp_path, monkeypatch):
    base = "from lazytrain.config import L\nmodel = L(dict)(\n    width=2,\n    depth=3,\n)\ntrain = dict(max_iter=5)\n"
    body = (
        "from lazytrain.config import LazyConfig\n"
        "head = LazyConfig.load_rel('base-exp.py', 'model')\n"
        "net, train = LazyConfig.load_rel('base-exp.py', keys=('model', 'train'))\n"
        "common = LazyConfig.load_rel('base-exp.py')\n"
        "head.width = 4\n"
    )
    assert line_of(tmp_path, monkeypatch, "head.depth", body, {"base-exp.py": base}) == ("base-exp.py", 4)
    assert line_of(tmp_path, monkeypatch, "head.width", body, {"base-exp.py": base}) == ("exp.py", 5)
    assert line_of(tmp_path, monkeypatch, "net.depth", body, {"base-exp.py": base}) == ("base-exp.py", 4)
    assert line_of(tmp_path, monkeypatch, "train.max_iter", body, {"base-exp.py": base}) == ("base-exp.py", 6)
    assert line_of(tmp_path, monkeypatch, "common.model.width", body, {"base-exp.py": base}) == ("base-exp.py", 3)


@pytest.mark.parametrize("train_last", [True, False])
def test_where_and_a_bad_setting_name_the_file_whose_value_was_bound_last(tmp_path, train_last):
    (tmp_path / "common").mkdir()
    (tmp_path / "common" / "base.py").write_text("model = dict(hidden=4)\ntrain = dict(max_iter=10, log_period=-1)\n")
    (tmp_path / "common" / "train.py").write_text("# run\ntrain = dict(\n    max_iter=20,\n    log_period=0,\n)\n")
    imports = ["from .common.base import model, train", "from .common.train import train"]
    (tmp_path / "exp.py").write_text("\n".join(imports if train_last else imports[::-1]) + "\n")
    r = where(tmp_path, "train.log_period=1", "--where", "train.max_iter")
    expected = "train.max_iter = 20: common/train.py:3" if train_last else "train.max_iter = 10: common/base.py:2"
    assert r.stdout.strip() == expected, r.stderr
    r = where(tmp_path)
    expected = "common/train.py:4: train.log_period: must be an integer >= 1, got 0 (int)."
    if not train_last:
        expected = "common/base.py:2: train.log_period: must be an integer >= 1, got -1 (int)."
    assert (r.returncode, r.stderr) == (2, f"error: {expected}\n")
