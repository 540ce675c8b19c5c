"""An MLP classifier that follows lazytrain's model contract."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLPClassifier(nn.Module):
    """``forward(batch)``: in train mode ``{"loss_cls": cross-entropy}``; in eval mode the logits."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 32, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes)
        )

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | torch.Tensor:
        logits = self.net(batch["x"])
        if self.training:
            return {"loss_cls": F.cross_entropy(logits, batch["y"])}
        return logits
