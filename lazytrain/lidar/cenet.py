"""CENet (Cheng et al., ICME 2022): the "res" pipeline of the authors' ``modules/network/ResNet.py``
(huixiancheng/CENet) with the activation their configs choose (Hardswish), layer for layer and with its module
names, so the authors' released ``SENet_valid_best`` loads as it is.

Three 3x3 conv-BN-activation stems (5 -> 64 -> 128 -> 128), four stages of ResNet-34 basic blocks (3, 4, 6, 3;
128 channels; the last three of stride 2), every stage's output bilinearly resized to the full image and
concatenated (640 channels), two 3x3 conv-BN-activation layers and a 1x1 head; three auxiliary 1x1 heads on the
resized outputs of stages 2, 3 and 4, used in training only. The authors' heads end in a softmax; ours return the
scores before it (the same argmax) and apply the softmax for the losses.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from .losses import AuxiliaryHeadLosses, BoundaryLoss, LossTerms, LovaszSoftmaxLoss, WeightedNLLLoss
from .releases import read_state_dict_release

__all__ = ["CENet"]

# the names the authors' training script saves under; their infer script reads SENet_valid_best
RELEASE_FILES = ("SENet_valid_best", "SENet", "SENet_train_best")

ACTIVATIONS = {"hardswish": nn.Hardswish, "leaky_relu": nn.LeakyReLU, "silu": nn.SiLU}


def activation(name: str) -> nn.Module:
    """The activation the authors' ``act`` setting names ("Hardswish", "LeakyReLU", "SiLU"; any case, _ or not)."""
    key = name.lower().replace("_", "")
    for known, make in ACTIVATIONS.items():
        if known.replace("_", "") == key:
            return make()
    raise ValueError(f"unknown activation {name!r}: use one of {', '.join(ACTIVATIONS)}.")


class ConvBnAct(nn.Module):
    """Convolution without bias, BatchNorm, activation (the authors' ``BasicConv2d``)."""

    def __init__(self, in_planes: int, out_planes: int, kernel_size: int, padding: int, act: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_planes, out_planes, kernel_size, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_planes)
        self.relu = activation(act)  # the authors' name, whatever the activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3x3 conv-BN, the (projected, when the shape changes) input added, activation."""

    def __init__(self, inplanes: int, planes: int, stride: int, act: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = activation(act)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: Optional[nn.Sequential] = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


def _stage(inplanes: int, planes: int, blocks: int, stride: int, act: str) -> nn.Sequential:
    layers = [BasicBlock(inplanes, planes, stride, act)]
    layers += [BasicBlock(planes, planes, 1, act) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def _resize(x: torch.Tensor, size: torch.Size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class CENet(nn.Module):
    """``forward(batch)`` reads ``batch["image"]`` (B, in_channels, H, W). In train mode it returns the losses of
    ``loss`` (an :class:`~lazytrain.lidar.losses.AuxiliaryHeadLosses` of the main and auxiliary heads' softmax
    probabilities, main head first, and ``batch["label_image"]``; default: the paper's weighted NLL + 1.5 x
    Lovász-Softmax + boundary loss on every head, auxiliary heads weighted 1, with equal class weights: configs
    give RangeNet++'s); in eval mode the main head's scores (B, num_classes, H, W) before the authors' softmax
    (the same argmax). ``act``: the activation of every layer (the authors' configs: "Hardswish";
    "LeakyReLU" is their network file's own). ``aux_heads``: whether the three auxiliary heads exist (the
    authors' ``aux_loss``; their releases have them). Module names are the authors', so
    :meth:`read_release_weights` only drops DataParallel's ``module.`` if there is one."""

    def __init__(
        self,
        in_channels: int = 5,
        num_classes: int = 20,
        act: str = "hardswish",
        aux_heads: bool = True,
        loss: Optional[nn.Module] = None,
    ) -> None:
        super().__init__()
        self.num_classes, self.aux_heads = num_classes, aux_heads
        self.conv1 = ConvBnAct(in_channels, 64, 3, 1, act)
        self.conv2 = ConvBnAct(64, 128, 3, 1, act)
        self.conv3 = ConvBnAct(128, 128, 3, 1, act)
        self.layer1 = _stage(128, 128, 3, 1, act)
        self.layer2 = _stage(128, 128, 4, 2, act)
        self.layer3 = _stage(128, 128, 6, 2, act)
        self.layer4 = _stage(128, 128, 3, 2, act)
        self.conv_1 = ConvBnAct(640, 256, 3, 1, act)
        self.conv_2 = ConvBnAct(256, 128, 3, 1, act)
        self.semantic_output = nn.Conv2d(128, num_classes, 1)
        if aux_heads:
            self.aux_head1 = nn.Conv2d(128, num_classes, 1)
            self.aux_head2 = nn.Conv2d(128, num_classes, 1)
            self.aux_head3 = nn.Conv2d(128, num_classes, 1)
        if loss is None:
            terms = LossTerms(
                {"nll": WeightedNLLLoss(), "lovasz": LovaszSoftmaxLoss(), "boundary": BoundaryLoss()},
                weights={"lovasz": 1.5},
            )
            loss = AuxiliaryHeadLosses(terms, aux_weight=1.0)
        self.loss = loss

    def forward(self, batch: dict[str, torch.Tensor]) -> Union[dict[str, torch.Tensor], torch.Tensor]:
        heads = self.head_scores(batch["image"], auxiliary=self.training and self.aux_heads)
        if not self.training:
            return heads[0]
        probs = [F.softmax(scores.float(), dim=1) for scores in heads]
        if isinstance(self.loss, AuxiliaryHeadLosses):
            return self.loss(probs, batch["label_image"])
        return self.loss(probs[0], batch["label_image"])  # a loss of the main head only

    def head_scores(self, image: torch.Tensor, auxiliary: bool = False) -> list[torch.Tensor]:
        """The scores of the main head and, with ``auxiliary``, of the three auxiliary heads (all at the image
        size), before the authors' softmax."""
        x = self.conv3(self.conv2(self.conv1(image)))
        x_1 = self.layer1(x)
        x_2 = self.layer2(x_1)
        x_3 = self.layer3(x_2)
        x_4 = self.layer4(x_3)
        size = x.shape[2:]
        res_2, res_3, res_4 = _resize(x_2, size), _resize(x_3, size), _resize(x_4, size)
        out = self.conv_2(self.conv_1(torch.cat([x, x_1, res_2, res_3, res_4], dim=1)))
        heads = [self.semantic_output(out)]
        if auxiliary:
            heads += [self.aux_head1(res_2), self.aux_head2(res_3), self.aux_head3(res_4)]
        return heads

    @classmethod
    def read_release_weights(cls, path: str) -> Optional[dict[str, torch.Tensor]]:
        """The state dict of the authors' release at ``path``: their ``SENet_valid_best`` file (``torch.save``
        of ``{'state_dict': ..., 'optimizer', 'scheduler', 'epoch', 'info'}``; keys with ``module.`` when trained
        on several GPUs) or the folder holding it (``SENet_valid_best``, else ``SENet``, else
        ``SENet_train_best``); None when ``path`` is not in that format. Built for 20 classes, 5 input channels
        and the auxiliary heads, as the release is."""
        with torch.device("meta"):
            expected = {k: v.shape for k, v in cls().state_dict().items()}
        return read_state_dict_release(path, RELEASE_FILES, expected, "CENet")
