"""The losses of the range-image papers, each a small module a config combines: weighted cross-entropy / NLL with
RangeNet++'s ``1 / (f + 0.001)`` class weights, Berman et al.'s Lovász-Softmax, CENet's boundary loss, and the
named sum of such terms over a main head and auxiliary heads (SalsaNext: NLL + Lovász; CENet: NLL + 1.5 Lovász +
boundary on the main head and on each of its three auxiliary heads).

Class weights are never part of a model's state dict (they are a plain attribute of the loss, not a buffer):
the authors' releases carry none, so their files load under a strict key check, and evaluating a model never
needs them. A ``ClassWeightsFromLabels`` given as ``class_weights`` is called at the first training step (its
result is cached on disk per data set, so a resumed run reads it back instead of the labels).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..compile_off import not_compiled

__all__ = [
    "AuxiliaryHeadLosses",
    "BoundaryLoss",
    "ClassWeights",
    "LossTerms",
    "LovaszSoftmaxLoss",
    "WeightedCrossEntropyLoss",
    "WeightedNLLLoss",
    "lovasz_softmax",
]

ClassWeights = Union[Sequence[float], Callable[[], Sequence[float]], None]

# the authors clamp probabilities before the log: a pixel's NLL is at most -log(1e-8) = 18.4
PROBABILITY_FLOOR = 1e-8


class _DeferredClassWeights(nn.Module):
    """Holds class weights given as numbers, or as a callable called at the first use (the training split's
    labels are read only when training starts)."""

    def __init__(self, class_weights: ClassWeights) -> None:
        super().__init__()
        self._source = class_weights if callable(class_weights) else None
        self._weights: Optional[torch.Tensor] = None
        if class_weights is not None and not callable(class_weights):
            self._weights = torch.tensor(list(class_weights), dtype=torch.float32)

    @not_compiled
    def class_weights(self, num_classes: int, device: torch.device) -> Optional[torch.Tensor]:
        """The weights on ``device`` (None: all classes weigh the same); a ValueError if they are not
        ``num_classes`` numbers."""
        if self._weights is None and self._source is not None:
            self._weights = torch.tensor(list(self._source()), dtype=torch.float32)
        if self._weights is None:
            return None
        if self._weights.numel() != num_classes:
            raise ValueError(
                f"class_weights has {self._weights.numel()} entries but the model predicts {num_classes} classes; "
                "both must read the same num_classes."
            )
        if self._weights.device != device:
            self._weights = self._weights.to(device)
        return self._weights


class WeightedCrossEntropyLoss(_DeferredClassWeights):
    """Cross-entropy of ``logits`` (B, C, H, W) against ``labels`` (B, H, W), each pixel weighted by its
    class's weight (RangeNet++: ``1 / (f_c + 0.001)``, 0 for the ignored class), pixels of ``ignore_index``
    left out; the weighted mean over pixels."""

    def __init__(self, class_weights: ClassWeights = None, ignore_index: int = 0) -> None:
        super().__init__(class_weights)
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        weight = self.class_weights(logits.shape[1], logits.device)
        return F.cross_entropy(logits.float(), labels, weight=weight, ignore_index=self.ignore_index)


class WeightedNLLLoss(_DeferredClassWeights):
    """SalsaNext's and CENet's ``NLLLoss(weight)(log(probs.clamp(min=1e-8)), labels)``: the negative log of
    the probability of each pixel's class, weighted by its class's weight, pixels of ``ignore_index`` left out
    (the authors give class 0 weight 0 instead: the same sum). ``probs`` (B, C, H, W) sum to 1 over C."""

    def __init__(self, class_weights: ClassWeights = None, ignore_index: int = 0) -> None:
        super().__init__(class_weights)
        self.ignore_index = ignore_index

    def forward(self, probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        weight = self.class_weights(probs.shape[1], probs.device)
        log_probs = torch.log(_at_least_float32(probs).clamp(min=PROBABILITY_FLOOR))
        return F.nll_loss(log_probs, labels, weight=weight, ignore_index=self.ignore_index)


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """Losses are computed in float32 (float64 stays float64), whatever autocast made the probabilities."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _lovasz_gradient(foreground_sorted: torch.Tensor) -> torch.Tensor:
    """The increments of the Jaccard loss as the pixels, sorted by decreasing error, are taken as errors one
    by one (Berman et al. 2018, Alg. 1): ``jaccard[k] - jaccard[k - 1]``."""
    total = foreground_sorted.sum()
    intersection = total - foreground_sorted.cumsum(0)
    union = total + (1.0 - foreground_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    return torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])


