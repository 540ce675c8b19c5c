"""Run settings: defaults, and every ``train`` value checked for type and range before anything is built."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import TOY, cli_env, load_config

from lazytrain.config import ConfigError
from lazytrain.engine import train_main


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
        (
            "train.activation_checkpointing=stem",
            "train.activation_checkpointing: must be a list of glob patterns over module names, got 'stem' (str).",
        ),
        ("train.amp.modules=[1]", "train.amp.modules: must be a list of glob patterns over module names"),
        ("train.freeze_norm_eval=1", "train.freeze_norm_eval: must be true or false, got 1 (int)."),
        # a dict setting replaced by a scalar
        ("train.amp=true", "train.amp: must be a dict (amp.enabled, amp.dtype, amp.modules), got True (bool)."),
        ("train.ema=5", "train.ema: must be a dict (ema.enabled, ema.decay), got 5 (int)."),
        ("train.clip_grad=1.0", "train.clip_grad: must be a dict (clip_grad.max_norm, clip_grad.norm_type), got 1.0"),
        ("train.best=null", "train.best: must be a dict (best.metric, best.mode), got None (NoneType)."),
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


def test_a_nested_setting_in_a_multiline_dict_is_named_at_its_own_line_then_at_the_command_line(tmp_path):
    (tmp_path / "exp.py").write_text("train = dict(\n    max_iter='abc',\n    amp=dict(dtype='fp8'),\n)\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "exp.py")
    assert str(info.value).endswith("exp.py:2: train.max_iter: must be an integer >= 1, got 'abc' (str).")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "exp.py", "train.max_iter=3")
    assert str(info.value).endswith("""exp.py:3: train.amp.dtype: must be "bf16" or "fp16", got 'fp8' (str).""")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "exp.py", "train.max_iter=x", "train.amp.dtype=bf16")
    assert str(info.value) == "command line: train.max_iter: must be an integer >= 1, got 'x' (str)."


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


def cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lazytrain.cli", *args], capture_output=True, text=True,
                          env=cli_env(), cwd=cwd, timeout=300)  # fmt: skip


def test_a_dict_setting_replaced_in_a_file_and_train_itself_not_a_dict_exit_2_in_one_line(tmp_path):
    (tmp_path / "toy.py").write_text((TOY / "configs" / "toy.py").read_text())
    (tmp_path / "exp.py").write_text("from .toy import *\n\ntrain.amp = True\n")
    for command in (["config"], ["train", "--dry-run"]):
        r = cli(*command, str(tmp_path / "exp.py"), cwd=tmp_path)
        assert r.returncode == 2, r.stderr
        assert r.stderr == (
            "error: exp.py:3: train.amp: must be a dict (amp.enabled, amp.dtype, amp.modules), got True (bool).\n"
        )
    (tmp_path / "plain.py").write_text("train = dict(max_iter=3)\n")
    r = cli("config", str(tmp_path / "plain.py"), "train=5", cwd=tmp_path)
    assert (r.returncode, r.stderr) == (2, "error: command line: train: must be a dict of run settings, got 5 (int).\n")
    r = cli("config", str(TOY / "configs" / "toy.py"), "train=5", cwd=tmp_path)  # before ${train.seed} is resolved
    assert (r.returncode, r.stderr) == (2, "error: command line: train: must be a dict of run settings, got 5 (int).\n")
    (tmp_path / "scalar.py").write_text("x = 1\ntrain = 5\n")
    r = cli("config", str(tmp_path / "scalar.py"), cwd=tmp_path)
    assert (r.returncode, r.stderr) == (2, "error: scalar.py:2: train: must be a dict of run settings, got 5 (int).\n")


def test_a_bad_setting_is_located_by_its_statement_not_by_the_first_line_with_its_name(tmp_path):
    (tmp_path / "toy.py").write_text((TOY / "configs" / "toy.py").read_text())
    (tmp_path / "exp.py").write_text(
        "from .toy import *\n\n# log_period: how often to log\ntrain.update(eval_period=10)\ntrain.log_period = 0\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "exp.py")
    assert str(info.value).endswith("exp.py:5: train.log_period: must be an integer >= 1, got 0 (int).")


def test_a_dict_override_of_train_is_the_command_line_and_interpolations_are_shown(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(TOY / "configs" / "toy.py", 'train={"max_iter": "abc"}')
    assert str(info.value) == "command line: train.max_iter: must be an integer >= 1, got 'abc' (str)."
    (tmp_path / "toy.py").write_text((TOY / "configs" / "toy.py").read_text())
    (tmp_path / "exp.py").write_text("from .toy import *\n\niters = 'many'\ntrain.max_iter = '${iters}'\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "exp.py")
    assert str(info.value).endswith(
        "exp.py:4: train.max_iter: must be an integer >= 1, got 'many' (str) (from '${iters}')."
    )


def test_an_added_unknown_setting_is_refused_by_config_as_by_train(tmp_path):
    r = cli("config", str(TOY / "configs" / "toy.py"), "+train.max_iters=3", cwd=tmp_path)
    assert (r.returncode, r.stderr) == (
        2,
        "error: command line: train.max_iters: unknown train setting. Did you mean 'max_iter'?\n",
    )
    (tmp_path / "toy.py").write_text((TOY / "configs" / "toy.py").read_text())
    (tmp_path / "exp.py").write_text("from .toy import *\n\n# max_iters\ntrain.max_iters = 3\n")
    r = cli("config", str(tmp_path / "exp.py"), cwd=tmp_path)
    assert r.stderr == "error: exp.py:4: train.max_iters: unknown train setting. Did you mean 'max_iter'?\n"


def test_tuples_fit_list_settings(tmp_path):
    (tmp_path / "toy.py").write_text((TOY / "configs" / "toy.py").read_text())
    (tmp_path / "exp.py").write_text(
        "from .toy import *\n\ntrain.init_rename = [('^a', 'b')]\ntrain.freeze = ('x*',)\n"
    )
    cfg = load_config(tmp_path / "exp.py")
    assert list(cfg.train.freeze) == ["x*"]


def test_a_dict_setting_may_come_from_an_interpolation_that_gives_a_dict(tmp_path):
    (tmp_path / "toy.py").write_text((TOY / "configs" / "toy.py").read_text())
    body = "from .toy import *\n\namp = dict(enabled=False, dtype='fp16')\nflag = True\ntrain.amp = '${amp}'\n"
    (tmp_path / "exp.py").write_text(body)
    assert load_config(tmp_path / "exp.py").train.amp.dtype == "fp16"
    (tmp_path / "exp.py").write_text(body.replace("'${amp}'", "'${flag}'"))
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "exp.py")
    assert str(info.value).endswith("exp.py:5: train.amp: must be a dict (amp.enabled, amp.dtype, amp.modules), "
                                    "got True (bool) (from '${flag}').")  # fmt: skip


def test_the_required_max_iter_can_be_set_by_an_override(tmp_path):
    (tmp_path / "exp.py").write_text("x = 1\n")  # no train.max_iter: its default is '???'
    assert load_config(tmp_path / "exp.py", "train.max_iter=5").train.max_iter == 5


def test_detectron2_train_settings_that_lazytrain_names_otherwise_say_what_to_use(tmp_path):
    (tmp_path / "toy.py").write_text((TOY / "configs" / "toy.py").read_text())
    (tmp_path / "exp.py").write_text("from .toy import *\n\ntrain.checkpointer = dict(period=100, max_to_keep=2)\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "exp.py")
    assert str(info.value).endswith(
        "exp.py:3: train.checkpointer: unknown train setting. detectron2's checkpointer.period and "
        "checkpointer.max_to_keep are train.checkpoint_period and train.keep_last here."
    )
    (tmp_path / "exp.py").write_text("from .toy import *\n\ntrain.ddp = dict(fp16_compression=False)\n")
    with pytest.raises(ConfigError, match=r"exp.py:3: train.ddp.fp16_compression: unknown train setting. lazytrain"):
        load_config(tmp_path / "exp.py")


def test_missing_model_is_a_config_error_saying_what_to_add(toy_config):
    cfg = toy_config()
    del cfg["model"]
    with pytest.raises(ConfigError) as info:
        train_main(cfg)
    assert str(info.value).startswith("model:") and "L(MyModel)" in str(info.value)


def test_missing_max_iter_is_a_config_error_saying_what_to_add(tmp_path):
    path = tmp_path / "exp.py"
    path.write_text(f"from toy_parts import *\ntrain = dict(output_dir={str(tmp_path / 'o')!r})\n")
    (tmp_path / "toy_parts.py").write_text(f"exec(open({str(TOY / 'configs/toy.py')!r}).read())\n")
    sys.path.insert(0, str(tmp_path))
    try:
        cfg = load_config(path)
    finally:
        sys.path.remove(str(tmp_path))
    with pytest.raises(ConfigError) as info:
        train_main(cfg)
    assert str(info.value).startswith("train.max_iter:") and "train.max_iter=1000" in str(info.value)


def test_misspelled_train_setting_suggests(tmp_path, toy_config):
    path = tmp_path / "exp.py"
    path.write_text("train = dict(max_iters=3)\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).endswith("exp.py:1: train.max_iters: unknown train setting. Did you mean 'max_iter'?")
    with pytest.raises(ConfigError) as info:
        toy_config("+train.log_perod=3")  # refused when the config loads, as `lazytrain config` refuses it
    assert str(info.value) == "command line: train.log_perod: unknown train setting. Did you mean 'log_period'?"
