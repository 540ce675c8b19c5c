"""A RangeNet-style encoder–decoder CNN on the range image, with RangeNet++'s weighted cross-entropy.

The encoder halves the width only (64 beams are few; columns are many), the decoder upsamples back and adds
the encoder's features at each scale. Only plain convolutions, batch norm and fixed-factor interpolation: it
exports to ONNX as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..compile_off import not_compiled

__all__ = ["RangeNet"]

logger = logging.getLogger(__name__)

ClassWeights = Union[Sequence[float], Callable[[], Sequence[float]], None]


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.bn1(self.conv1(x)), 0.1)
        out = self.bn2(self.conv2(out))
        return F.leaky_relu(out + x, 0.1)


def _conv_bn(cin: int, cout: int, kernel: int = 3, stride: Union[int, tuple[int, int]] = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.LeakyReLU(0.1),
    )


class RangeNet(nn.Module):
    """``forward(batch)`` reads ``batch["image"]`` (B, in_channels, H, W). In train mode it returns
    ``{"loss_ce": ...}`` against ``batch["label_image"]`` (class 0 ignored); in eval mode the logits
    (B, num_classes, H, W).

    ``width`` is the channel count of the first stage (doubled per stage up to ``8 * width``), ``depth`` the
    number of stages (the image width must be divisible by ``2 ** depth``), ``blocks`` residual blocks per
    stage. ``class_weights`` weighs the loss per class: ``num_classes`` numbers, or a callable returning them
    (``ClassWeightsFromLabels``: RangeNet++'s weights from the training labels), which is called at the first
    training step, not when the model is built, so evaluation and export never read the training split; None
    weighs all classes equally. The weights are the ``class_weights`` buffer, saved in checkpoints: a model
    that loads a checkpoint holding them does not compute them again.
    """

    # only the loss uses the class weights: a checkpoint trained without them (or with) still fits for
    # evaluation, prediction and export (see lazytrain.weights_fit)
    optional_weight_keys = ("class_weights",)

    def __init__(
        self,
        in_channels: int = 5,
        num_classes: int = 20,
        width: int = 32,
        depth: int = 4,
        blocks: int = 1,
        dropout: float = 0.05,
        class_weights: ClassWeights = None,
        ignore_index: int = 0,
    ) -> None:
        super().__init__()
        self._class_weights_source: Optional[Callable[[], Sequence[float]]] = None
        weight: Optional[torch.Tensor] = None
        if callable(class_weights):
            self._class_weights_source = class_weights
            weight = torch.full((num_classes,), float("nan"))  # NaN: not computed yet
        elif class_weights is not None:
            weight = self._checked_weights(class_weights, num_classes)
        self.num_classes, self.depth, self.ignore_index = num_classes, depth, ignore_index
        channels = [min(width * 2**i, width * 8) for i in range(depth + 1)]
        self.stem = nn.Sequential(_conv_bn(in_channels, channels[0]), _ResidualBlock(channels[0]))
        self.down = nn.ModuleList()
        for i in range(depth):
            stage: list[nn.Module] = [_conv_bn(channels[i], channels[i + 1], stride=(1, 2))]
            stage += [_ResidualBlock(channels[i + 1]) for _ in range(blocks)]
            self.down.append(nn.Sequential(*stage))
        self.up = nn.ModuleList(_conv_bn(channels[i + 1] + channels[i], channels[i]) for i in reversed(range(depth)))
        self.dropout = nn.Dropout2d(dropout)
        self.head = nn.Conv2d(channels[0], num_classes, 1)
        self.class_weights: Optional[torch.Tensor]
        self.register_buffer("class_weights", weight)
        self._class_weights_pending = self._class_weights_source is not None
        self.register_load_state_dict_post_hook(_note_loaded_class_weights)

    @staticmethod
    def _checked_weights(class_weights: Sequence[float], num_classes: int) -> torch.Tensor:
        if len(class_weights) != num_classes:
            raise ValueError(
                f"class_weights has {len(class_weights)} entries but num_classes is {num_classes}; both must read "
                "the same num_classes."
            )
        return torch.tensor(list(class_weights), dtype=torch.float32)

    @not_compiled
    def _compute_class_weights(self) -> None:
        assert self._class_weights_source is not None and self.class_weights is not None
        weight = self._checked_weights(self._class_weights_source(), self.num_classes)
        self.class_weights.copy_(weight.to(self.class_weights.device))
        self._class_weights_pending = False

    def forward(self, batch: dict[str, torch.Tensor]) -> Union[dict[str, torch.Tensor], torch.Tensor]:
        logits = self.logits(batch["image"])
        if not self.training:
            return logits
        if self._class_weights_pending:
            self._compute_class_weights()
        loss = F.cross_entropy(
            logits.float(), batch["label_image"], weight=self.class_weights, ignore_index=self.ignore_index
        )
        return {"loss_ce": loss}

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        if image.shape[-1] % (2**self.depth) != 0:
            raise ValueError(
                f"the range image width {image.shape[-1]} must be divisible by 2**depth = {2**self.depth}."
            )
        skips = []
        x = self.stem(image)
        for stage in self.down:
            skips.append(x)
            x = stage(x)
        for up, skip in zip(self.up, reversed(skips)):
            x = F.interpolate(x, scale_factor=(1.0, 2.0), mode="nearest")
            x = up(torch.cat([x, skip], dim=1))
        return self.head(self.dropout(x))


def _note_loaded_class_weights(module: nn.Module, incompatible_keys: Any) -> None:
    """After ``load_state_dict``: class weights that came with the state dict (finite ones) need no computing."""
    assert isinstance(module, RangeNet)
    if module._class_weights_source is not None and module.class_weights is not None:
        module._class_weights_pending = not bool(torch.isfinite(module.class_weights).all())
