"""Point-wise mIoU and accuracy for SemanticKITTI as the official ``evaluate_semantics.py`` computes them: pixel
predictions go back to every point (optionally through RangeNet++'s KNN post-processing), a confusion matrix
accumulates over the split and is summed across ranks."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..comm import all_gather, get_world_size, reduce_sum
from ..errors import ConfigError, did_you_mean
from .pictures import confusion_picture, iou_picture, scan_picture
from .semantic_kitti import CLASS_NAMES

__all__ = [
    "SemanticKittiEvaluator",
    "accuracy_from_confusion",
    "iou_from_confusion",
    "knn_postprocess",
    "pixel_classes",
    "point_classes",
]

logger = logging.getLogger(__name__)

# the official evaluation (semantic-kitti-api, np_ioueval) adds this to every denominator
_EPSILON = 1e-15

# RangeNet++'s KNN parameters (lidar-bonnetal, config/arch/*.yaml: post.KNN.params)
KNN_DEFAULTS: dict[str, float] = {"knn": 5, "search": 5, "sigma": 1.0, "cutoff": 1.0}


def iou_from_confusion(
    confusion: torch.Tensor, ignore_index: int = 0, skip_absent_classes: bool = False
) -> tuple[torch.Tensor, float]:
    """Per-class IoU ``TP / (TP + FP + FN)`` from a (ground truth × prediction) confusion matrix, and their mean
    over every class but ``ignore_index``, as the official evaluation computes them.

    Points whose ground truth is ``ignore_index`` do not count; a point of another class predicted as
    ``ignore_index`` is a false negative of its class. A class absent from the ground truth and never predicted
    gets IoU 0 and counts in the mean (the official rule: the mean is always over the 19 evaluated classes).
    ``skip_absent_classes=True`` instead gives such a class NaN and leaves it out of the mean (not comparable
    with published numbers). The ignored class gets NaN.
    """
    confusion = confusion.double().clone()
    confusion[ignore_index, :] = 0
    tp = confusion.diag()
    fp = confusion.sum(0) - tp
    fn = confusion.sum(1) - tp
    union = tp + fp + fn
    iou = tp / (union + _EPSILON)
    if skip_absent_classes:
        iou[union == 0] = float("nan")
    iou[ignore_index] = float("nan")
    valid = ~torch.isnan(iou)
    miou = float(iou[valid].mean()) if valid.any() else float("nan")
    return iou, miou


def accuracy_from_confusion(confusion: torch.Tensor, ignore_index: int = 0) -> float:
    """Overall point accuracy as the official evaluation computes it (np_ioueval ``getacc``): correct points
    over the points whose ground truth and prediction are both not ``ignore_index``."""
    confusion = confusion.double().clone()
    confusion[ignore_index, :] = 0
    confusion[:, ignore_index] = 0  # predicted as the ignored class: not in the official denominator
    return float(confusion.diag().sum() / (confusion.sum() + _EPSILON))


def inverse_gaussian_kernel(search: int, sigma: float) -> torch.Tensor:
    """``1 - g`` with ``g`` the ``search`` × ``search`` Gaussian (std ``sigma`` pixels) normalised to sum 1,
    flattened row by row: RangeNet++'s weights of range differences (nearby pixels weigh less, so they win)."""
    # float32 and this order of operations, as RangeNet++ computes it
    offsets = torch.arange(search, dtype=torch.float32) - (search - 1) / 2.0
    squared = offsets[None, :] ** 2 + offsets[:, None] ** 2
    variance = sigma**2.0
    gaussian = (1.0 / (2.0 * math.pi * variance)) * torch.exp(-squared / (2 * variance))
    return (1 - gaussian / gaussian.sum()).reshape(-1)


