"""Point-wise mIoU for SemanticKITTI: pixel predictions go back to every point (optionally through RangeNet++'s
KNN post-processing), a confusion matrix accumulates over the split and is summed across ranks."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Optional

import torch
import torch.nn.functional as F

from ..comm import reduce_sum
from .semantic_kitti import CLASS_NAMES

__all__ = ["SemanticKittiEvaluator", "iou_from_confusion", "knn_postprocess"]

logger = logging.getLogger("lazytrain")


def iou_from_confusion(confusion: torch.Tensor, ignore_index: int = 0) -> tuple[torch.Tensor, float]:
    """Per-class IoU ``TP / (TP + FP + FN)`` from a (ground truth × prediction) confusion matrix, and their mean.

    The ignored class gets NaN. A class that is absent from the split and never predicted has no IoU (NaN)
    and does not count in the mean; one that is absent but predicted gets 0.
    """
    confusion = confusion.double()
    tp = confusion.diag()
    fp = confusion.sum(0) - tp
    fn = confusion.sum(1) - tp
    union = tp + fp + fn
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
    iou[ignore_index] = float("nan")
    valid = ~torch.isnan(iou)
    miou = float(iou[valid].mean()) if valid.any() else float("nan")
    return iou, miou


def knn_postprocess(
    range_image: torch.Tensor,
    pred_image: torch.Tensor,
    v: torch.Tensor,
    u: torch.Tensor,
    point_range: torch.Tensor,
    num_classes: int,
    k: int = 5,
    window: int = 5,
    cutoff: float = 1.0,
) -> torch.Tensor:
    """RangeNet++'s KNN: each point takes the majority label of the ``k`` pixels around its own (in a
    ``window`` × ``window`` neighbourhood) whose range is closest to the point's, ignoring those farther than
    ``cutoff`` metres; a point without such neighbours keeps its pixel's label."""
    width = range_image.shape[1]
    pad = window // 2
    ranges = F.unfold(range_image[None, None].float(), window, padding=pad)[0]  # (window², H*W)
    labels = F.unfold(pred_image[None, None].float(), window, padding=pad)[0].long()
    pixel = v * width + u
    nb_range, nb_label = ranges[:, pixel], labels[:, pixel]  # (window², N)
    distance = (nb_range - point_range[None].float()).abs()
    distance[nb_range <= 0] = float("inf")  # empty pixels and padding
    k = min(k, window * window)
    dist_k, idx = distance.topk(k, dim=0, largest=False)
    label_k = nb_label.gather(0, idx)
    label_k[dist_k > cutoff] = num_classes  # a vote for nobody
    votes = torch.zeros(num_classes + 1, len(pixel), dtype=torch.int64, device=label_k.device)
    votes.scatter_add_(0, label_k, torch.ones_like(label_k))
    votes = votes[:num_classes]
    fallback = pred_image[v, u]
    return torch.where(votes.sum(0) > 0, votes.argmax(0), fallback)


class SemanticKittiEvaluator:
    """Reads ``outputs`` (B, C, H, W logits) and the batch's ``point_labels``, ``proj_v``, ``proj_u`` (and for
    KNN ``range_image``, ``point_range``). ``evaluate()`` returns ``mIoU`` and ``IoU/<class>`` over the
    evaluated classes (all but ``ignore_index``), identical on every rank."""

    def __init__(
        self,
        num_classes: int = 20,
        class_names: Optional[Sequence[str]] = None,
        ignore_index: int = 0,
        knn: Optional[dict[str, Any]] = None,
    ) -> None:
        names = list(class_names) if class_names is not None else list(CLASS_NAMES[:num_classes])
        if len(names) != num_classes:
            raise ValueError(f"class_names has {len(names)} names for {num_classes} classes.")
        self.num_classes, self.class_names, self.ignore_index = num_classes, names, ignore_index
        self.knn = dict(knn) if knn else None
        self.reset()

    def reset(self) -> None:
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    def process(self, batch: dict[str, Any], outputs: torch.Tensor) -> None:
        pred_images = outputs.argmax(dim=1)
        for i in range(pred_images.shape[0]):
            v, u = batch["proj_v"][i].to(pred_images.device), batch["proj_u"][i].to(pred_images.device)
            if self.knn is not None:
                pred = knn_postprocess(
                    batch["range_image"][i].to(pred_images.device),
                    pred_images[i],
                    v,
                    u,
                    batch["point_range"][i].to(pred_images.device),
                    self.num_classes,
                    **self.knn,
                )
            else:
                pred = pred_images[i][v, u]
            self.add(batch["point_labels"][i].cpu(), pred.cpu())

    def add(self, labels: torch.Tensor, pred: torch.Tensor) -> None:
        """Count points with ground truth ``labels`` predicted as ``pred`` (ignored-class points skipped)."""
        keep = labels != self.ignore_index
        index = labels[keep].long() * self.num_classes + pred[keep].long()
        self.confusion += torch.bincount(index, minlength=self.num_classes**2).reshape(self.num_classes, -1)

    def evaluate(self) -> dict[str, Any]:
        confusion = reduce_sum(self.confusion)
        iou, miou = iou_from_confusion(confusion, self.ignore_index)
        results: dict[str, Any] = {"mIoU": miou}
        absent = []
        for c, name in enumerate(self.class_names):
            if c == self.ignore_index:
                continue
            if torch.isnan(iou[c]):
                absent.append(name)
            else:
                results[f"IoU/{name}"] = float(iou[c])
        if absent:
            logger.info("Classes absent from the split and never predicted (not in the mean): %s", ", ".join(absent))
        return results
