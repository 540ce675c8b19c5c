"""Pictures: the PNG encoder, EventStorage images in TensorBoard event files, the SemanticKITTI colours, the
evaluator's pictures of a few fixed scans, and a flagship run whose event file holds them."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib

import numpy as np
import torch
from conftest import REPO, cli_env

from lazytrain.events import EventStorage, TensorboardWriter
from lazytrain.images import encode_png
from lazytrain.lidar import (
    SemanticKittiDataset,
    SemanticKittiEvaluator,
    class_colors,
    collate_scans,
    write_synthetic_kitti,
)


def decode_png(data: bytes) -> np.ndarray:
    """An independent reader of the PNGs encode_png writes (8-bit, filter 0 rows)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        assert struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])[0] == zlib.crc32(kind + body)
        chunks[kind] = chunks.get(kind, b"") + body
        pos += 12 + length
    width, height, depth, color_type = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    channels = 3 if color_type == 2 else 1
    rows = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), dtype=np.uint8).reshape(height, -1)
    assert depth == 8 and (rows[:, 0] == 0).all()
    return rows[:, 1:].reshape(height, width, channels)


def test_png_round_trip_of_rgb_and_grey():
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    assert (decode_png(encode_png(rgb)) == rgb).all()
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert (decode_png(encode_png(grey))[:, :, 0] == grey).all()


def test_colours_are_the_official_bgr_map_as_rgb():
    colors = class_colors()
    assert colors.shape == (20, 3)
    assert tuple(colors[1]) == (100, 150, 245)  # car: [245, 150, 100] BGR in semantic-kitti.yaml
    assert tuple(colors[9]) == (255, 0, 255)  # road


def read_images(log_dir) -> dict[str, list]:
    from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={IMAGES: 0})
    acc.Reload()
    return {tag: acc.Images(tag) for tag in acc.Tags()["images"]}


def test_images_put_in_the_storage_reach_tensorboard_once(tmp_path):
    storage = EventStorage(start_iter=5)
    writer = TensorboardWriter(str(tmp_path))
    picture = np.zeros((4, 6, 3), dtype=np.uint8)
    picture[:, :, 0] = 200
    storage.put_image("scans/08_000000", picture)
    storage.put_scalar("mIoU", 0.5, group="val")
    writer.write(storage)
    writer.write(storage)  # nothing new: the image is not written twice
    storage.iter = 10
    storage.put_image("scans/08_000000", picture)
    writer.write(storage)
    writer.close()
    images = read_images(tmp_path)
    events = images["val_pictures/scans/08_000000"]
    assert [e.step for e in events] == [6, 11]  # put at indices 5 and 10: after 6 and 11 iterations
    assert (events[0].width, events[0].height) == (6, 4)
    assert (decode_png(events[0].encoded_image_string) == picture).all()


def test_evaluator_draws_the_first_scans_and_the_confusion_matrix(tmp_path):
    write_synthetic_kitti(str(tmp_path), ["08"], scans=3, seed=1, columns=256)
    data = SemanticKittiDataset(str(tmp_path), split="valid", width=256, return_points=True)
    evaluator = SemanticKittiEvaluator(picture_scans=2)
    for start in (0, 2):
        batch = collate_scans([data[i] for i in range(start, min(start + 2, len(data)))])
        logits = torch.nn.functional.one_hot(batch["label_image"], 20).permute(0, 3, 1, 2).float()
        evaluator.process(batch, logits)
    evaluator.evaluate()
    pictures = evaluator.pictures()
    assert list(pictures) == ["scans/08_000000", "scans/08_000001", "confusion_matrix", "IoU"]
    scan = pictures["scans/08_000000"]
    # 4 panels of 64 rows tripled, each under its title, and the class legend below
    assert scan.shape[0] > 4 * 3 * 64 + 4 * 12 and scan.shape[1] == 256 and scan.dtype == np.uint8
    assert not (scan == [230, 30, 30]).all(axis=2).any()  # a perfect prediction: no red in the error mask
    confusion = pictures["confusion_matrix"]
    assert confusion.shape[0] > 19 * 16 + 50 and confusion.shape[1] > 19 * 16 + 50  # 19 classes and their names


def test_flagship_training_writes_scan_pictures_and_confusion_matrix_to_tensorboard(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "lazytrain.cli", "train", str(REPO / "configs" / "kitti_seg.py"),
           f"dataset.root={tmp_path / 'data'}", "dataset.synthetic_scans=2", "dataset.projection.width=256",
           "model.width=8", "model.depth=2", "train.max_iter=4", "train.eval_period=2", "train.log_period=2",
           "dataloader.train.dataset.sequences=['08']", "dataloader.test.dataset.sequences=['08']",
           "dataloader.train.batch_size=2",
           f"model.class_weights.cache_dir={tmp_path / 'cache'}", "dataloader.train.num_workers=0",
           "dataloader.test.num_workers=0", f"--output-dir={out}"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), cwd=tmp_path)
    assert r.returncode == 0, r.stderr + r.stdout[-2000:]
    images = read_images(out)
    assert {
        "val_pictures/scans/08_000000",
        "val_pictures/scans/08_000001",
        "val_pictures/confusion_matrix",
        "val_pictures/IoU",
    } <= set(images)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars = EventAccumulator(str(out))
    scalars.Reload()
    evaluations = [e.step for e in scalars.Scalars("val/mIoU")]
    assert len(evaluations) == 2  # at each evaluation: the pictures with the mIoU
    assert [e.step for e in images["val_pictures/confusion_matrix"]] == evaluations


def test_a_wide_scan_gets_taller_rows_and_larger_text_so_it_reads_in_a_tensorboard_card():
    from test_tensorboard_layout import _holds

    from lazytrain.images import text_image
    from lazytrain.lidar.pictures import scan_picture

    def picture(width: int) -> np.ndarray:
        labels = np.arange(64 * width).reshape(64, width) % 20
        return scan_picture(np.full((64, width), 10.0), labels, labels, np.ones((64, width), bool))

    narrow, wide = picture(512), picture(2048)
    # TensorBoard shows both ~350 px wide: the 2048-column scan keeps panels and text as readable as the 512 one
    assert wide.shape[0] / wide.shape[1] >= 0.9 * narrow.shape[0] / narrow.shape[1] / 2
    assert _holds(wide, text_image("ground truth", 2048 // 28))
    assert not _holds(wide, text_image("ground truth", 16))
