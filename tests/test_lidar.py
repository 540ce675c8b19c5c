"""SemanticKITTI: the on-disk format, the label map, projection, data errors, where synthetic scans go, class
weights, and a training run (the metrics: test_lidar_metrics.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO, cli_env, load_config

from lazytrain.config import instantiate
from lazytrain.errors import ConfigError, DataError
from lazytrain.lidar import (
    LEARNING_MAP,
    ClassWeightsFromLabels,
    RangeNet,
    RangeProjection,
    SemanticKittiDataset,
    collate_scans,
    compute_class_weights,
    make_scan,
    map_labels,
    read_labels,
    read_points,
    write_synthetic_kitti,
)
from lazytrain.lidar.dataset import class_weights_from_counts, evenly_spread


@pytest.fixture(scope="module")
def kitti_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("kitti")
    write_synthetic_kitti(str(root), ["00", "08"], scans=2, seed=7)
    return root


def test_generator_writes_the_real_layout_and_reads_back_exactly(kitti_root):
    seq = kitti_root / "dataset" / "sequences" / "00"
    assert sorted(os.listdir(seq)) == ["calib.txt", "labels", "poses.txt", "times.txt", "velodyne"]
    assert sorted(os.listdir(seq / "velodyne")) == ["000000.bin", "000001.bin"]
    points, labels = make_scan(7, "00", 1)
    assert (seq / "velodyne" / "000001.bin").stat().st_size == 16 * len(points)
    np.testing.assert_array_equal(read_points(str(seq / "velodyne" / "000001.bin")), points)
    np.testing.assert_array_equal(read_labels(str(seq / "labels" / "000001.label")), labels)
    assert 20_000 <= len(points) <= 120_000
    assert len((seq / "poses.txt").read_text().splitlines()) == 2


def test_generator_is_deterministic_and_varies_by_scan():
    a, b = make_scan(3, "00", 0), make_scan(3, "00", 0)
    np.testing.assert_array_equal(a[0], b[0])
    assert len(make_scan(3, "00", 1)[0]) != len(a[0])


def test_synthetic_scans_have_moving_objects_instances_and_many_classes():
    _, raw = make_scan(0, "00", 0)
    semantic = raw & 0xFFFF
    assert (semantic >= 252).any() and (semantic == 1).any() and (semantic == 0).any()
    assert (raw >> 16).max() > 0  # instance ids in the upper bits
    assert len(np.unique(map_labels(raw))) >= 15


def test_learning_map_on_every_raw_id_with_instance_bits():
    raw_ids = np.array(sorted(LEARNING_MAP), dtype=np.uint32)
    with_instances = raw_ids | (np.arange(len(raw_ids), dtype=np.uint32) + 1) << 16
    mapped = map_labels(with_instances)
    assert mapped.tolist() == [LEARNING_MAP[r] for r in raw_ids.tolist()]
    assert mapped.max() == 19 and mapped.min() == 0


def test_unknown_raw_ids_map_to_zero_with_a_counting_warning(log_lines):
    for _ in range(2):  # a file read every epoch: one warning
        mapped = map_labels(np.array([10, 5, 5, 300, 40], dtype=np.uint32), "x.label")
    assert mapped.tolist() == [1, 0, 0, 0, 9]
    assert log_lines == [
        "WARNING lazytrain.lidar.semantic_kitti: x.label: 3 points have raw ids not in the learning map (5, 300); "
        "they are mapped to 0 (unlabeled)."
    ]


def test_projection_of_hand_computed_points():
    proj = RangeProjection(height=64, width=2048, means=None, stds=None)
    points = np.array([[10.0, 0.0, 0.0, 0.5], [0.0, 5.0, -5.0, 0.25]], dtype=np.float32)
    out = proj(points)
    # (10, 0, 0): yaw 0 -> u = 0.5 * 2048; pitch 0 -> v = (1 - 25/28) * 64 = 6.86 -> 6
    assert (out.v[0], out.u[0]) == (6, 1024)
    # (0, 5, -5): yaw 90° -> u = 0.25 * 2048; pitch -45° -> v = (1 + 20/28) * 64 = 109.7 -> clipped to 63
    assert (out.v[1], out.u[1]) == (63, 512)
    np.testing.assert_allclose(out.image[:, 6, 1024], [10.0, 10.0, 0.0, 0.0, 0.5])
    assert out.mask.sum() == 2 and out.pixel_point[6, 1024] == 0


def test_projection_keeps_the_closest_point_of_a_pixel():
    points = np.array([[20.0, 0, 0, 0.1], [10.0, 0, 0, 0.9], [30.0, 0, 0, 0.5]], dtype=np.float32)
    out = RangeProjection(means=None, stds=None)(points)
    assert out.range_image[6, 1024] == pytest.approx(10.0)
    assert out.pixel_point[6, 1024] == 1 and out.image[4, 6, 1024] == pytest.approx(0.9)
    assert out.mask.sum() == 1 and (out.v == 6).all()  # every point still knows its pixel


def reference_pixels(points, height=64, width=2048, fov_up=3.0, fov_down=-25.0):
    """semantic-kitti-api's LaserScan.do_range_projection, in float32 as it computes (an independent transcription
    of its formulas): pixel rows and columns of every point, and the point each pixel shows (argsort by range)."""
    xyz = points[:, :3]
    depth = np.linalg.norm(xyz, 2, axis=1)
    yaw = -np.arctan2(xyz[:, 1], xyz[:, 0])
    pitch = np.arcsin(xyz[:, 2] / (depth + 1e-8))
    up, down = fov_up / 180.0 * np.pi, fov_down / 180.0 * np.pi
    proj_x = 0.5 * (yaw / np.pi + 1.0) * width
    proj_y = (1.0 - (pitch + abs(down)) / (abs(down) + abs(up))) * height
    u = np.maximum(0, np.minimum(width - 1, np.floor(proj_x))).astype(np.int64)
    v = np.maximum(0, np.minimum(height - 1, np.floor(proj_y))).astype(np.int64)
    order = np.argsort(depth)[::-1]
    idx = np.full((height, width), -1, dtype=np.int64)
    idx[v[order], u[order]] = order
    return v, u, idx, depth


def test_projection_puts_every_point_where_the_reference_does():
    points, _ = make_scan(5, "00", 0, columns=2150)  # real density: ~120k points
    ref_v, ref_u, ref_idx, depth = reference_pixels(points)
    out = RangeProjection(means=None, stds=None)(points)
    np.testing.assert_array_equal(out.v, ref_v)
    np.testing.assert_array_equal(out.u, ref_u)
    np.testing.assert_array_equal(out.mask, ref_idx >= 0)
    shown = out.pixel_point[out.mask]  # the nearest point of each pixel (ties aside, the reference's choice)
    np.testing.assert_array_equal(depth[shown], depth[ref_idx[out.mask]])
    np.testing.assert_array_equal(out.range_image[out.mask], depth[shown])
    np.testing.assert_array_equal(out.image[1:4, out.mask], points[shown, :3].T)


def test_a_scan_with_nan_points_is_named_and_trains(tmp_path, log_lines):
    root = tmp_path / "kitti"
    write_synthetic_kitti(str(root), ["00"], scans=1, seed=2, columns=256)
    path = root / "dataset" / "sequences" / "00" / "velodyne" / "000000.bin"
    points = np.fromfile(path, dtype="<f4").reshape(-1, 4)
    points[[3, 10, 11], 0] = np.nan
    points[20, 3] = np.inf
    points.tofile(path)
    train = SemanticKittiDataset(str(root), sequences=["00"], width=256, augment=True)
    sample = train[0]
    warning = f"WARNING lazytrain.lidar.dataset: scan '{path}' has 4 points with NaN or infinite values; they are"
    assert log_lines[-1] == warning + " dropped."
    assert torch.isfinite(sample["image"]).all()
    evaluate = SemanticKittiDataset(str(root), sequences=["00"], width=256, return_points=True)
    sample = evaluate[0]
    assert log_lines[-1].endswith("they are left out of the range image and of the metrics (label 0).")
    assert len(sample["point_labels"]) == len(points)  # every point keeps its place (predictions need them all)
    assert (sample["point_labels"][[3, 10, 11, 20]] == 0).all() and torch.isfinite(sample["image"]).all()


def test_dataset_sample_shapes_and_labels(kitti_root):
    ds = SemanticKittiDataset(str(kitti_root), sequences=["08"], width=256, return_points=True)
    sample = ds[0]
    assert sample["image"].shape == (5, 64, 256) and sample["label_image"].shape == (64, 256)
    assert sample["label_image"].max() <= 19 and (sample["label_image"][~sample["mask"]] == 0).all()
    n = len(sample["point_labels"])
    assert sample["proj_v"].shape == (n,) and sample["point_range"].shape == (n,)
    batch = collate_scans([ds[0], ds[1]])
    assert batch["image"].shape == (2, 5, 64, 256) and isinstance(batch["point_labels"], list)


def test_augmentation_follows_the_global_numpy_seed(kitti_root):
    ds = SemanticKittiDataset(str(kitti_root), sequences=["00"], width=256, augment=True)
    np.random.seed(1)
    a = ds[0]["image"]
    np.random.seed(1)
    assert torch.equal(a, ds[0]["image"])
    np.random.seed(2)
    assert not torch.equal(a, ds[0]["image"])


def corrupt_copy(kitti_root, tmp_path):
    root = tmp_path / "k"
    write_synthetic_kitti(str(root), ["00"], scans=1, seed=7)
    return root / "dataset" / "sequences" / "00"


def test_scan_size_not_multiple_of_16_names_the_file(kitti_root, tmp_path):
    seq = corrupt_copy(kitti_root, tmp_path)
    with open(seq / "velodyne" / "000000.bin", "ab") as f:
        f.write(b"\0" * 5)
    with pytest.raises(DataError, match=r"000000\.bin' is corrupt: .* not a positive multiple of 16"):
        SemanticKittiDataset(str(tmp_path / "k"), sequences=["00"])


def test_label_count_mismatch_names_both_files(kitti_root, tmp_path):
    seq = corrupt_copy(kitti_root, tmp_path)
    with open(seq / "labels" / "000000.label", "ab") as f:
        f.write(b"\0" * 8)
    with pytest.raises(DataError) as info:
        SemanticKittiDataset(str(tmp_path / "k"), sequences=["00"])
    assert "000000.label' holds" in str(info.value) and "000000.bin' has" in str(info.value)


def test_missing_label_and_missing_sequence_are_named(kitti_root, tmp_path):
    seq = corrupt_copy(kitti_root, tmp_path)
    os.remove(seq / "labels" / "000000.label")
    with pytest.raises(DataError, match=r"label file '.*000000\.label' .* does not exist"):
        SemanticKittiDataset(str(tmp_path / "k"), sequences=["00"])
    with pytest.raises(DataError, match=r"sequences/05/velodyne' does not exist"):
        SemanticKittiDataset(str(tmp_path / "k"), sequences=["05"])


def test_synthetic_scans_are_written_only_where_no_real_data_is(tmp_path, kitti_root):
    empty = tmp_path / "fresh"
    ds = SemanticKittiDataset(str(empty), sequences=["00"], synthetic_scans=2)
    assert len(ds) == 2 and (empty / "SYNTHETIC.txt").exists()
    real = tmp_path / "real"
    write_synthetic_kitti(str(real), ["00"], scans=1)
    os.remove(real / "SYNTHETIC.txt")  # now it looks like a real data set: never add to it
    with pytest.raises(DataError, match="sequences/08/velodyne"):
        SemanticKittiDataset(str(real), sequences=["08"], synthetic_scans=2)


def test_a_root_without_scans_is_an_error_and_gets_no_synthetic_scans(tmp_path):
    typo = tmp_path / "semantic_kiti"
    with pytest.raises(ConfigError) as info:
        SemanticKittiDataset(str(typo), sequences=["08"], synthetic_default_root=str(tmp_path / "semantic_kitti"),
                             synthetic_default_scans=1)  # fmt: skip
    message = str(info.value)
    assert f"no SemanticKITTI scans under '{typo}': it does not exist" in message and "dataset.root" in message
    assert not typo.exists()
    (typo / "dataset").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"semantic_kiti': it holds no dataset/sequences/<SS>/velodyne folder"):
        SemanticKittiDataset(str(typo), sequences=["08"])
    # the default root gets its synthetic set; any root gets one with synthetic_scans (an explicit opt-in)
    default = tmp_path / "semantic_kitti"
    ds = SemanticKittiDataset(str(default), sequences=["08"], synthetic_default_root=str(default),
                              synthetic_default_scans=1)  # fmt: skip
    assert len(ds) == 1 and (default / "SYNTHETIC.txt").exists()


def test_flagship_writes_synthetic_scans_only_at_its_default_root(tmp_path):
    typo = tmp_path / "SemanticKITI"
    cfg = load_config(REPO / "configs" / "kitti_seg.py", f"dataset.root={typo}")
    with pytest.raises(ConfigError) as info:
        instantiate(cfg.dataloader.test.dataset, key="dataloader.test.dataset")
    assert str(info.value).startswith("dataloader.test.dataset: no SemanticKITTI scans under") and str(typo) in str(
        info.value
    )
    assert not typo.exists()
    default = tmp_path / "default"  # moving the default root moves dataset.root with it
    cfg = load_config(REPO / "configs" / "kitti_seg.py", f"dataset.synthetic_default.root={default}",
                      "dataset.synthetic_default.scans=1")  # fmt: skip
    assert cfg.dataset.root == str(default)
    assert len(instantiate(cfg.dataloader.test.dataset)) == 1 and (default / "SYNTHETIC.txt").exists()


def write_tiny_scans(root, sequence: str, raw_labels: list[list[int]]) -> None:
    """Hand-made scans: one per list of raw labels, a point per label."""
    folder = root / "dataset" / "sequences" / sequence
    (folder / "velodyne").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(exist_ok=True)
    for i, labels in enumerate(raw_labels):
        points = np.ones((len(labels), 4), dtype="<f4") * np.float32(i + 1)
        points.tofile(folder / "velodyne" / f"{i:06d}.bin")
        np.asarray(labels, dtype="<u4").tofile(folder / "labels" / f"{i:06d}.label")


def test_class_weights_count_every_label_file_of_the_split(tmp_path):
    # sequence 00: 9 scans of road (raw 40 -> 9); sequence 01: 2 scans of car (10 -> 1) and unlabeled (0)
    write_tiny_scans(tmp_path, "00", [[40, 40]] * 9)
    write_tiny_scans(tmp_path, "01", [[10, 0, 0]] * 2)
    weights = compute_class_weights(str(tmp_path), 20, sequences=["00", "01"], cache_dir=str(tmp_path / "c"))
    counts = np.zeros(20, dtype=np.int64)
    counts[[0, 1, 9]] = [4, 2, 18]
    assert weights == pytest.approx(class_weights_from_counts(counts))
    assert weights == compute_class_weights(str(tmp_path), 20, sequences=["00", "01"], cache_dir=str(tmp_path / "c"))
    # a sample spreads over the whole split: the last sequence is in it (taking the first scans would miss it)
    sampled = compute_class_weights(str(tmp_path), 20, sequences=["00", "01"], max_scans=4, cache_dir=str(tmp_path))
    assert sampled[1] < 1000.0 and sampled[9] < 1000.0
    ds = SemanticKittiDataset(str(tmp_path), sequences=["00", "01"], max_scans=4)
    assert [s.sequence for s in ds.scans] == ["00", "00", "00", "01"]
    assert evenly_spread(list(range(11)), 4) == [1, 4, 6, 9] and evenly_spread([1, 2], 5) == [1, 2]


def test_building_the_flagship_model_reads_no_training_labels(tmp_path):
    root = tmp_path / "data"  # nothing there: reading it would be a DataError
    cfg = load_config(REPO / "configs" / "kitti_seg.py", f"dataset.root={root}", "model.width=8", "model.depth=2",
                      "model.class_weights.sequences=['00']",
                      f"model.class_weights.cache_dir={tmp_path / 'c'}")  # fmt: skip
    model = instantiate(cfg.model, key="model")
    model.eval()
    batch = {"image": torch.randn(1, 5, 8, 16), "label_image": torch.randint(0, 20, (1, 8, 16))}
    assert model(batch).shape == (1, 20, 8, 16)
    assert not root.exists() and not (tmp_path / "c").exists()
    assert torch.isnan(model.class_weights).all()  # not computed yet

    write_tiny_scans(root, "00", [[40, 40, 10, 0]])
    model.train()
    model(batch)["loss_ce"].backward()  # the first training step computes them
    expected = class_weights_from_counts(np.bincount([9, 9, 1, 0], minlength=20))
    assert model.class_weights.tolist() == pytest.approx(expected)

    # a checkpoint holds them: a model loading it trains without reading any label
    elsewhere = RangeNet(num_classes=20, width=8, depth=2,
                         class_weights=ClassWeightsFromLabels(str(tmp_path / "nowhere"), 20))  # fmt: skip
    elsewhere.load_state_dict(model.state_dict())
    assert torch.isfinite(elsewhere(batch)["loss_ce"])
    assert elsewhere.class_weights.tolist() == pytest.approx(expected)


def test_rangenet_trains_and_predicts_full_resolution_logits():
    model = RangeNet(num_classes=20, width=8, depth=2, class_weights=[0.0] + [1.0] * 19)
    batch = {"image": torch.randn(2, 5, 16, 64), "label_image": torch.randint(0, 20, (2, 16, 64))}
    loss = model(batch)["loss_ce"]
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    model.eval()
    assert model(batch).shape == (2, 20, 16, 64)
    with pytest.raises(ValueError, match="class_weights has 3 entries but num_classes is 20"):
        RangeNet(num_classes=20, class_weights=[1.0, 1.0, 1.0])


def test_class_weights_follow_rangenet_formula():
    weights = class_weights_from_counts([100, 50, 25, 25])
    assert weights[0] == 0.0
    # fractions of all points (the unlabeled ones too, as RangeNet++ counts them)
    assert weights[1] == pytest.approx(1 / (0.25 + 0.001)) and weights[2] == pytest.approx(1 / (0.125 + 0.001))


@pytest.fixture(scope="module")
def flagship_run(tmp_path_factory):
    """A short flagship training run on synthetic scans: its output folder."""
    tmp_path = tmp_path_factory.mktemp("flagship")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "lazytrain.cli", "train", str(REPO / "configs" / "kitti_seg.py"),
           f"dataset.root={tmp_path / 'data'}", "dataset.synthetic_scans=4", "dataset.projection.width=256",
           "model.width=8", "model.depth=2", "train.max_iter=100", "optimizer.lr=0.01",
           "dataloader.train.dataset.sequences=['00','01']", "dataloader.test.dataset.sequences=['08']",
           f"model.class_weights.cache_dir={tmp_path / 'cache'}",  # the weights read the training sequences
           "dataloader.train.num_workers=0", "dataloader.test.num_workers=0", f"--output-dir={out}"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), cwd=tmp_path)
    assert r.returncode == 0, r.stderr + r.stdout[-2000:]
    assert "writing 4 synthetic scans per sequence" in r.stdout
    return out


def test_flagship_tiny_run_beats_chance_miou(flagship_run):
    final = [json.loads(line) for line in (flagship_run / "metrics.jsonl").read_text().splitlines() if "mIoU" in line][
        -1
    ]
    chance = 1 / 19
    assert final["mIoU"] > 3 * chance, final
    assert final["IoU/road"] > 0.5 and final["accuracy"] > 0.5
    assert len([k for k in final if k.startswith("IoU/")]) == 19  # the official mean is over all 19 classes


def test_eval_of_the_flagship_reads_only_the_validation_split(flagship_run, tmp_path):
    data = tmp_path / "data"
    cmd = [sys.executable, "-m", "lazytrain.cli", "eval", str(REPO / "configs" / "kitti_seg.py"),
           "--weights", str(flagship_run / "checkpoints" / "model_final.pth"), f"dataset.root={data}",
           "dataset.synthetic_scans=1", "dataset.projection.width=256", "model.width=8", "model.depth=2",
           "dataloader.test.dataset.sequences=['08']", "dataloader.test.num_workers=0",
           f"--output-dir={tmp_path / 'eval'}"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), cwd=tmp_path)
    assert r.returncode == 0, r.stderr + r.stdout[-2000:]
    assert sorted(os.listdir(data / "dataset" / "sequences")) == ["08"]  # no training sequence written or read
    assert "not found in the checkpoint" not in r.stdout + r.stderr  # the class weights came with it
    assert "mIoU" in (tmp_path / "eval" / "eval" / "metrics.jsonl").read_text()


def test_a_dataset_root_typo_exits_2_and_the_error_is_in_log_txt(tmp_path):
    typo, out = tmp_path / "SemanticKITI", tmp_path / "out"
    r = subprocess.run(
        [sys.executable, "-m", "lazytrain.cli", "train", str(REPO / "configs" / "kitti_seg.py"),
         f"dataset.root={typo}", f"train.output_dir={out}", "dataset.projection.width=128"],
        capture_output=True, text=True, env=cli_env(), cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    closing = f"dataloader.train.dataset: no SemanticKITTI scans under '{typo}': it does not exist"
    assert r.stderr.strip().splitlines()[-1].startswith(f"error: {closing}")
    assert f"ERROR]: {closing}" in (out / "log.txt").read_text()
