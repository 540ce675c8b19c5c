"""AdamW with a warmed-up cosine schedule."""

import torch
from fvcore.common.param_scheduler import CosineParamScheduler

from lazytrain.config import LazyCall as L
from lazytrain.engine import WarmupParamScheduler

optimizer = L(torch.optim.AdamW)(lr=2e-3, weight_decay=1e-4)
lr_multiplier = L(WarmupParamScheduler)(scheduler=L(CosineParamScheduler)(1.0, 0.01), warmup_length=0.05)
