"""A custom hook: the model for writing your own."""

from __future__ import annotations

import torch

from lazytrain.engine import HookBase


class ParamNormLogger(HookBase):
    """Puts the L2 norm of all parameters as ``param_norm`` every ``period`` iterations (a slow drift or a
    blow-up shows in TensorBoard before the loss does)."""

    def __init__(self, period: int = 20) -> None:
        self.period = period

    def after_step(self) -> None:
        if (self.trainer.iter + 1) % self.period == 0:
            with torch.no_grad():
                norm = torch.linalg.vector_norm(
                    torch.stack([p.detach().norm() for p in self.trainer.model.parameters()])
                )
            self.trainer.storage.put_scalar("param_norm", norm)  # a tensor: converted at the next log write
