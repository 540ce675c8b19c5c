"""LiDAR semantic segmentation on SemanticKITTI: the flagship example. It uses the engine; the engine never
imports it."""

from .cenet import CENet
from .darknet import RangeNetPP
from .dataset import ClassWeightsFromLabels, SemanticKittiDataset, collate_scans, compute_class_weights
from .evaluator import SemanticKittiEvaluator, accuracy_from_confusion, iou_from_confusion, knn_postprocess
from .losses import (
    AuxiliaryHeadLosses,
    BoundaryLoss,
    LossTerms,
    LovaszSoftmaxLoss,
    WeightedCrossEntropyLoss,
    WeightedNLLLoss,
    lovasz_softmax,
)
from .model import RangeNet
from .predictions import SemanticKittiSubmission, validate_submission
from .projection import RangeProjection
from .salsanext import SalsaNext
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
    "AuxiliaryHeadLosses",
    "BoundaryLoss",
    "CENet",
    "ClassWeightsFromLabels",
    "LossTerms",
    "LovaszSoftmaxLoss",
    "RangeNet",
    "RangeNetPP",
    "RangeProjection",
    "SalsaNext",
    "SemanticKittiDataset",
    "SemanticKittiEvaluator",
    "SemanticKittiSubmission",
    "WeightedCrossEntropyLoss",
    "WeightedNLLLoss",
    "accuracy_from_confusion",
    "class_colors",
    "collate_scans",
    "compute_class_weights",
    "iou_from_confusion",
    "knn_postprocess",
    "lovasz_softmax",
    "make_scan",
    "map_labels",
    "read_labels",
    "read_points",
    "to_raw_ids",
    "validate_submission",
    "write_synthetic_kitti",
]
