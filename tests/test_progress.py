"""Progress of long work, with an ETA every few seconds: evaluation, prediction, synthetic data, class weights,
export. Short work logs nothing (here the period is set to 0 to see the lines)."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import TOY, load_config

from lazytrain import progress
from lazytrain.progress import Progress


def eta(unit: str) -> str:
    return r"\d+\.\d{4} s / " + unit + r"\. ETA \d+:\d\d:\d\d"


@pytest.fixture
def every_step(monkeypatch):
    monkeypatch.setattr(progress, "EVERY_S", 0.0)


def test_progress_lines_count_time_per_item_and_eta(log_lines):
    import logging

    p = Progress("Synthetic scans", 3, unit="scan", logger=logging.getLogger("lazytrain.x"), every_s=0.0)
    for _ in range(3):
        p.step(note="sequence 00")
    p.done()
    assert len(log_lines) == 4
    assert re.fullmatch(r"INFO lazytrain\.x: Synthetic scans done 1/3 \(sequence 00\)\. " + eta("scan"),
                        log_lines[0])  # fmt: skip
    assert re.fullmatch(r"INFO lazytrain\.x: Synthetic scans done: 3 scans in 0:00:00 \(\d+\.\d{4} s / scan\)",
                        log_lines[3])  # fmt: skip


def test_short_work_logs_nothing(log_lines):
    p = Progress("Inference", [1, 2, 3], unit="batch")
    for _ in range(3):
        p.step()
    p.done()
    assert log_lines == []


def test_synthetic_scans_and_class_weights_show_progress(tmp_path, every_step, log_lines):
    from lazytrain.lidar import compute_class_weights, write_synthetic_kitti

    write_synthetic_kitti(str(tmp_path), ["00", "01"], scans=2, columns=64)
    lines = [line for line in log_lines if "lazytrain.lidar.synthetic" in line]
    assert len(lines) == 5  # one per scan, and the summary
    assert "Synthetic scans done 1/4 (sequence 00)." in lines[0]
    assert "Synthetic scans done 4/4 (sequence 01)." in lines[3]
    assert re.search(eta("scan"), lines[0])
    compute_class_weights(str(tmp_path), 20, sequences=["00", "01"], cache_dir=str(tmp_path / "cache"))
    lines = [line for line in log_lines if "Class weights: label files done" in line]
    assert lines[0].startswith("INFO lazytrain.lidar.dataset: Class weights: label files done 1/4. ")
    assert "done 4/4" in lines[3] and "done: 4 files in" in lines[4]


def test_evaluation_and_its_progress(every_step, log_lines):
    from lazytrain.evaluation import inference_on_dataset

    class Count:
        def reset(self):
            self.n = 0

        def process(self, batch, outputs):
            self.n += len(outputs)

        def evaluate(self):
            return {"n": self.n}

    loader = [torch.zeros(2, 4) for _ in range(3)]
    assert inference_on_dataset(torch.nn.Linear(4, 2), loader, Count()) == {"n": 6}
    assert [line.split(". ")[0] for line in log_lines[:3]] == [
        f"INFO lazytrain.evaluation: Inference done {i}/3" for i in (1, 2, 3)
    ]


def test_export_shows_its_stages_and_check_batches(tmp_path, every_step, log_lines):
    from lazytrain.checkpoint import Checkpointer
    from lazytrain.config import instantiate
    from lazytrain.export import export_onnx

    cfg = load_config(TOY / "configs" / "toy.py", f"train.output_dir={tmp_path}")
    Checkpointer(instantiate(cfg.model), str(tmp_path)).save("model_final", iteration=0)
    export_onnx(cfg, str(tmp_path / "model_final.pth"), str(tmp_path / "toy.onnx"), num_batches=2)
    stages = [line.split(": ", 1)[1].split(" ")[1] for line in log_lines if ": Export " in line and "/5: " in line]
    assert stages == ["1/5:", "2/5:", "3/5:", "4/5:", "5/5:"]  # each stage named as it starts
    assert any("Export 2/5: capturing MLPClassifier.forward with torch.export" in line for line in log_lines)
    checks = [line for line in log_lines if "Export check (onnxruntime vs torch) done" in line]
    assert "done 1/3." in checks[0] and "done 3/3." in checks[2]  # 2 test batches and one of another size
