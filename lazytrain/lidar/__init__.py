"""LiDAR semantic segmentation on SemanticKITTI: the flagship example. It uses the engine; the engine never
imports it.

The public names load on first use (module ``__getattr__``): ``python -m lazytrain.lidar.predictions`` then runs
a module the package has not imported yet (no runpy RuntimeWarning), and ``import lazytrain.lidar`` costs
nothing until a name is used."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_MODULE_OF = {
    "AuxiliaryHeadLosses": "losses",
    "BoundaryLoss": "losses",
    "CENet": "cenet",
    "CLASS_NAMES": "semantic_kitti",
    "COLOR_MAP_BGR": "semantic_kitti",
    "ClassWeightsFromLabels": "dataset",
    "LEARNING_MAP": "semantic_kitti",
    "LEARNING_MAP_INV": "semantic_kitti",
    "LossTerms": "losses",
    "LovaszSoftmaxLoss": "losses",
    "OFFICIAL_SPLIT": "semantic_kitti",
    "RangeNet": "model",
    "RangeNetPP": "darknet",
    "RangeProjection": "projection",
    "SalsaNext": "salsanext",
    "SemanticKittiDataset": "dataset",
    "SemanticKittiEvaluator": "evaluator",
    "SemanticKittiSubmission": "predictions",
    "WeightedCrossEntropyLoss": "losses",
    "WeightedNLLLoss": "losses",
    "accuracy_from_confusion": "evaluator",
    "class_colors": "semantic_kitti",
    "collate_scans": "dataset",
    "compute_class_weights": "dataset",
    "iou_from_confusion": "evaluator",
    "knn_postprocess": "evaluator",
    "lovasz_softmax": "losses",
    "make_scan": "synthetic",
    "map_labels": "semantic_kitti",
    "read_labels": "semantic_kitti",
    "read_points": "semantic_kitti",
    "to_raw_ids": "semantic_kitti",
    "validate_submission": "predictions",
    "write_synthetic_kitti": "synthetic",
}

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


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
