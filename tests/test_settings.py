"""Run settings: defaults, and every ``train`` value checked for type and range before anything is built."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import TOY, cli_env, load_config

from lazytrain.config import ConfigError


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.log_period=0", "train.log_period: must be an integer >= 1, got 0 (int)."),
        ("train.grad_accum=0", "train.grad_accum: must be an integer >= 1, got 0 (int)."),
        ("train.max_iter=2.5", "train.max_iter: must be an integer >= 1, got 2.5 (float)."),
        ("train.max_iter=abc", "train.max_iter: must be an integer >= 1, got 'abc' (str)."),
        ("train.max_iter=true", "train.max_iter: must be an integer >= 1, got True (bool)."),
        ("train.checkpoint_period=-5", "train.checkpoint_period: must be an integer >= 0 (0: only the final"),
        ("train.eval_period=-1", "train.eval_period: must be an integer >= 0"),
        ("train.keep_last=-1", "train.keep_last: must be an integer >= 0"),
        ("train.amp.dtype=fp32", 'train.amp.dtype: must be "bf16" or "fp16", got \'fp32\' (str).'),
        ("train.amp.enabled=1", "train.amp.enabled: must be true or false, got 1 (int)."),
        ("train.clip_grad.max_norm=0", "train.clip_grad.max_norm: must be a number > 0, or None"),
    ],
)
def test_a_bad_setting_on_the_command_line_is_named_with_where_and_what(override, expected):
    with pytest.raises(ConfigError) as info:
        load_config(TOY / "configs" / "toy.py", override)
    assert str(info.value).startswith("command line: " + expected)
    assert info.value.exit_code == 2


def test_a_bad_setting_in_a_file_names_the_file_and_line(tmp_path):
    (tmp_path / "toy.py").write_text((TOY / "configs" / "toy.py").read_text())
    (tmp_path / "exp.py").write_text("from .toy import *\n\ntrain.log_period = 0\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "exp.py")
    assert str(info.value).endswith("exp.py:3: train.log_period: must be an integer >= 1, got 0 (int).")


def test_good_values_pass_and_ints_count_as_floats():
    cfg = load_config(TOY / "configs" / "toy.py", "train.clip_grad.max_norm=1", "train.checkpoint_period=0")
    assert cfg.train.clip_grad.max_norm == 1


def test_the_cli_exits_2_with_one_paragraph_before_building_anything(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "lazytrain.cli", "train", str(TOY / "configs" / "toy.py"), "train.max_iter=abc",
         f"--output-dir={tmp_path / 'out'}"],
        capture_output=True, text=True, env=cli_env(),
    )  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.strip() == "error: command line: train.max_iter: must be an integer >= 1, got 'abc' (str)."
    assert not (tmp_path / "out").exists()
