"""SemanticKITTI data: the official split as range images (the real data set: dataset.root=/path/to/SemanticKITTI,
the folder that holds dataset/sequences/). Synthetic scans in the same layout are written only where asked
for: into `dataset.synthetic_default.root` (the default root) when it holds none, or into any root with
`dataset.synthetic_scans=N`; another root without scans is an error that names it."""

from lazytrain.config import LazyCall as L
from lazytrain.config import config_dict
from lazytrain.data import build_test_loader, build_train_loader
from lazytrain.lidar import SemanticKittiDataset, collate_scans

dataset = config_dict(
    root="${dataset.synthetic_default.root}",
    num_classes=20,
    # HDL-64E: 64 beams over +3°..-25°; 2048 columns on the real sensor
    projection=dict(height=64, width=2048, fov_up=3.0, fov_down=-25.0),
    # scans per sequence to write at the default root while dataset.root is that folder and it holds none
    synthetic_default=dict(root="datasets/semantic_kitti", scans=0),
    synthetic_scans=0,  # an opt-in for any dataset.root: scans per sequence to write when it holds none
)

# the keyword arguments both datasets share (a name starting with _ is not part of the config)
_scans = dict(
    root="${dataset.root}",
    height="${dataset.projection.height}",
    width="${dataset.projection.width}",
    fov_up="${dataset.projection.fov_up}",
    fov_down="${dataset.projection.fov_down}",
    synthetic_scans="${dataset.synthetic_scans}",
    synthetic_default_root="${dataset.synthetic_default.root}",
    synthetic_default_scans="${dataset.synthetic_default.scans}",
)

dataloader = config_dict(
    train=L(build_train_loader)(
        # sequences=None: the official training split (the class weights read the same sequences)
        dataset=L(SemanticKittiDataset)(split="train", sequences=None, augment=True, **_scans),
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
    # `lazytrain predict`: the scans of predict.split (the command's --split), no labels needed
    predict=L(build_test_loader)(
        dataset=L(SemanticKittiDataset)(split="${predict.split}", return_points=True, **_scans),
        batch_size=4,
        num_workers=2,
        collate_fn=collate_scans,
    ),
)
