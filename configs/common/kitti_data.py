"""SemanticKITTI data: the official split as range images. With no scans under `dataset.root`, synthetic
scans are written there first (the real data set: dataset.root=/path/to/SemanticKITTI)."""

from lazytrain.config import LazyCall as L
from lazytrain.data import build_test_loader, build_train_loader
from lazytrain.lidar import SemanticKittiDataset, collate_scans

dataset = dict(
    root="datasets/semantic_kitti",
    num_classes=20,
    # HDL-64E: 64 beams over +3°..-25°; 2048 columns on the real sensor
    projection=dict(height=64, width=2048, fov_up=3.0, fov_down=-25.0),
    synthetic_scans=0,  # scans per sequence to write when the root holds none (0: never)
)

# the keyword arguments both datasets share (a name starting with _ is not part of the config)
_scans = dict(
    root="${dataset.root}",
    height="${dataset.projection.height}",
    width="${dataset.projection.width}",
    fov_up="${dataset.projection.fov_up}",
    fov_down="${dataset.projection.fov_down}",
    synthetic_scans="${dataset.synthetic_scans}",
)

dataloader = dict(
    train=L(build_train_loader)(
        dataset=L(SemanticKittiDataset)(split="train", augment=True, **_scans),
        batch_size=4,
        num_workers=2,
        collate_fn=collate_scans,
        seed="${train.seed}",
    ),
    test=L(build_test_loader)(
        dataset=L(SemanticKittiDataset)(split="valid", return_points=True, **_scans),
        batch_size=4,
        num_workers=2,
        collate_fn=collate_scans,
    ),
)
