"""LiDAR semantic segmentation on SemanticKITTI: the flagship example. It uses the engine; the engine never
imports it."""

from .darknet import RangeNetPP
from .dataset import ClassWeightsFromLabels, SemanticKittiDataset, collate_scans, compute_class_weights
from .evaluator import SemanticKittiEvaluator, accuracy_from_confusion, iou_from_confusion, knn_postprocess
from .model import RangeNet
from .predictions import SemanticKittiSubmission, validate_submission
from .projection import RangeProjection
from .semantic_kitti import (
    CLASS_NAMES,
    COLOR_MAP_BGR,
    LEARNING_MAP,
    LEARNING_MAP_INV,
    OFFICIAL_SPLIT,
    class_colors,
    map_labels,
    read_labels,
    read_points,
    to_raw_ids,
)
from .synthetic import make_scan, write_synthetic_kitti

__all__ = [
    "CLASS_NAMES",
    "COLOR_MAP_BGR",
    "LEARNING_MAP",
    "LEARNING_MAP_INV",
    "OFFICIAL_SPLIT",
    "ClassWeightsFromLabels",
    "RangeNet",
    "RangeNetPP",
    "RangeProjection",
    "SemanticKittiDataset",
    "SemanticKittiEvaluator",
    "SemanticKittiSubmission",
    "accuracy_from_confusion",
    "class_colors",
    "collate_scans",
    "compute_class_weights",
    "iou_from_confusion",
    "knn_postprocess",
    "make_scan",
    "map_labels",
    "read_labels",
    "read_points",
    "to_raw_ids",
    "validate_submission",
    "write_synthetic_kitti",
]