def knn_postprocess(
    range_image: torch.Tensor,
    pred_image: torch.Tensor,
    v: torch.Tensor,
    u: torch.Tensor,
    point_range: torch.Tensor,
    num_classes: int,
    knn: int = 5,
    search: int = 5,
    sigma: float = 1.0,
    cutoff: float = 1.0,
) -> torch.Tensor:
    """RangeNet++'s KNN post-processing (lidar-bonnetal ``postproc/KNN.py``), point for point: the label of
    every point from the ``knn`` pixels of the ``search`` × ``search`` window around its pixel ``(v, u)``
    whose range is closest to the point's own range ``point_range``.

    - Range differences are weighted by ``1 - `` a normalised Gaussian of std ``sigma`` pixels over the window
      (``inverse_gaussian_kernel``); ``cutoff`` applies to the weighted difference (``cutoff <= 0``: none).
    - The centre of the window takes the point's own range (distance 0), not the range its pixel shows
      (the closest point of that pixel), so the pixel's label always votes.
    - Empty pixels (range <= 0 in ``range_image``) never count; outside the image the window holds range 0
      and class 0, as RangeNet++'s zero padding does.
    - Votes for class 0 (unlabeled) and for neighbours beyond the cutoff are dropped: the result is never 0.
      Ties go to the lowest class id; a point with no valid vote at all gets class 1, as in RangeNet++.
    """
    if search % 2 == 0:
        raise ValueError(f"the KNN search window must be odd, got search={search}.")
    width = range_image.shape[1]
    pad = (search - 1) // 2
    # RangeNet++ marks empty pixels with range -1; padding stays 0
    proj_range = range_image.float().masked_fill(range_image <= 0, -1.0)
    ranges = F.unfold(proj_range[None, None], search, padding=pad)[0]  # (search², H*W)
    pixel = v.long() * width + u.long()
    neighbour_range = ranges[:, pixel]  # (search², N)
    neighbour_range[neighbour_range < 0] = float("inf")
    point_range = point_range.float()
    neighbour_range[(search * search - 1) // 2] = point_range
    weight = inverse_gaussian_kernel(search, sigma).to(neighbour_range)
    distance = (neighbour_range - point_range[None]).abs() * weight[:, None]
    knn_distance, knn_index = distance.topk(knn, dim=0, largest=False, sorted=False)
    labels = F.unfold(pred_image[None, None].float(), search, padding=pad)[0].long()[:, pixel]
    knn_label = labels.gather(0, knn_index)
    if cutoff > 0:
        knn_label[knn_distance > cutoff] = num_classes  # an extra class: a vote for nobody
    votes = torch.zeros(num_classes + 1, len(pixel), dtype=torch.float32, device=knn_label.device)
    votes.scatter_add_(0, knn_label, torch.ones_like(knn_label, dtype=torch.float32))
    return votes[1:num_classes].argmax(0) + 1


def _knn_settings(knn: Optional[Mapping[str, Any]]) -> Optional[dict[str, Any]]:
    if knn is None:
        return None
    unknown = [key for key in knn if key not in KNN_DEFAULTS]
    if unknown:
        raise ConfigError(
            f"knn has no setting {unknown[0]!r}; RangeNet++'s KNN takes {', '.join(KNN_DEFAULTS)}.",
            key="knn",
            hint=did_you_mean(str(unknown[0]), KNN_DEFAULTS)
            or "For example knn={knn: 5, search: 5, sigma: 1.0, cutoff: 1.0}.",
        )
    settings = {**KNN_DEFAULTS, **knn}
    if int(settings["search"]) % 2 == 0 or int(settings["search"]) < 1:
        raise ConfigError(f"knn.search must be an odd window size, got {settings['search']}.", key="knn.search")
    if not 1 <= int(settings["knn"]) <= int(settings["search"]) ** 2:
        raise ConfigError(
            f"knn.knn must be between 1 and search² = {int(settings['search']) ** 2}, got {settings['knn']}.",
            key="knn.knn",
        )
    settings["knn"], settings["search"] = int(settings["knn"]), int(settings["search"])
    return settings


def pixel_classes(outputs: torch.Tensor, ignore_index: int = 0) -> torch.Tensor:
    """``(B, H, W)`` class of each pixel from ``(B, C, H, W)`` logits: the best of every class but
    ``ignore_index``. "Unlabeled" is a label of the data, never a prediction: the loss ignores it and the official
    metric counts it as a miss of the point's class. The evaluator and the submission writer both use this, so
    ``lazytrain eval`` scores exactly what ``lazytrain predict`` writes."""
    if 0 <= ignore_index < outputs.shape[1]:
        outputs = outputs.index_fill(1, torch.tensor([ignore_index], device=outputs.device), float("-inf"))
    return outputs.argmax(dim=1)


def point_classes(
    batch: Mapping[str, Any], i: int, pred_image: torch.Tensor, num_classes: int, knn: Optional[Mapping[str, Any]]
) -> torch.Tensor:
    """The class of every point of scan ``i`` of ``batch`` (in the scan's order) from its ``(H, W)`` pixel
    classes: with ``knn`` (settings as ``knn_postprocess`` takes them) RangeNet++'s KNN post-processing, else the
    class of the point's pixel."""
    device = pred_image.device
    v, u = batch["proj_v"][i].to(device), batch["proj_u"][i].to(device)
    if knn is None:
        return pred_image[v, u]
    range_image, point_range = batch["range_image"][i].to(device), batch["point_range"][i].to(device)
    return knn_postprocess(range_image, pred_image, v, u, point_range, num_classes, **knn)


class SemanticKittiEvaluator:
    """The official SemanticKITTI evaluation (semantic-kitti-api ``evaluate_semantics.py``) of the point-wise
    predictions.

    Reads ``outputs`` (B, C, H, W logits) and the batch's ``point_labels``, ``proj_v``, ``proj_u`` (and for
    KNN ``range_image``, ``point_range``). A pixel's class is the best of every class but ``ignore_index``
    (:func:`pixel_classes`, as ``lazytrain predict`` writes them). ``evaluate()`` returns, identical on every
    rank, ``mIoU`` (the mean of the per-class IoU over every class but ``ignore_index``), ``IoU/<class>`` for
    each of those classes and ``accuracy`` (overall point accuracy), all as the official script computes them:
    by default a class absent from the ground truth and never predicted has IoU 0 and counts in the mean. With
    ``skip_absent_classes=True`` such a class is left out of the mean and of the results instead (not the
    official rule).

    ``knn``: RangeNet++'s KNN post-processing (``knn_postprocess``) with the given settings, any of
    ``knn``, ``search``, ``sigma``, ``cutoff`` (defaults: RangeNet++'s 5, 5, 1.0, 1.0); None: each point
    takes its pixel's prediction.

    ``loss``: the cross-entropy of the logits against the batch's ``label_image`` over the labelled pixels (not
    ``ignore_index``), the mean over the split, so a validation curve shows overfitting next to the training
    loss. ``class_weights`` (``num_classes`` numbers) weighs it per class as the training loss does; None (the
    default, as ``lazytrain eval`` must read no training labels) weighs all classes the same, so its level is
    not the training loss's (RangeNet++'s weights favour rare classes): compare the trends.

    ``picture_scans``: the first that many scans of the test set (by the batch's ``index``) are drawn at each
    evaluation (:func:`scan_picture`: range, ground truth, prediction, error mask), and ``pictures()`` returns
    them as ``scans/<sequence>_<frame>`` with the ``confusion_matrix`` and ``IoU`` pictures (the EvalHook
    puts them in TensorBoard as ``val/...``); 0: no pictures.
    """

    def __init__(
        self,
        num_classes: int = 20,
        class_names: Optional[Sequence[str]] = None,
        ignore_index: int = 0,
        knn: Optional[Mapping[str, Any]] = None,
        skip_absent_classes: bool = False,
        picture_scans: int = 3,
        class_weights: Optional[Sequence[float]] = None,
    ) -> None:
        names = list(class_names) if class_names is not None else list(CLASS_NAMES[:num_classes])
        if len(names) != num_classes:
            raise ValueError(f"class_names has {len(names)} names for {num_classes} classes.")
        self.num_classes, self.class_names, self.ignore_index = num_classes, names, ignore_index
        self.knn = _knn_settings(knn)
        self.skip_absent_classes = skip_absent_classes
        self.picture_scans = picture_scans
        if class_weights is not None and len(class_weights) != num_classes:
            raise ConfigError(
                f"class_weights has {len(class_weights)} entries for {num_classes} classes.", key="class_weights"
            )
        self.class_weights = None if class_weights is None else torch.tensor(list(class_weights), dtype=torch.float32)
        self._pictures: dict[str, np.ndarray] = {}
        self.reset()

    def reset(self) -> None:
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)
        self._loss = torch.zeros(2, dtype=torch.float64)  # the summed weighted loss, the summed weights
        self._scan_pictures: dict[str, np.ndarray] = {}

    def pictures(self) -> dict[str, np.ndarray]:
        """The pictures of the last ``evaluate()`` (identical on every rank): ``scans/<sequence>_<frame>``
        for the first ``picture_scans`` scans, ``confusion_matrix`` and ``IoU``; empty with ``picture_scans=0``."""
        return dict(self._pictures)

    def process(self, batch: dict[str, Any], outputs: torch.Tensor) -> None:
        if "label_image" in batch:
            self._add_loss(outputs, batch["label_image"].to(outputs.device))
        pred_images = pixel_classes(outputs, self.ignore_index)
        for i in range(pred_images.shape[0]):
            pred = point_classes(batch, i, pred_images[i], self.num_classes, self.knn)
            self.add(batch["point_labels"][i].cpu(), pred.cpu())
            if self.picture_scans > 0 and "index" in batch and int(batch["index"][i]) < self.picture_scans:
                name = f"scans/{batch['sequence'][i]}_{batch['frame'][i]}"
                self._scan_pictures[name] = scan_picture(
                    batch["range_image"][i],
                    pred_images[i],
                    batch["label_image"][i],
                    batch["mask"][i],
                    ignore_index=self.ignore_index,
                    class_names=self.class_names,
                )

    def _add_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        weight = None if self.class_weights is None else self.class_weights.to(logits.device)
        labelled = labels != self.ignore_index
        pixel_weights = labelled.double() if weight is None else weight[labels].double() * labelled
        total = F.cross_entropy(
            logits.float(), labels.long(), weight=weight, ignore_index=self.ignore_index, reduction="sum"
        )
        self._loss += torch.stack([total.double(), pixel_weights.sum()]).cpu()

    def add(self, labels: torch.Tensor, pred: torch.Tensor) -> None:
        """Count points with ground truth ``labels`` predicted as ``pred`` (ignored-class points skipped)."""
        keep = labels != self.ignore_index
        index = labels[keep].long() * self.num_classes + pred[keep].long()
        self.confusion += torch.bincount(index, minlength=self.num_classes**2).reshape(self.num_classes, -1)

    def evaluate(self) -> dict[str, Any]:
        confusion = reduce_sum(self.confusion)
        iou, miou = iou_from_confusion(confusion, self.ignore_index, self.skip_absent_classes)
        if self.picture_scans > 0:
            scans = self._scan_pictures
            if get_world_size() > 1:  # each rank drew the scans of its shard
                scans = {name: picture for part in all_gather(scans) for name, picture in part.items()}
            names = self.class_names
            self._pictures = {
                **dict(sorted(scans.items())),
                "confusion_matrix": confusion_picture(confusion, ignore_index=self.ignore_index, class_names=names),
                "IoU": iou_picture(iou, ignore_index=self.ignore_index, class_names=names),
            }
        results: dict[str, Any] = {"mIoU": miou, "accuracy": accuracy_from_confusion(confusion, self.ignore_index)}
        loss_sum, weight_sum = reduce_sum(self._loss).tolist()
        if weight_sum > 0:
            results["loss"] = loss_sum / weight_sum
        in_ground_truth, predicted = confusion.sum(1), confusion.sum(0)
        absent = []
        for c, name in enumerate(self.class_names):
            if c == self.ignore_index:
                continue
            if in_ground_truth[c] == 0 and predicted[c] == 0:
                absent.append(name)
            if not torch.isnan(iou[c]):
                results[f"IoU/{name}"] = float(iou[c])
        if absent:
            counted = "not in the mean" if self.skip_absent_classes else "IoU 0, in the mean: the official rule"
            logger.info("Classes absent from the ground truth and never predicted (%s): %s", counted, ", ".join(absent))
        return results
