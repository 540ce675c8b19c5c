"""LR schedules: fvcore ParamSchedulers as a multiplier of each param group's base LR, plus a warm-up wrapper."""

from __future__ import annotations

from typing import Any

import torch
from fvcore.common.param_scheduler import (
    CompositeParamScheduler,
    ConstantParamScheduler,
    LinearParamScheduler,
    ParamScheduler,
)

__all__ = ["LRMultiplier", "WarmupParamScheduler"]


class WarmupParamScheduler(CompositeParamScheduler):
    """``scheduler`` preceded by a warm-up over the first ``warmup_length`` fraction of training.

    The warm-up starts at ``warmup_factor`` times the schedule's first value and ends (linearly, or as a
    constant for ``warmup_method="constant"``) at the value the schedule has where the warm-up ends.
    """

    def __init__(
        self,
        scheduler: ParamScheduler,
        warmup_length: float,
        warmup_factor: float = 0.001,
        warmup_method: str = "linear",
    ) -> None:
        if not 0.0 <= warmup_length < 1.0:
            raise ValueError(f"warmup_length is a fraction of training in [0, 1), got {warmup_length}.")
        end_value = scheduler(warmup_length)
        start_value = warmup_factor * scheduler(0.0)
        if warmup_method == "linear":
            warmup: ParamScheduler = LinearParamScheduler(start_value, end_value)
        elif warmup_method == "constant":
            warmup = ConstantParamScheduler(start_value)
        else:
            raise ValueError(f"warmup_method must be 'linear' or 'constant', got {warmup_method!r}.")
        super().__init__(
            [warmup, scheduler],
            interval_scaling=["rescaled", "fixed"],
            lengths=[warmup_length, 1 - warmup_length],
        )


class LRMultiplier(torch.optim.lr_scheduler.LRScheduler):
    """Sets each group's LR to ``base_lr * multiplier(iteration / max_iter)``; stepped once per iteration.

    Its state (base LRs, iteration) goes into checkpoints; the multiplier is rebuilt from the config.
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, multiplier: ParamScheduler, max_iter: int, last_iter: int = -1
    ) -> None:
        if not isinstance(multiplier, ParamScheduler):
            raise ValueError(
                f"lr_multiplier must be an fvcore ParamScheduler, got {type(multiplier).__name__}; e.g. "
                "L(CosineParamScheduler)(1.0, 0.0)."
            )
        self._multiplier = multiplier
        self._max_iter = max_iter
        super().__init__(optimizer, last_epoch=last_iter)

    def state_dict(self) -> dict[str, Any]:
        return {"base_lrs": self.base_lrs, "last_epoch": self.last_epoch}

    def get_lr(self) -> list[float]:  # type: ignore[override]
        where = min(self.last_epoch / self._max_iter, 1.0 - 1e-12)  # fvcore schedulers take [0, 1)
        factor = self._multiplier(where)
        return [base_lr * factor for base_lr in self.base_lrs]
