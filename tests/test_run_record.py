"""What a run folder records can be trusted: config.yaml is how the run was trained, whatever ran after it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import TOY, cli_env
from toyproj.model import MLPClassifier

from lazytrain.engine.eval_record import EVAL_FOLDER

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
    r = lazytrain("train", CONFIG, "model.hidden=-5", "train.max_iter=7", f"--output-dir={trained}", "--resume")
    assert r.returncode != 0
    assert (trained / "config.yaml").read_bytes() == before


def test_a_train_that_fails_at_start_up_writes_no_config_yaml(tmp_path):
    r = lazytrain("train", CONFIG, "model.hidden=-5", f"--output-dir={tmp_path / 'out'}")
    assert r.returncode != 0
    assert not (tmp_path / "out" / "config.yaml").exists()


@pytest.mark.parametrize("command", ["export", "eval"])
def test_weights_of_another_width_exit_2_naming_the_keys(trained, tmp_path, command):
    weights = str(trained / "checkpoints" / "model_final.pth")
    extra = ["-o", str(tmp_path / "m.onnx")] if command == "export" else [f"--output-dir={tmp_path}"]
    r = lazytrain(command, CONFIG, "--weights", weights, *extra, "model.hidden=16")
    assert r.returncode == 2, r.stderr
    assert "do not fit the model MLPClassifier" in r.stderr and "of another shape" in r.stderr
    assert "in the checkpoint, (16," in r.stderr  # names a key with both shapes
    assert "Skip loading" not in r.stderr + r.stdout and not (tmp_path / "m.onnx").exists()


def test_weights_of_another_model_name_missing_and_unexpected_keys(tmp_path):
    from lazytrain.checkpoint import load_inference_weights
    from lazytrain.errors import ConfigError

    other = torch.nn.Sequential(torch.nn.Linear(8, 4))
    torch.save({"model": other.state_dict()}, tmp_path / "other.pth")
    with pytest.raises(ConfigError) as info:
        load_inference_weights(MLPClassifier(8, 4, hidden=32), str(tmp_path / "other.pth"))
    message = str(info.value)
    assert "missing (" in message and "unexpected (0.bias, 0.weight)" in message


def test_a_checkpoint_without_the_optional_class_weights_still_loads(tmp_path):
    from lazytrain.checkpoint import load_inference_weights
    from lazytrain.lidar.model import RangeNet

    trained = RangeNet(num_classes=3, width=4, depth=1, class_weights=[0.0, 1.0, 2.0])
    torch.save({"model": trained.state_dict()}, tmp_path / "w.pth")
    model = RangeNet(num_classes=3, width=4, depth=1)  # no class weights: "class_weights" is unexpected
    load_inference_weights(model, str(tmp_path / "w.pth"))
    assert torch.equal(model.head.weight, trained.head.weight)


def eval_rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def run_a(trained, tmp_path):
    """A copy of the trained run of its own (other tests evaluate ``trained`` too)."""
    run = tmp_path / "A"
    shutil.copytree(trained, run, ignore=shutil.ignore_patterns(EVAL_FOLDER))
    return run


def test_eval_writes_its_results_into_the_run_the_weights_came_from(run_a, tmp_path):
    weights = run_a / "checkpoints" / "model_final.pth"
    record = {name: (run_a / name).read_bytes() for name in ("config.yaml", "metrics.jsonl")}
    other = tmp_path / "B"  # the config's own output_dir
    r = lazytrain("eval", CONFIG, "--weights", str(weights), f"train.output_dir={other}", "train.log_period=100")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == f"results: {run_a / 'eval' / 'metrics.jsonl'}"
    [row] = eval_rows(run_a / "eval" / "metrics.jsonl")
    assert row["kind"] == "eval" and row["weights"] == str(weights) and row["ema"] is False
    assert row["iteration"] == 4 and "accuracy" in row
    assert b"log_period: 100\n" in (run_a / "eval" / "config.yaml").read_bytes()  # the eval command's config
    assert {name: (run_a / name).read_bytes() for name in record} == record  # the run's record as it was
    assert not other.exists()


def test_eval_of_weights_outside_any_run_writes_into_the_configs_output_dir(run_a, tmp_path):
    release = tmp_path / "release"
    release.mkdir()
    shutil.copy(run_a / "checkpoints" / "model_final.pth", release / "toy.pth")
    out = tmp_path / "B"
    r = lazytrain("eval", CONFIG, "--weights", str(release / "toy.pth"), f"train.output_dir={out}")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == f"results: {out / 'eval' / 'metrics.jsonl'}"
    assert eval_rows(out / "eval" / "metrics.jsonl")[0]["weights"] == str(release / "toy.pth")
    assert sorted(os.listdir(out)) == ["eval"] and sorted(os.listdir(release)) == ["toy.pth"]


def test_an_output_dir_given_to_eval_wins_over_the_run_the_weights_came_from(run_a, tmp_path):
    chosen = tmp_path / "C"
    r = lazytrain("eval", CONFIG, "--weights", str(run_a / "checkpoints" / "model_final.pth"), f"--output-dir={chosen}")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == f"results: {chosen / 'eval' / 'metrics.jsonl'}"
    assert len(eval_rows(chosen / "eval" / "metrics.jsonl")) == 1 and not (run_a / "eval").exists()


def test_weights_beside_a_runs_metrics_belong_to_that_run(tmp_path):
    from lazytrain.engine.eval_record import run_folder_of

    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "metrics.jsonl").write_text("")
    assert run_folder_of(str(tmp_path / "run" / "checkpoints" / "model_final.pth")) == str(tmp_path / "run")
    assert run_folder_of(str(tmp_path / "run" / "model_final.pth")) == str(tmp_path / "run")
    assert run_folder_of(str(tmp_path / "elsewhere" / "checkpoints" / "model_final.pth")) is None