def lovasz_softmax(
    probs: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: Optional[int] = 0,
    classes: str = "present",
) -> torch.Tensor:
    """Berman et al.'s multi-class Lovász-Softmax loss: for each class, the Lovász extension of the Jaccard loss
    evaluated at the pixels' errors ``|[label == c] - probs[c]|`` (sorted, dotted with the Jaccard increments),
    averaged over the classes present in ``labels`` (``classes="present"``, the papers' choice) or over all
    (``"all"``). The whole batch is one set of pixels; pixels of ``ignore_index`` are left out (None: none are).
    ``probs`` (B, C, H, W) or (P, C); ``labels`` (B, H, W) or (P,). No pixel left: 0 (with a gradient of 0)."""
    if classes not in ("present", "all"):
        raise ValueError(f"classes must be 'present' or 'all', not {classes!r}.")
    num_classes = probs.shape[1]
    flat = _at_least_float32(probs).movedim(1, -1).reshape(-1, num_classes)
    flat_labels = labels.reshape(-1)
    if ignore_index is not None:
        keep = flat_labels != ignore_index
        flat, flat_labels = flat[keep], flat_labels[keep]
    if flat_labels.numel() == 0:
        return probs.sum() * 0.0
    losses = []
    for c in range(num_classes):
        foreground = (flat_labels == c).to(flat.dtype)
        if classes == "present" and not bool(foreground.any()):
            continue
        errors = (foreground - flat[:, c]).abs()
        errors_sorted, order = torch.sort(errors, descending=True)
        losses.append(torch.dot(errors_sorted, _lovasz_gradient(foreground[order])))
    return torch.stack(losses).mean()


class LovaszSoftmaxLoss(nn.Module):
    """:func:`lovasz_softmax` as a module: ``forward(probs, labels)``, pixels of ``ignore_index`` left out."""

    def __init__(self, ignore_index: Optional[int] = 0, classes: str = "present") -> None:
        super().__init__()
        self.ignore_index, self.classes = ignore_index, classes

    def forward(self, probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return lovasz_softmax(probs, labels, self.ignore_index, self.classes)


class BoundaryLoss(nn.Module):
    """CENet's boundary loss (Bokhovkin et al. 2019): 1 - the F1 score of predicted against true class
    boundaries, averaged over images and classes. The boundary of a class map ``m`` (one-hot labels, or
    ``probs``) is ``maxpool(1 - m) - (1 - m)`` over a ``kernel`` x ``kernel`` window. As in the authors' code every
    class takes part, the ignored class 0 too."""

    def __init__(self, kernel: int = 3) -> None:
        super().__init__()
        if kernel % 2 != 1:
            raise ValueError(f"kernel must be odd (the boundary keeps the image size), not {kernel}.")
        self.kernel = kernel

    def boundary(self, class_maps: torch.Tensor) -> torch.Tensor:
        background = 1.0 - class_maps
        return F.max_pool2d(background, self.kernel, stride=1, padding=self.kernel // 2) - background

    def forward(self, probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        n, c = probs.shape[:2]
        probs = _at_least_float32(probs)
        one_hot = F.one_hot(labels, c).permute(0, 3, 1, 2).to(probs.dtype)
        true_edges = self.boundary(one_hot).reshape(n, c, -1)
        predicted_edges = self.boundary(probs).reshape(n, c, -1)
        overlap = (predicted_edges * true_edges).sum(dim=2)
        precision = overlap / (predicted_edges.sum(dim=2) + 1e-7)
        recall = overlap / (true_edges.sum(dim=2) + 1e-7)
        f1 = 2 * precision * recall / (precision + recall + 1e-7)
        return (1.0 - f1).mean()


class LossTerms(nn.Module):
    """Named loss terms of ``(probs, labels)``, each times its weight (default 1): ``forward`` returns
    ``{"loss_<name>": weight * term(probs, labels)}`` (the trainer sums them and logs each). SalsaNext:
    ``terms={"nll": WeightedNLLLoss(w), "lovasz": LovaszSoftmaxLoss()}``; CENet adds ``"boundary":
    BoundaryLoss()`` and weighs ``lovasz`` 1.5."""

    def __init__(self, terms: Mapping[str, nn.Module], weights: Optional[Mapping[str, float]] = None) -> None:
        super().__init__()
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(terms))
        if unknown:
            raise ValueError(f"weights name {unknown}, which are not terms (the terms: {sorted(terms)}).")
        if not terms:
            raise ValueError("LossTerms needs at least one term.")
        self.terms = nn.ModuleDict(dict(terms))
        self.weights = {name: float(weights.get(name, 1.0)) for name in terms}

    def forward(self, probs: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {f"loss_{name}": self.weights[name] * term(probs, labels) for name, term in self.terms.items()}


class AuxiliaryHeadLosses(nn.Module):
    """CENet's deep supervision: ``losses`` (a :class:`LossTerms`) on the main head's probabilities and, times
    ``aux_weight`` (the authors' ``lamda``, 1.0), on each auxiliary head's (already at the label size): the keys
    ``loss_<term>`` and ``loss_aux<i>_<term>`` (i = 1, 2, ...). ``forward(probs, labels)`` takes the heads'
    probabilities main head first."""

    def __init__(self, losses: LossTerms, aux_weight: float = 1.0) -> None:
        super().__init__()
        self.losses, self.aux_weight = losses, float(aux_weight)

    def forward(self, probs: Sequence[torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
        main, *auxiliary = probs
        out = self.losses(main, labels)
        for i, head in enumerate(auxiliary, start=1):
            for key, value in self.losses(head, labels).items():
                out[f"loss_aux{i}_{key[len('loss_') :]}"] = self.aux_weight * value
        return out
