"""`lazytrain analyze`: parameters (trainable and frozen), fvcore's FLOPs and activations per module, the ops it
could not count, latency and peak memory, on the toy project and the flagship."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import DEVICES, REPO, cli_env

from lazytrain.analyze import analyze_model, format_report
from lazytrain.errors import ConfigError

# the toy MLP: Linear(8, 32) -> ReLU -> Dropout -> Linear(32, 4); the test loader's batch holds 64 samples
BATCH, IN, HIDDEN, OUT = 64, 8, 32, 4


def toy_mlp() -> torch.nn.Module:
    from toyproj.model import MLPClassifier

    return MLPClassifier(IN, OUT, hidden=HIDDEN)


def rows_by_module(report):
    return {row["module"]: row for row in report["modules"]}


def test_parameter_table_counts_every_parameter_once(toy_config):
    report = analyze_model(toy_config(), runs=1)
    rows = rows_by_module(report)
    model = toy_mlp()
    assert rows[""]["parameters"] == sum(p.numel() for p in model.parameters()) == report["parameters"]["parameters"]
    assert rows["net.0"]["parameters"] == IN * HIDDEN + HIDDEN
    assert rows["net.3"]["parameters"] == HIDDEN * OUT + OUT
    assert rows["net.1"]["parameters"] == 0  # ReLU
    assert report["parameters"]["frozen"] == 0


def test_flops_are_fvcore_multiply_adds_on_one_test_batch(toy_config):
    report = analyze_model(toy_config(), runs=1)
    rows = rows_by_module(report)
    assert report["batch"]["source"] == "dataloader.test"
    assert report["batch"]["structure"] == f"{{x: float32[{BATCH}, {IN}], y: int64[{BATCH}]}}"
    assert rows["net.0"]["flops"] == BATCH * IN * HIDDEN
    assert rows["net.3"]["flops"] == BATCH * HIDDEN * OUT
    assert report["flops"]["total"] == BATCH * (IN * HIDDEN + HIDDEN * OUT) > 0
    assert report["activations"]["total"] == BATCH * (HIDDEN + OUT)  # the Linear layers' outputs
    assert report["flops"]["not_counted"] == {}


def test_frozen_parameters_follow_train_freeze(toy_config):
    report = analyze_model(toy_config("train.freeze=['net.0.*']"), runs=1)
    rows = rows_by_module(report)
    first, last = IN * HIDDEN + HIDDEN, HIDDEN * OUT + OUT
    assert (rows["net.0"]["trainable"], rows["net.0"]["frozen"]) == (0, first)
    assert (rows["net.3"]["trainable"], rows["net.3"]["frozen"]) == (last, 0)
    assert report["parameters"] == {"parameters": first + last, "trainable": last, "frozen": first}


def test_depth_limits_the_table_to_the_top_levels(toy_config):
    assert [row["module"] for row in analyze_model(toy_config(), runs=1, depth=1)["modules"]] == ["", "net"]
    assert [row["module"] for row in analyze_model(toy_config(), runs=1, depth=0)["modules"]] == [""]


@pytest.mark.parametrize("device", DEVICES)
def test_latency_and_peak_memory_are_measured_on_the_runs_device(toy_config, device):
    report = analyze_model(toy_config(f"train.device={device}"), runs=3)
    assert report["device"].startswith(device)
    latency = report["latency_ms"]
    assert latency["runs"] == 3 and latency["warmup"] == 2
    assert 0 < latency["min"] <= latency["median"] <= latency["max"]
    memory = report["memory"]
    expected_kind = "cuda_max_memory_allocated" if device == "cuda" else "process_peak_rss_growth"
    assert memory["kind"] == expected_kind
    assert memory["peak_bytes"] > 0 and memory["forward_bytes"] >= 0
    json.dumps(report)  # what --json writes


def test_report_says_which_weights_it_measured(toy_config, tmp_path):
    fresh = format_report(analyze_model(toy_config(), runs=1))
    assert "freshly initialised weights (no --weights)" in fresh
    checkpoint = tmp_path / "model.pth"
    torch.save({"model": toy_mlp().state_dict()}, checkpoint)
    report = analyze_model(toy_config(), weights=str(checkpoint), runs=1)
    assert report["weights_used"] == "model"
    assert f"the trained weights of {checkpoint}" in format_report(report)


def test_zero_runs_is_a_config_error(toy_config):
    with pytest.raises(ConfigError, match="--runs must be at least 1"):
        analyze_model(toy_config(), runs=0)


def test_cli_on_the_flagship_names_modules_and_uncounted_ops(tmp_path):
    out = tmp_path / "analysis.json"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "lazytrain.cli",
            "analyze",
            str(REPO / "configs" / "kitti_seg.py"),
            f"dataset.root={tmp_path / 'kitti'}",
            "dataset.synthetic_scans=1",
            "dataset.projection.width=128",
            "dataloader.test.batch_size=1",
            "dataloader.test.num_workers=0",
            "--runs=2",
            f"--json={out}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=cli_env(),
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    for module in ("RangeNet", "stem (Sequential)", "down.0 (Sequential)", "up.2 (Sequential)", "head (Conv2d)"):
        assert module in r.stdout
    assert "not counted in FLOPs: aten::leaky_relu x15" in r.stdout
    assert "aten::upsample_nearest2d x3" in r.stdout  # not counted in activations
    assert "latency: median" in r.stdout and "peak memory:" in r.stdout
    assert "Unsupported operator" not in r.stdout + r.stderr  # fvcore's own warnings stay quiet
    report = json.loads(out.read_text())
    assert report["model"] == "RangeNet" and report["flops"]["total"] > 0
    assert report["flops"]["not_counted"]["aten::leaky_relu"] == 15


def report_lines(toy_config, **latency_ms) -> list[str]:
    report = analyze_model(toy_config(), runs=2)
    report["latency_ms"].update(latency_ms)
    return format_report(report).splitlines()


def test_latency_is_in_plain_milliseconds_with_its_spread(toy_config):
    lines = report_lines(toy_config, median=1270.4, min=1190.0, max=1301.2)
    latency = next(line for line in lines if line.startswith("latency:"))
    assert latency.startswith("latency: median 1270 ms of 2 forward passes (min 1190 ms, max 1301 ms)")
    assert not any(line.startswith("warning:") for line in lines)
    small = next(line for line in report_lines(toy_config, median=0.41234, min=0.4, max=0.5) if "latency" in line)
    assert "median 0.412 ms" in small and "e+" not in small and "e-" not in small


def test_runs_that_disagree_by_more_than_2x_are_a_warning(toy_config):
    lines = report_lines(toy_config, median=900.0, min=755.0, max=1800.0)
    warning = next(line for line in lines if line.startswith("warning:"))
    assert "disagree by 2.4x (min 755 ms, max 1800 ms)" in warning


def test_flops_are_given_per_sample_and_per_batch(toy_config):
    report = analyze_model(toy_config(), runs=1)
    assert report["batch"]["samples"] == BATCH
    assert report["flops"]["per_sample"] * BATCH == report["flops"]["total"]
    line = next(line for line in format_report(report).splitlines() if line.startswith("FLOPs:"))
    assert line.startswith(f"FLOPs: 24.6K on this batch of {BATCH} samples, 384 per sample")


class FeatureDropoutMLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layers = [torch.nn.Linear(IN, HIDDEN), torch.nn.Dropout1d(0.5), torch.nn.Linear(HIDDEN, OUT)]
        self.net = torch.nn.Sequential(*layers)

    def forward(self, batch):
        return self.net(batch["x"])


def test_dropout_is_not_listed_as_not_counted(toy_config):
    from lazytrain.config import LazyCall as L

    cfg = toy_config()
    cfg.model = L(FeatureDropoutMLP)()  # fvcore has no counter for its aten::feature_dropout
    report = analyze_model(cfg, runs=1)
    text = format_report(report)
    assert "dropout count 0 by design" in text
    assert not any("dropout" in line for line in text.splitlines() if line.startswith("not counted"))
    assert report["flops"]["zero_in_inference"] == {"aten::feature_dropout": 1}
