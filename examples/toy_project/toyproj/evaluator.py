"""Classification accuracy, summed across processes."""

from __future__ import annotations

from typing import Any

import torch

from lazytrain.evaluation import reduce_sum


class AccuracyEvaluator:
    def reset(self) -> None:
        self._counts = torch.zeros(2, dtype=torch.int64)  # correct, total

    def process(self, batch: dict[str, torch.Tensor], outputs: torch.Tensor) -> None:
        correct = (outputs.argmax(dim=1) == batch["y"]).sum()
        self._counts += torch.stack([correct, torch.tensor(len(batch["y"]))]).cpu()

    def evaluate(self) -> dict[str, Any]:
        correct, total = reduce_sum(self._counts).tolist()
        return {"accuracy": correct / max(total, 1), "num_samples": total}
