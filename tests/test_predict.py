"""`lazytrain predict` on the flagship: a SemanticKITTI submission folder for scans without labels, every point
labelled with a raw id, checked as the official validate_submission.py checks it; the check's failures."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, cli_env, load_config

from lazytrain.checkpoint import Checkpointer
from lazytrain.engine.build import build_model
from lazytrain.errors import ConfigError, DataError
from lazytrain.lidar import LEARNING_MAP_INV, SemanticKittiDataset, validate_submission, write_synthetic_kitti
from lazytrain.predict import predict_main

CONFIG = REPO / "configs" / "kitti_seg.py"
TEST_SEQUENCES = ["11", "12"]
SMALL = ("dataset.projection.width=256", "model.width=8", "model.depth=2", "dataloader.predict.num_workers=0",
         "dataloader.predict.batch_size=2", f"dataloader.predict.dataset.sequences={TEST_SEQUENCES}")  # fmt: skip


@pytest.fixture(scope="module")
def kitti(tmp_path_factory):
    """A synthetic set with test sequences 11 and 12 (3 scans each, no label files) and a checkpoint of a
    freshly built flagship model."""
    tmp = tmp_path_factory.mktemp("predict")
    root = tmp / "data"
    write_synthetic_kitti(str(root), TEST_SEQUENCES, scans=3, seed=3, columns=256, labels=False)
    cfg = load_config(CONFIG, f"dataset.root={root}", f"train.output_dir={tmp / 'out'}", *SMALL)
    model = build_model(cfg, __import__("torch").device("cpu"))
    Checkpointer(model, str(tmp / "ckpt")).save("model_final", iteration=7)
    return root, tmp / "ckpt" / "model_final.pth", tmp


def _predict(kitti, out, *overrides, pictures=False):
    root, weights, tmp = kitti
    cfg = load_config(CONFIG, f"dataset.root={root}", f"train.output_dir={tmp / 'out'}", *SMALL, *overrides)
    return predict_main(cfg, str(weights), split="test", out_dir=str(out), pictures=pictures)


def test_the_predict_summary_gives_the_check_command_with_the_dataset_root(kitti, tmp_path):
    root, _, _ = kitti
    out = (tmp_path / "submission").resolve()
    summary = _predict(kitti, out)
    assert summary["check"] == f"python -m lazytrain.lidar.predictions {out}.zip {root.resolve()}"


def test_the_test_split_reads_without_label_files(kitti):
    root, _, _ = kitti
    assert not os.path.exists(root / "dataset" / "sequences" / "11" / "labels")
    data = SemanticKittiDataset(str(root), split="test", sequences=TEST_SEQUENCES, width=256, return_points=True)
    sample = data[4]
    assert (sample["sequence"], sample["frame"], sample["index"]) == ("12", "000001", 4)
    assert int(sample["point_labels"].sum()) == 0 and int(sample["label_image"].sum()) == 0


def test_predict_writes_a_submission_that_passes_the_official_checks(kitti, tmp_path, capsys):
    root, weights, _ = kitti
    out = tmp_path / "submission"
    summary = _predict(kitti, out, pictures=True)
    assert f"with {weights} (iteration 8, model weights)" in capsys.readouterr().out  # saved after 8 iterations
    assert summary["scans"] == 6 and summary["folder"] == str(out.resolve())
    assert summary["zip"] == f"cd {out.resolve()} && zip -r {out.resolve()}.zip sequences"
    check = validate_submission(str(out), str(root), sequences=TEST_SEQUENCES)
    assert check["scans"] == 6 and check["points"] == summary["points"]
    assert check["unlabeled"] == 0  # class 0 is never predicted
    raw_ids = set(LEARNING_MAP_INV.values()) - {0}
    for seq in TEST_SEQUENCES:
        scans = sorted(os.listdir(root / "dataset" / "sequences" / seq / "velodyne"))
        labels = sorted(os.listdir(out / "sequences" / seq / "predictions"))
        assert labels == [s.replace(".bin", ".label") for s in scans]
        for scan, label in zip(scans, labels):
            points = os.path.getsize(root / "dataset" / "sequences" / seq / "velodyne" / scan) // 16
            predicted = np.fromfile(out / "sequences" / seq / "predictions" / label, dtype="<u4")
            assert len(predicted) == points  # every point of the original scan, also those without a pixel
            assert set(np.unique(predicted).tolist()) <= raw_ids
    pictures = sorted(os.listdir(out / "pictures"))
    assert pictures == [f"{s}_{i:06d}.png" for s in TEST_SEQUENCES for i in range(3)]
    assert (out / "pictures" / pictures[0]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the zip the benchmark takes passes the same checks
    archive = shutil.make_archive(str(tmp_path / "submission"), "zip", root_dir=out, base_dir="sequences")
    assert validate_submission(archive, str(root), sequences=TEST_SEQUENCES)["scans"] == 6


def test_predict_with_knn_labels_every_point_with_a_class(kitti, tmp_path):
    out = tmp_path / "knn"
    _predict(kitti, out, "evaluator.knn={knn: 5, search: 5, sigma: 1.0, cutoff: 1.0}")
    summary = validate_submission(str(out), str(kitti[0]), sequences=TEST_SEQUENCES)
    assert summary["scans"] == 6 and summary["unlabeled"] == 0


@pytest.fixture
def submission(kitti, tmp_path):
    reference = kitti[2] / "reference"
    if not reference.exists():
        _predict(kitti, reference)
    out = tmp_path / "sub"
    shutil.copytree(reference, out)
    return out


def test_validate_names_a_missing_label_file(kitti, submission):
    os.remove(submission / "sequences" / "12" / "predictions" / "000002.label")
    with pytest.raises(DataError, match=r"sequences/12/predictions/000002.label' is missing"):
        validate_submission(str(submission), str(kitti[0]), sequences=TEST_SEQUENCES)


def test_validate_names_a_label_file_of_the_wrong_size(kitti, submission):
    path = submission / "sequences" / "11" / "predictions" / "000001.label"
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(DataError, match=r"000001.label' should have \d+ labels, but has \d+"):
        validate_submission(str(submission), str(kitti[0]), sequences=TEST_SEQUENCES)


def test_validate_rejects_training_ids_and_a_missing_sequence(kitti, submission):
    path = submission / "sequences" / "11" / "predictions" / "000000.label"
    labels = np.fromfile(path, dtype="<u4")
    np.full_like(labels, 19).tofile(path)  # a training id (traffic-sign), not its raw id 81
    with pytest.raises(DataError, match=r"no raw SemanticKITTI id \(the first: 19\)"):
        validate_submission(str(submission), str(kitti[0]), sequences=TEST_SEQUENCES)
    shutil.rmtree(submission / "sequences" / "12")
    with pytest.raises(DataError, match="'sequences/12/' is missing"):
        validate_submission(str(submission), str(kitti[0]), sequences=["12"])


def test_predict_without_a_writer_is_a_config_error(kitti, tmp_path):
    root, weights, _ = kitti
    cfg = load_config(CONFIG, f"dataset.root={root}", *SMALL, "predict.writer=null")
    with pytest.raises(ConfigError, match=r"predict\.writer: this config has no prediction writer"):
        predict_main(cfg, str(weights), out_dir=str(tmp_path))


def test_cli_predict_prints_the_folder_and_the_zip_command(kitti, tmp_path):
    root, weights, _ = kitti
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "lazytrain.cli", "predict", str(CONFIG), "--weights", str(weights),
           "--split", "test", "--out", str(out), f"dataset.root={root}", *SMALL]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), cwd=tmp_path)
    assert r.returncode == 0, r.stderr + r.stdout[-2000:]
    assert f"folder     {out.resolve()}" in r.stdout
    assert f"zip        cd {out.resolve()} && zip -r {out.resolve()}.zip sequences" in r.stdout
    check = [sys.executable, "-m", "lazytrain.lidar.predictions", str(out), str(root), "--split", "test"]
    r = subprocess.run(check, capture_output=True, text=True, env=cli_env())
    assert r.returncode == 1 and "sequences/13/' is missing" in r.stderr  # the full split: 11-21


@pytest.mark.parametrize("knn", [None, "{knn: 5, search: 5, sigma: 1.0, cutoff: 1.0}"])
def test_eval_scores_exactly_what_predict_writes(tmp_path, knn):
    """A model whose "unlabeled" logit wins most pixels: eval and predict must still pick the same classes, so
    the official formula over the written files gives eval's mIoU."""
    import torch
    from test_lidar_metrics import official_evaluation

    from lazytrain.engine.run import evaluate_main
    from lazytrain.lidar import LEARNING_MAP, map_labels, read_labels

    root = tmp_path / "data"
    write_synthetic_kitti(str(root), ["08"], scans=3, seed=4, columns=256)
    overrides = (f"dataset.root={root}", f"train.output_dir={tmp_path / 'out'}", *SMALL[:-1],
                 "dataloader.test.num_workers=0", f"evaluator.knn={knn}")  # fmt: skip
    cfg = load_config(CONFIG, *overrides)
    model = build_model(cfg, torch.device("cpu"))
    with torch.no_grad():
        model.head.bias[0] = 1e3  # class 0 ("unlabeled") is every pixel's best logit
        model.head.bias[1:] = torch.linspace(0, 1, 19)
    Checkpointer(model, str(tmp_path / "ckpt")).save("model_final", iteration=1)
    weights = str(tmp_path / "ckpt" / "model_final.pth")
    results = evaluate_main(load_config(CONFIG, *overrides), weights)
    out = tmp_path / "valid"
    predict_main(load_config(CONFIG, *overrides, "dataloader.predict.dataset.sequences=['08']"), weights,
                 split="valid", out_dir=str(out))  # fmt: skip
    to_train = np.zeros(260, dtype=np.int64)
    to_train[list(LEARNING_MAP)] = list(LEARNING_MAP.values())
    preds, labels = [], []
    for name in sorted(os.listdir(root / "dataset" / "sequences" / "08" / "labels")):
        labels.append(map_labels(read_labels(str(root / "dataset" / "sequences" / "08" / "labels" / name))))
        raw = np.fromfile(out / "sequences" / "08" / "predictions" / name, dtype="<u4")
        preds.append(to_train[raw & 0xFFFF])
    official_miou, _, official_accuracy = official_evaluation(np.concatenate(preds), np.concatenate(labels), 20)
    assert results["mIoU"] == pytest.approx(official_miou, rel=1e-9)
    assert results["accuracy"] == pytest.approx(official_accuracy, rel=1e-9)
    assert 0 not in np.concatenate(preds)


def test_predict_shows_progress_with_an_eta(kitti, tmp_path, capsys, monkeypatch):
    from lazytrain import progress

    monkeypatch.setattr(progress, "EVERY_S", 0.0)  # a line per batch (normally: every 5 s)
    _predict(kitti, tmp_path / "p")
    lines = [line for line in capsys.readouterr().out.splitlines() if "Prediction done" in line]
    assert "lt.evaluation]: Prediction done 1/3. " in lines[0] and "ETA" in lines[0]
    assert "Prediction done: 3 batches in" in lines[-1]
