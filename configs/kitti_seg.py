"""LiDAR semantic segmentation on SemanticKITTI (the flagship). Model and data parts arrive with issue [D]."""

from .common.train import train

dataset = dict(
    root="datasets/semantic_kitti",  # dataset.root=/path/to/SemanticKITTI switches to the real data
    num_classes=20,
    train_sequences=["00", "01", "02", "03", "04", "05", "06", "07", "09", "10"],
    test_sequences=["08"],
)
train.output_dir = "output/kitti_seg"
