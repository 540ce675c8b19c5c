"""LiDAR semantic segmentation on SemanticKITTI: the flagship example. It uses the engine; the engine never
imports it."""

from .dataset import ClassWeightsFromLabels, SemanticKittiDataset, collate_scans, compute_class_weights
from .evaluator import SemanticKittiEvaluator, accuracy_from_confusion, iou_from_confusion, knn_postprocess
from .model import RangeNet
from .projection import RangeProjection
from .semantic_kitti import CLASS_NAMES, LEARNING_MAP, OFFICIAL_SPLIT, map_labels, read_labels, read_points
from .synthetic import make_scan, write_synthetic_kitti

__all__ = [
    "CLASS_NAMES",
    "LEARNING_MAP",
    "OFFICIAL_SPLIT",
    "ClassWeightsFromLabels",
    "RangeNet",
    "RangeProjection",
    "SemanticKittiDataset",
    "SemanticKittiEvaluator",
    "accuracy_from_confusion",
    "collate_scans",
    "compute_class_weights",
    "iou_from_confusion",
    "knn_postprocess",
    "make_scan",
    "map_labels",
    "read_labels",
    "read_points",
    "write_synthetic_kitti",
]
