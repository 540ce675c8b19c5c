"""SalsaNext (Cortinhal et al. 2020): the network of the authors' ``SalsaNext.py`` (TiagoCortinhal/SalsaNext),
layer for layer and with its module names, so the authors' released ``SalsaNext`` file loads as it is.

Three residual context blocks, four residual down blocks (dilated 3x3 / 2x2 convolutions, concatenated, fused by
a 1x1; average pooling), a bottleneck block, four up blocks (pixel shuffle, skip concatenation), a 1x1 head;
LeakyReLU before each BatchNorm, Dropout2d(0.2) where the authors have it. The authors' network ends in a
softmax; ours returns the scores before it (the same argmax) and applies the softmax for the losses.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from .losses import LossTerms, LovaszSoftmaxLoss, WeightedNLLLoss
from .releases import read_state_dict_release

__all__ = ["SalsaNext"]

# the names the authors' training script saves under and their infer script reads
RELEASE_FILES = ("SalsaNext", "SalsaNext_valid_best", "SalsaNext_train_best")


class ResContextBlock(nn.Module):
    """A 1x1 projection, then 3x3 and dilated 3x3 convolutions added to it."""

    def __init__(self, in_filters: int, out_filters: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_filters, out_filters, kernel_size=1)
        self.act1 = nn.LeakyReLU()
        self.conv2 = nn.Conv2d(out_filters, out_filters, 3, padding=1)
        self.act2 = nn.LeakyReLU()
        self.bn1 = nn.BatchNorm2d(out_filters)
        self.conv3 = nn.Conv2d(out_filters, out_filters, 3, dilation=2, padding=2)
        self.act3 = nn.LeakyReLU()
        self.bn2 = nn.BatchNorm2d(out_filters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.act1(self.conv1(x))
        out = self.bn1(self.act2(self.conv2(shortcut)))
        out = self.bn2(self.act3(self.conv3(out)))
        return shortcut + out


class ResBlock(nn.Module):
    """Three stacked convolutions (3x3, dilated 3x3, dilated 2x2) whose outputs are concatenated and fused by a
    1x1, plus a 1x1 shortcut; then dropout (``drop_out``) and, with ``pooling``, 3x3 average pooling of stride 2.
    With pooling it returns (pooled, before dropout and pooling: the skip), without it the one tensor."""

    def __init__(
        self, in_filters: int, out_filters: int, dropout_rate: float, pooling: bool = True, drop_out: bool = True
    ) -> None:
        super().__init__()
        self.pooling, self.drop_out = pooling, drop_out
        self.conv1 = nn.Conv2d(in_filters, out_filters, kernel_size=1)
        self.act1 = nn.LeakyReLU()
        self.conv2 = nn.Conv2d(in_filters, out_filters, 3, padding=1)
        self.act2 = nn.LeakyReLU()
        self.bn1 = nn.BatchNorm2d(out_filters)
        self.conv3 = nn.Conv2d(out_filters, out_filters, 3, dilation=2, padding=2)
        self.act3 = nn.LeakyReLU()
        self.bn2 = nn.BatchNorm2d(out_filters)
        self.conv4 = nn.Conv2d(out_filters, out_filters, 2, dilation=2, padding=1)
        self.act4 = nn.LeakyReLU()
        self.bn3 = nn.BatchNorm2d(out_filters)
        self.conv5 = nn.Conv2d(out_filters * 3, out_filters, kernel_size=1)
        self.act5 = nn.LeakyReLU()
        self.bn4 = nn.BatchNorm2d(out_filters)
        self.dropout = nn.Dropout2d(p=dropout_rate)
        self.pool = nn.AvgPool2d(kernel_size=3, stride=2, padding=1) if pooling else None

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        shortcut = self.act1(self.conv1(x))
        out1 = self.bn1(self.act2(self.conv2(x)))
        out2 = self.bn2(self.act3(self.conv3(out1)))
        out3 = self.bn3(self.act4(self.conv4(out2)))
        fused = self.bn4(self.act5(self.conv5(torch.cat((out1, out2, out3), dim=1))))
        skip = shortcut + fused
        out = self.dropout(skip) if self.drop_out else skip
        if self.pool is None:
            return out
        return self.pool(out), skip


class UpBlock(nn.Module):
    """Pixel shuffle (x2) of the input, concatenated with the skip, then three stacked convolutions fused by a
    1x1 as in :class:`ResBlock` (no shortcut); dropout after the shuffle, the concatenation and the fusion."""

    def __init__(self, in_filters: int, out_filters: int, dropout_rate: float, drop_out: bool = True) -> None:
        super().__init__()
        self.drop_out = drop_out
        self.dropout1 = nn.Dropout2d(p=dropout_rate)
        self.dropout2 = nn.Dropout2d(p=dropout_rate)
        self.conv1 = nn.Conv2d(in_filters // 4 + 2 * out_filters, out_filters, 3, padding=1)
        self.act1 = nn.LeakyReLU()
        self.bn1 = nn.BatchNorm2d(out_filters)
        self.conv2 = nn.Conv2d(out_filters, out_filters, 3, dilation=2, padding=2)
        self.act2 = nn.LeakyReLU()
        self.bn2 = nn.BatchNorm2d(out_filters)
        self.conv3 = nn.Conv2d(out_filters, out_filters, 2, dilation=2, padding=1)
        self.act3 = nn.LeakyReLU()
        self.bn3 = nn.BatchNorm2d(out_filters)
        self.conv4 = nn.Conv2d(out_filters * 3, out_filters, kernel_size=1)
        self.act4 = nn.LeakyReLU()
        self.bn4 = nn.BatchNorm2d(out_filters)
        self.dropout3 = nn.Dropout2d(p=dropout_rate)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = self.shuffle(x)
        if self.drop_out:
            up = self.dropout1(up)
        up = torch.cat((up, skip), dim=1)
        if self.drop_out:
            up = self.dropout2(up)
        out1 = self.bn1(self.act1(self.conv1(up)))
        out2 = self.bn2(self.act2(self.conv2(out1)))
        out3 = self.bn3(self.act3(self.conv3(out2)))
        out = self.bn4(self.act4(self.conv4(torch.cat((out1, out2, out3), dim=1))))
        return self.dropout3(out) if self.drop_out else out


class SalsaNext(nn.Module):
    """``forward(batch)`` reads ``batch["image"]`` (B, in_channels, H, W; H and W divisible by 16). In train mode
    it returns the losses of ``loss`` (a :class:`~lazytrain.lidar.losses.LossTerms` of the softmax
    probabilities and ``batch["label_image"]``; default: the paper's weighted NLL + Lovász-Softmax, with equal
    class weights: configs give RangeNet++'s); in eval mode the scores (B, num_classes, H, W) before the
    authors' final softmax (the same argmax). ``dropout``: the rate of every Dropout2d (the authors' 0.2); the
    deterministic evaluation of the authors' infer script (``model.eval()``, no Monte-Carlo dropout) is what
    eval mode does. Module names are the authors', so :meth:`read_release_weights` only drops DataParallel's
    ``module.``."""

    def __init__(
        self,
        in_channels: int = 5,
        num_classes: int = 20,
        dropout: float = 0.2,
        loss: Optional[nn.Module] = None,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.downCntx = ResContextBlock(in_channels, 32)
        self.downCntx2 = ResContextBlock(32, 32)
        self.downCntx3 = ResContextBlock(32, 32)
        self.resBlock1 = ResBlock(32, 2 * 32, dropout, pooling=True, drop_out=False)
        self.resBlock2 = ResBlock(2 * 32, 2 * 2 * 32, dropout, pooling=True)
        self.resBlock3 = ResBlock(2 * 2 * 32, 2 * 4 * 32, dropout, pooling=True)
        self.resBlock4 = ResBlock(2 * 4 * 32, 2 * 4 * 32, dropout, pooling=True)
        self.resBlock5 = ResBlock(2 * 4 * 32, 2 * 4 * 32, dropout, pooling=False)
        self.upBlock1 = UpBlock(2 * 4 * 32, 4 * 32, dropout)
        self.upBlock2 = UpBlock(4 * 32, 4 * 32, dropout)
        self.upBlock3 = UpBlock(4 * 32, 2 * 32, dropout)
        self.upBlock4 = UpBlock(2 * 32, 32, dropout, drop_out=False)
        self.logits = nn.Conv2d(32, num_classes, kernel_size=1)
        self.loss = loss if loss is not None else LossTerms({"nll": WeightedNLLLoss(), "lovasz": LovaszSoftmaxLoss()})

    def forward(self, batch: dict[str, torch.Tensor]) -> Union[dict[str, torch.Tensor], torch.Tensor]:
        scores = self.class_scores(batch["image"])
        if not self.training:
            return scores
        return self.loss(F.softmax(scores.float(), dim=1), batch["label_image"])

    def class_scores(self, image: torch.Tensor) -> torch.Tensor:
        """The scores (B, num_classes, H, W) of the authors' network before its softmax."""
        if image.shape[-2] % 16 or image.shape[-1] % 16:
            raise ValueError(
                f"SalsaNext halves the range image 4 times: its height and width must be divisible by 16, not "
                f"{image.shape[-2]} x {image.shape[-1]}."
            )
        x = self.downCntx3(self.downCntx2(self.downCntx(image)))
        down0c, down0b = self.resBlock1(x)
        down1c, down1b = self.resBlock2(down0c)
        down2c, down2b = self.resBlock3(down1c)
        down3c, down3b = self.resBlock4(down2c)
        down5c = self.resBlock5(down3c)
        up = self.upBlock1(down5c, down3b)
        up = self.upBlock2(up, down2b)
        up = self.upBlock3(up, down1b)
        up = self.upBlock4(up, down0b)
        return self.logits(up)

    @classmethod
    def read_release_weights(cls, path: str) -> Optional[dict[str, torch.Tensor]]:
        """The state dict of the authors' release at ``path``: their ``SalsaNext`` file (``torch.save`` of
        ``{'state_dict': DataParallel state dict, 'optimizer', 'scheduler', 'epoch', 'info'}``) or the folder
        holding it (``SalsaNext``, else ``SalsaNext_valid_best``, else ``SalsaNext_train_best``); None when
        ``path`` is not in that format. Built for 20 classes and 5 input channels, as the release is."""
        with torch.device("meta"):
            expected = {k: v.shape for k, v in cls().state_dict().items()}
        return read_state_dict_release(path, RELEASE_FILES, expected, "SalsaNext")
