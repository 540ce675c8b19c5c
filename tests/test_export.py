"""`lazytrain export`: ONNX that provably matches the torch model, and errors that say what to fix."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import DEVICES, REPO, TOY, cli_env, load_config

from lazytrain.checkpoint import Checkpointer
from lazytrain.config import ConfigError, L, instantiate
from lazytrain.export import ExportError, export_onnx, verify_onnx, within_tolerance


def save_weights(cfg, folder) -> str:
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    Checkpointer(model, str(folder)).save("model_final", iteration=0)
    return str(folder / "model_final.pth")


@pytest.fixture
def toy(tmp_path):
    cfg = load_config(TOY / "configs" / "toy.py", f"train.output_dir={tmp_path}")
    return cfg, save_weights(cfg, tmp_path)


def test_export_of_the_example_model_matches_torch_with_a_dynamic_batch(toy, tmp_path):
    cfg, weights = toy
    report = export_onnx(cfg, weights, str(tmp_path / "toy.onnx"))
    assert report["passed"] and report["max_abs_diff"] < 1e-4 and report["argmax_agreement"] == 1.0
    assert report["inputs"] == {"x": ["batch", 8]} and report["outputs"] == {"logits": ["batch", 4]}
    assert {b["batch_size"] for b in report["batches"]} == {64, 1}  # another batch size than the example's
    assert report["report"] == str(tmp_path / "toy.report.json")
    assert json.loads((tmp_path / "toy.report.json").read_text())["passed"] is True

    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "toy.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((7, 8)).astype(np.float32)
    assert session.run(None, {"x": x})[0].shape == (7, 4)


@pytest.mark.parametrize("device", DEVICES)
def test_a_checkpoint_trained_on_the_device_exports_and_matches(device, tmp_path):
    from lazytrain.engine import train_main

    cfg = load_config(TOY / "configs" / "toy.py", f"train.output_dir={tmp_path / 'run'}", "train.max_iter=6",
                      f"train.device={device}", "train.amp.enabled=True")  # fmt: skip
    train_main(cfg)
    weights = tmp_path / "run" / "checkpoints" / "model_final.pth"
    report = export_onnx(cfg, str(weights), str(tmp_path / "toy.onnx"))
    assert report["passed"] and report["max_abs_diff"] < 1e-4, report


def test_export_of_the_flagship_model(tmp_path):
    cfg = load_config(
        REPO / "configs" / "kitti_seg.py", f"dataset.root={tmp_path / 'data'}", "dataset.synthetic_scans=2",
        "dataset.projection.width=128", "model.width=8", "model.depth=2", "dataloader.test.num_workers=0",
        "dataloader.test.batch_size=2", "dataloader.test.dataset.sequences=['08']",
        "dataloader.train.dataset.sequences=['00']", "model.class_weights=null",
    )  # fmt: skip
    weights = save_weights(cfg, tmp_path)
    report = export_onnx(cfg, weights, str(tmp_path / "kitti.onnx"))
    assert report["passed"], report
    assert report["inputs"] == {"image": ["batch", 5, 64, 128]}
    assert report["outputs"] == {"logits": ["batch", 20, 64, 128]}


def test_the_check_fails_when_the_onnx_file_is_tampered_with(toy, tmp_path):
    import onnx
    from onnx import numpy_helper

    cfg, weights = toy
    path = tmp_path / "toy.onnx"
    export_onnx(cfg, weights, str(path), check=False)
    model = onnx.load(str(path))
    init = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    changed = numpy_helper.to_array(init).copy()
    changed.flat[0] += 0.5
    init.CopyFrom(numpy_helper.from_array(changed, init.name))
    onnx.save(model, str(path))
    with pytest.raises(ExportError) as info:
        verify_onnx(cfg, weights, str(path))
    assert "differs from the torch model" in str(info.value) and f"Report: {tmp_path / 'toy.report.json'}." in str(
        info.value
    )
    assert json.loads((tmp_path / "toy.report.json").read_text())["passed"] is False


def test_rounding_of_large_logits_passes_and_a_wrong_value_fails():
    # Deep networks give logits of RMS ~60 whose float32 rounding (a few 1e-4) lands on elements near zero too:
    # that is not a mismatch. A value off by a part of the output's scale is, whatever the scale.
    rng = np.random.default_rng(0)
    logits = (60 * rng.standard_normal(100_000)).astype(np.float32)
    logits[:10] = 1e-3  # elements near zero among large ones
    rounded = logits + rng.uniform(-3e-4, 3e-4, logits.shape).astype(np.float32)
    assert within_tolerance(logits, rounded)[0]
    wrong = logits.copy()
    wrong[5] += 0.5
    assert not within_tolerance(logits, wrong)[0]
    small = rng.standard_normal(1000).astype(np.float32) * 0.1  # outputs of scale < 1 keep the plain 1e-4
    assert within_tolerance(small, small + 5e-5)[0] and not within_tolerance(small, small + np.float32(5e-4))[0]


def test_missing_export_section_says_what_to_add(toy, tmp_path):
    cfg, weights = toy
    del cfg["export"]
    with pytest.raises(ConfigError) as info:
        export_onnx(cfg, weights, str(tmp_path / "m.onnx"))
    assert str(info.value).startswith("export:") and "export = dict(input_keys=" in str(info.value)


class Head(torch.nn.Module):
    def forward(self, x):
        return torch.cummax(x, dim=1)[0]


class NotExportable(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 4)
        self.head = Head()

    def forward(self, batch):
        return self.head(self.lin(batch["x"]))


def test_an_op_that_cannot_export_names_the_module_and_the_op(toy, tmp_path):
    cfg, _ = toy
    cfg.model = L(NotExportable)()
    weights = save_weights(cfg, tmp_path / "w")
    with pytest.raises(ExportError) as info:
        export_onnx(cfg, weights, str(tmp_path / "m.onnx"))
    assert "module 'head' (Head) uses aten.cummax" in str(info.value)


def test_cli_export_writes_a_verified_model_names_its_stages_and_keeps_the_result_in_log_txt(toy, tmp_path):
    _, weights = toy
    out = tmp_path / "cli" / "model.onnx"
    r = subprocess.run(
        [sys.executable, "-m", "lazytrain.cli", "export", str(TOY / "configs" / "toy.py"), "--weights", weights,
         "-o", str(out)],
        capture_output=True, text=True, env=cli_env(),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    report = out.parent / "model.report.json"
    assert "matches torch" in r.stdout and out.exists() and report.exists()
    assert r.stdout.strip().splitlines()[-1] == f"report: {report}"
    stages = re.findall(r"Export (\d)/5: (\w+)", r.stdout)
    assert stages == [("1", "loading"), ("2", "capturing"), ("3", "converting"), ("4", "saving"), ("5", "comparing")]
    log = (out.parent / "log.txt").read_text()
    assert f"wrote {out} (opset " in log and "matches torch on" in log and "report: " in log


def test_each_model_keeps_its_own_report(toy, tmp_path):
    cfg, weights = toy
    a = export_onnx(cfg, weights, str(tmp_path / "a.onnx"), check=False)
    b = export_onnx(cfg, weights, str(tmp_path / "b.onnx"), check=False)
    assert (a["report"], b["report"]) == (str(tmp_path / "a.report.json"), str(tmp_path / "b.report.json"))
    assert json.loads((tmp_path / "a.report.json").read_text())["model"] == str(tmp_path / "a.onnx")
    # a model file without the .onnx suffix, whose report name is taken by another model's report
    c = export_onnx(cfg, weights, str(tmp_path / "a"), check=False)
    assert c["report"] == str(tmp_path / "a.report.2.json")
    assert json.loads((tmp_path / "a.report.json").read_text())["model"] == str(tmp_path / "a.onnx")  # kept
    assert export_onnx(cfg, weights, str(tmp_path / "a.onnx"), check=False)["report"] == a["report"]
