"""Gaussian blobs: ``num_classes`` clusters in ``num_features`` dimensions, fixed by ``seed``."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset


class BlobsDataset(Dataset):
    """Samples ``{"x": features, "y": label}``; with ``jitter > 0`` each draw adds fresh Gaussian noise
    (an augmentation: lazytrain seeds it per sample, so runs and resumes see the same noise)."""

    def __init__(
        self, num_samples: int, num_features: int = 8, num_classes: int = 4, seed: int = 0, jitter: float = 0.0
    ) -> None:
        g = torch.Generator().manual_seed(seed)
        centers = torch.randn(num_classes, num_features, generator=torch.Generator().manual_seed(1234)) * 3
        self.y = torch.randint(num_classes, (num_samples,), generator=g)
        self.x = centers[self.y] + torch.randn(num_samples, num_features, generator=g)
        self.jitter = jitter

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        x = self.x[index]
        if self.jitter > 0:
            x = x + self.jitter * torch.randn_like(x)
        return {"x": x, "y": self.y[index]}
