"""LiDAR semantic segmentation on SemanticKITTI with a RangeNet-style CNN: the flagship config.

The defaults fit a CPU with 2 cores (a few minutes): a synthetic data set is written to the default root
(datasets/semantic_kitti) when it holds no scans, images are 64 x 512 and the model is narrow. A `dataset.root`
set elsewhere must hold scans (or opt in with `dataset.synthetic_scans=N`). For the real data set on a GPU:
    lazytrain train configs/kitti_seg.py dataset.root=/path/to/SemanticKITTI \
        dataset.projection.width=2048 model.width=32 train.max_iter=150000 train.amp.enabled=True
A benchmark submission of the test sequences 11-21 (README: "SemanticKITTI"):
    lazytrain predict configs/kitti_seg.py --weights CKPT --split test dataset.root=/path/to/SemanticKITTI ...
"""

from .common.kitti_data import dataloader, dataset
from .common.optim import lr_multiplier, optimizer
from .common.rangenet import evaluator, export, model, predict
from .common.train import train

dataset.synthetic_default.scans = 8
dataset.projection.width = 512
model.width = 16
model.depth = 3

train.max_iter = 300
train.log_period = 20
train.eval_period = 100  # mIoU as a curve; pictures of 3 validation scans in TensorBoard
train.checkpoint_period = 100
train.output_dir = "output/kitti_seg"
