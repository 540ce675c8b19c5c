"""LR schedules from fvcore ParamSchedulers."""

from __future__ import annotations

import pytest
import torch
from fvcore.common.param_scheduler import CosineParamScheduler, MultiStepParamScheduler

from lazytrain.engine import LRMultiplier, WarmupParamScheduler


def test_warmup_ramps_linearly_then_follows_the_schedule():
    sched = WarmupParamScheduler(CosineParamScheduler(1.0, 0.0), warmup_length=0.1, warmup_factor=0.01)
    assert sched(0.0) == pytest.approx(0.01)
    assert sched(0.05) == pytest.approx((0.01 + CosineParamScheduler(1.0, 0.0)(0.1)) / 2, rel=1e-3)
    assert sched(0.5) == pytest.approx(CosineParamScheduler(1.0, 0.0)(0.5))


def test_lr_multiplier_sets_lr_per_iteration_and_resumes():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)
    sched = LRMultiplier(opt, MultiStepParamScheduler([1.0, 0.1], milestones=[5], num_updates=10), max_iter=10)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.5] * 5 + [0.05] * 5)

    opt2 = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)
    sched2 = LRMultiplier(opt2, MultiStepParamScheduler([1.0, 0.1], milestones=[5], num_updates=10), max_iter=10)
    sched2.load_state_dict({"base_lrs": [0.5], "last_epoch": 6})
    opt2.step()
    sched2.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.05)


def test_lr_multiplier_rejects_what_is_not_a_param_scheduler():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)
    with pytest.raises(ValueError, match="fvcore ParamScheduler"):
        LRMultiplier(opt, lambda x: 1.0, max_iter=10)
