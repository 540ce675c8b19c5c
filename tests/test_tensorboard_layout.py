"""What a LiDAR user sees in TensorBoard after a tiny flagship run: the headline metrics first, the per-class IoUs
in a group (and a Custom Scalars chart) of their own."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO, cli_env

from lazytrain.lidar import SemanticKittiDataset, SemanticKittiEvaluator, collate_scans, write_synthetic_kitti


@pytest.fixture(scope="module")
def flagship_events(tmp_path_factory):
    """The TensorBoard events of 4 iterations of configs/kitti_seg.py on 2 synthetic scans, evaluated twice."""
    from tensorboard.backend.event_processing.event_accumulator import IMAGES, TENSORS, EventAccumulator

    tmp_path = tmp_path_factory.mktemp("flagship")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "lazytrain.cli", "train", str(REPO / "configs" / "kitti_seg.py"),
           f"dataset.root={tmp_path / 'data'}", "dataset.synthetic_scans=2", "dataset.projection.width=256",
           "model.width=8", "model.depth=2", "train.max_iter=4", "train.eval_period=2", "train.log_period=2",
           "dataloader.train.dataset.sequences=['08']", "dataloader.test.dataset.sequences=['08']",
           "dataloader.train.batch_size=2", "evaluator.picture_scans=1",
           f"model.class_weights.cache_dir={tmp_path / 'cache'}", "dataloader.train.num_workers=0",
           "dataloader.test.num_workers=0", f"--output-dir={out}"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), cwd=tmp_path)
    assert r.returncode == 0, r.stderr + r.stdout[-2000:]
    events = EventAccumulator(str(out), size_guidance={IMAGES: 0, TENSORS: 0})
    events.Reload()
    return events


def test_miou_is_the_first_card_of_the_val_group_and_per_class_ious_have_their_own(flagship_events):
    scalars = sorted(flagship_events.Tags()["scalars"])  # TensorBoard's card order
    val = [tag for tag in scalars if tag.startswith("val/")]
    # the val group holds the headline numbers only: all of its cards on TensorBoard's first page
    assert {"val/mIoU", "val/accuracy"} <= set(val) and len(val) <= 6, val
    per_class = [tag for tag in scalars if tag.startswith("val_IoU/")]
    assert len(per_class) == 19 and "val_IoU/car" in per_class
    assert scalars.index("val/mIoU") < scalars.index(per_class[0])


def test_custom_scalars_tab_has_one_chart_of_all_per_class_ious(flagship_events):
    from tensorboard.plugins.custom_scalar import layout_pb2, metadata

    layout = layout_pb2.Layout()
    layout.ParseFromString(flagship_events.Tensors(metadata.CONFIG_SUMMARY_TAG)[-1].tensor_proto.string_val[0])
    charts = {chart.title: chart for category in layout.category for chart in category.chart}
    iou = next(chart for title, chart in charts.items() if "IoU" in title)
    assert list(iou.multiline.tag) == [r"val_IoU/.*"]
    assert any("loss" in title for title in charts)


def test_validation_loss_grad_norm_and_throughput_are_curves(flagship_events):
    scalars = flagship_events.Tags()["scalars"]
    assert [e.step for e in flagship_events.Scalars("val/loss")] == [2, 4]  # at each evaluation
    assert all(e.value > 0 for e in flagship_events.Scalars("val/loss"))
    assert "train/grad_norm" in scalars  # the flagship clips nothing: logged all the same
    assert flagship_events.Scalars("train/samples_per_second")[-1].value > 0


@pytest.mark.parametrize("weighted", [False, True])
def test_validation_loss_is_the_cross_entropy_of_the_labelled_pixels_over_the_split(tmp_path, weighted):
    write_synthetic_kitti(str(tmp_path), ["08"], scans=3, seed=1, columns=64)
    data = SemanticKittiDataset(str(tmp_path), split="valid", width=64, return_points=True)
    weights = [0.0] + [1.0 + c / 10 for c in range(1, 20)] if weighted else None
    evaluator = SemanticKittiEvaluator(picture_scans=0, class_weights=weights)
    torch.manual_seed(0)
    batches = [collate_scans([data[0], data[1]]), collate_scans([data[2]])]
    logits = [torch.randn(len(b["index"]), 20, *b["label_image"].shape[1:]) for b in batches]
    for batch, output in zip(batches, logits):
        evaluator.process(batch, output)
    every_pixel = torch.cat([x.permute(0, 2, 3, 1).reshape(-1, 20) for x in logits])
    labels = torch.cat([b["label_image"].reshape(-1) for b in batches])
    expected = torch.nn.functional.cross_entropy(
        every_pixel, labels, weight=None if weights is None else torch.tensor(weights), ignore_index=0
    )
    assert evaluator.evaluate()["loss"] == pytest.approx(float(expected), rel=1e-5)


def test_learning_rate_is_also_logged_as_its_log10_so_a_small_lr_does_not_read_zero(flagship_events):
    import math

    lr = {e.step: e.value for e in flagship_events.Scalars("train/lr")}
    lr_log10 = {e.step: e.value for e in flagship_events.Scalars("train/lr_log10")}
    assert lr_log10.keys() == lr.keys()
    assert all(lr_log10[step] == pytest.approx(math.log10(lr[step]), rel=1e-6) for step in lr)


def _holds(picture, patch) -> bool:
    """Whether ``patch`` appears in ``picture`` pixel for pixel (each row of the patch found as bytes)."""
    rows = [picture[y].tobytes() for y in range(picture.shape[0])]
    first = patch[0].tobytes()
    for y in range(picture.shape[0] - patch.shape[0] + 1):
        start = rows[y].find(first)
        while start >= 0:
            if start % 3 == 0:
                x = start // 3
                if (picture[y : y + patch.shape[0], x : x + patch.shape[1]] == patch).all():
                    return True
            start = rows[y].find(first, start + 1)
    return False


def test_pictures_are_labelled_and_tall_enough_to_read(flagship_events):
    from test_pictures import decode_png

    from lazytrain.images import text_image

    images = {tag: decode_png(flagship_events.Images(tag)[-1].encoded_image_string) for tag in
              ("val_pictures/scans/08_000000", "val_pictures/confusion_matrix", "val_pictures/IoU")}  # fmt: skip
    scan = images["val_pictures/scans/08_000000"]
    assert scan.shape[0] > 4 * 3 * 64  # 64 beams, rows tripled (was doubled: 2 x 64 per panel)
    size = max(16, scan.shape[1] // 28)  # the scan's text grows with its width: ~12 px in a ~350 px card
    for title in ("ground truth", "prediction"):
        assert _holds(scan, text_image(title, size)), title
    assert _holds(scan, text_image("vegetation", size))  # the legend
    for name in ("car", "traffic-sign", "0.5"):  # the class names and the colour scale
        assert _holds(images["val_pictures/confusion_matrix"], text_image(name)), name
    assert _holds(images["val_pictures/confusion_matrix"], np.rot90(text_image("car")))  # the columns' names
    assert _holds(images["val_pictures/IoU"], text_image("road")) and images["val_pictures/IoU"].shape[0] > 19 * 14
