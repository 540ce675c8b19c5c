"""RangeNet++ (Milioto et al., IROS 2019): the Darknet21 / Darknet53 encoder-decoder of PRBonn/lidar-bonnetal,
layer for layer, so that the authors' released weights load as they are (``read_release_weights``).

The encoder halves only the width, five times (output stride 32); the decoder upsamples with transposed
convolutions and adds the encoder's features of each scale; the head is a 3x3 convolution to the classes.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from ..compile_off import not_compiled
from ..errors import ConfigError

__all__ = ["DARKNET_BLOCKS", "RangeNetPP"]

logger = logging.getLogger(__name__)

# residual blocks per encoder stage of each Darknet depth (lidar-bonnetal's backbones/darknet.py)
DARKNET_BLOCKS = {21: (1, 1, 2, 2, 1), 53: (1, 2, 8, 8, 4)}
STAGES = 5
RELEASE_PARTS = {"backbone": "backbone", "segmentation_decoder": "decoder", "segmentation_head": "head"}

ClassWeights = Union[Sequence[float], Callable[[], Sequence[float]], None]


class DarknetBlock(nn.Module):
    """Darknet's residual block: a 1x1 convolution to ``middle`` channels (half in the encoder, twice in the
    decoder), a 3x3 back, each with batch norm and leaky ReLU (0.1), plus the input."""

    def __init__(self, channels: int, middle: int, bn_momentum: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, middle, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(middle, momentum=bn_momentum)
        self.relu1 = nn.LeakyReLU(0.1)
        self.conv2 = nn.Conv2d(middle, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels, momentum=bn_momentum)
        self.relu2 = nn.LeakyReLU(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(out))) + x


def _stage(
    first: tuple[str, nn.Module], channels: int, middle: int, blocks: Sequence[str], bn_momentum: float
) -> nn.Sequential:
    """``first`` (a named convolution to ``channels``), batch norm, leaky ReLU, then a Darknet block (with
    ``middle`` channels inside) under each name of ``blocks``."""
    layers: list[tuple[str, nn.Module]] = [
        first,
        ("bn", nn.BatchNorm2d(channels, momentum=bn_momentum)),
        ("relu", nn.LeakyReLU(0.1)),
    ]
    layers += [(name, DarknetBlock(channels, middle, bn_momentum)) for name in blocks]
    return nn.Sequential(OrderedDict(layers))


def _strides(output_stride: int) -> list[int]:
    """The width strides of the five encoder stages: 2 each, the last ones 1 until the product is
    ``output_stride`` (lidar-bonnetal's "stride play")."""
    if output_stride not in (1, 2, 4, 8, 16, 32):
        raise ValueError(f"output_stride must be a power of 2 up to 32, got {output_stride}.")
    halvings = output_stride.bit_length() - 1
    return [2 if i < halvings else 1 for i in range(STAGES)]


class DarknetBackbone(nn.Module):
    """The encoder: a 3x3 convolution to ``width`` channels, then five stages, each a 3x3 convolution (stride
    (1, 2) or 1) doubling the channels and Darknet blocks, with dropout after each stage. ``forward`` returns the
    features and the inputs of the stages that halve the width (the skips, finest first)."""

    def __init__(
        self,
        in_channels: int,
        width: int,
        blocks: Sequence[int],
        strides: Sequence[int],
        dropout: float,
        bn_momentum: float,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width, momentum=bn_momentum)
        self.relu1 = nn.LeakyReLU(0.1)
        self.strides = list(strides)
        for i, (n, stride) in enumerate(zip(blocks, strides)):
            cin, cout = width * 2**i, width * 2 ** (i + 1)
            down = nn.Conv2d(cin, cout, 3, stride=(1, stride), padding=1, bias=False)
            residuals = [f"residual_{j}" for j in range(n)]
            self.add_module(f"enc{i + 1}", _stage(("conv", down), cout, cin, residuals, bn_momentum))
        self.dropout = nn.Dropout2d(dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.relu1(self.bn1(self.conv1(x)))
        skips = []
        for i, stride in enumerate(self.strides):
            if stride == 2:
                skips.append(x.detach())  # the authors' skips carry no gradient
            x = self.dropout(getattr(self, f"enc{i + 1}")(x))
        return x, skips


class DarknetDecoder(nn.Module):
    """The decoder: five stages from ``32 * width`` channels down to ``width``, each a transposed convolution
    (kernel (1, 4), stride (1, 2)) that halves the channels, doubles the width and adds the encoder's skip of that
    scale (a 3x3 convolution where the encoder did not halve), batch norm, leaky ReLU and one Darknet block
    (which widens to the stage's input channels inside); dropout last."""

    def __init__(self, width: int, strides: Sequence[int], dropout: float, bn_momentum: float) -> None:
        super().__init__()
        self.upsamples = list(reversed(strides))  # the decoder undoes the encoder's last stride first
        for i, stride in enumerate(self.upsamples):
            cin, cout = width * 2 ** (STAGES - i), width * 2 ** (STAGES - i - 1)
            first: tuple[str, nn.Module]
            if stride == 2:
                first = ("upconv", nn.ConvTranspose2d(cin, cout, (1, 4), stride=(1, 2), padding=(0, 1)))
            else:
                first = ("conv", nn.Conv2d(cin, cout, 3, padding=1))
            self.add_module(f"dec{STAGES - i}", _stage(first, cout, cin, ["residual"], bn_momentum))
        self.dropout = nn.Dropout2d(dropout)

    def forward(self, x: torch.Tensor, skips: Sequence[torch.Tensor]) -> torch.Tensor:
        pending = list(skips)
        for i, stride in enumerate(self.upsamples):
            x = getattr(self, f"dec{STAGES - i}")(x)
            if stride == 2:
                x = x + pending.pop()
        return self.dropout(x)


class RangeNetPP(nn.Module):
    """RangeNet++'s network (lidar-bonnetal's ``Segmentator`` with a Darknet backbone and decoder, no CRF):
    ``backbone``, ``decoder``, ``head`` hold the weights of the release's ``backbone``,
    ``segmentation_decoder`` and ``segmentation_head`` under the same names.

    ``forward(batch)`` reads ``batch["image"]`` (B, 5, H, W: range, x, y, z, remission, normalised, 0 where
    empty); in train mode it returns ``{"loss_ce": ...}``, RangeNet++'s weighted cross-entropy against
    ``batch["label_image"]`` (class ``ignore_index`` ignored); in eval mode the logits (B, num_classes, H, W)
    (the authors' softmax is left out: it changes no argmax). The image width must be divisible by
    ``output_stride``.

    ``layers``: 21 or 53 (the Darknet depth); ``width``: the channels of the first layer (32 as the authors';
    smaller only for quick tests), doubled by each of the five stages; ``dropout``: the Dropout2d after each
    encoder stage, the decoder and before the head (the authors' 0.01 each); ``bn_momentum``: the authors'
    ``bn_d`` (0.01). ``class_weights`` as ``RangeNet``'s (a list, or a callable such as
    ``ClassWeightsFromLabels`` called at the first training step); they are a non-persistent buffer, not part of
    the state dict, so the authors' release loads under a strict key check (and a checkpoint of ours computes
    them again at its first training step).
    """

    def __init__(
        self,
        layers: int = 21,
        num_classes: int = 20,
        in_channels: int = 5,
        width: int = 32,
        output_stride: int = 32,
        dropout: float = 0.01,
        bn_momentum: float = 0.01,
        class_weights: ClassWeights = None,
        ignore_index: int = 0,
    ) -> None:
        super().__init__()
        if layers not in DARKNET_BLOCKS:
            raise ValueError(f"layers must be one of {sorted(DARKNET_BLOCKS)} (Darknet21, Darknet53), got {layers}.")
        self.layers, self.num_classes, self.ignore_index = layers, num_classes, ignore_index
        self.output_stride = output_stride
        strides = _strides(output_stride)
        self.backbone = DarknetBackbone(in_channels, width, DARKNET_BLOCKS[layers], strides, dropout, bn_momentum)
        self.decoder = DarknetDecoder(width, strides, dropout, bn_momentum)
        self.head = nn.Sequential(nn.Dropout2d(dropout), nn.Conv2d(width, num_classes, 3, padding=1))
        self._class_weights_source = class_weights if callable(class_weights) else None
        weight = None if class_weights is None or callable(class_weights) else _checked(class_weights, num_classes)
        self.class_weights: Optional[torch.Tensor]
        self.register_buffer("class_weights", weight, persistent=False)

    def forward(self, batch: dict[str, torch.Tensor]) -> Union[dict[str, torch.Tensor], torch.Tensor]:
        logits = self.logits(batch["image"])
        if not self.training:
            return logits
        if self._class_weights_source is not None and self.class_weights is None:
            self._compute_class_weights(logits.device)
        loss = F.cross_entropy(
            logits.float(), batch["label_image"], weight=self.class_weights, ignore_index=self.ignore_index
        )
        return {"loss_ce": loss}

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        if image.shape[-1] % self.output_stride != 0:
            raise ValueError(
                f"the range image width {image.shape[-1]} must be divisible by the output stride {self.output_stride}."
            )
        features, skips = self.backbone(image)
        return self.head(self.decoder(features, skips))

    @not_compiled
    def _compute_class_weights(self, device: torch.device) -> None:
        assert self._class_weights_source is not None
        self.class_weights = _checked(self._class_weights_source(), self.num_classes).to(device)

    @classmethod
    def read_release_weights(cls, path: str) -> Optional[dict[str, torch.Tensor]]:
        """RangeNet++'s release folder (lidar-bonnetal: the state dicts 'backbone', 'segmentation_decoder',
        'segmentation_head', with arch_cfg.yaml and data_cfg.yaml; the folder or one of those files).

        Returns the state dict in this model's key names (``backbone.*``, ``decoder.*``, ``head.*``), or None
        when ``path`` is no such folder. A folder that is one but that this model cannot take (a SqueezeSeg
        backbone, a CRF, other inputs than range, xyz and remission) or whose files disagree (the depth of
        arch_cfg.yaml and of the weights, the classes of data_cfg.yaml and of the head) is a ConfigError naming
        the file."""
        folder = os.path.dirname(path) if os.path.basename(path) in RELEASE_PARTS and os.path.isfile(path) else path
        if not os.path.isfile(os.path.join(folder, "backbone")):
            return None
        arch = _read_yaml(os.path.join(folder, "arch_cfg.yaml"))
        if arch is not None:
            _check_arch(arch, os.path.join(folder, "arch_cfg.yaml"))
        state: dict[str, torch.Tensor] = {}
        for part, prefix in RELEASE_PARTS.items():
            weights = _read_part(folder, part)
            state.update({f"{prefix}.{key.removeprefix('module.')}": value for key, value in weights.items()})
        for key in [k for k in state if k.endswith(".running_var")]:  # saved before torch 0.4.1: none of these
            state.setdefault(key[: -len("running_var")] + "num_batches_tracked", torch.tensor(0))
        layers = _release_depth(state, folder)
        if arch is not None and int(arch["backbone"]["extra"]["layers"]) != layers:
            raise ConfigError(
                f"the RangeNet++ release '{folder}' disagrees with itself: arch_cfg.yaml says Darknet"
                f"{arch['backbone']['extra']['layers']}, its 'backbone' holds the weights of Darknet{layers}."
            )
        classes = int(state["head.1.weight"].shape[0])
        data = _read_yaml(os.path.join(folder, "data_cfg.yaml"))
        if data is not None and "learning_map_inv" in data and len(data["learning_map_inv"]) != classes:
            raise ConfigError(
                f"the RangeNet++ release '{folder}' disagrees with itself: data_cfg.yaml has "
                f"{len(data['learning_map_inv'])} classes (learning_map_inv), its 'segmentation_head' {classes}."
            )
        logger.info("RangeNet++ release %s: Darknet%d, %d classes.", folder, layers, classes)
        return state


def _checked(class_weights: Sequence[float], num_classes: int) -> torch.Tensor:
    if len(class_weights) != num_classes:
        raise ValueError(
            f"class_weights has {len(class_weights)} entries but num_classes is {num_classes}; both must read "
            "the same num_classes."
        )
    return torch.tensor(list(class_weights), dtype=torch.float32)


def _read_yaml(path: str) -> Optional[dict[str, Any]]:
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read '{path}' of the RangeNet++ release: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"'{path}' of the RangeNet++ release holds no mapping.")
    return data


def _check_arch(arch: dict[str, Any], path: str) -> None:
    """What of arch_cfg.yaml decides the network: the backbone is Darknet 21/53 on all five inputs, the
    decoder Darknet, no CRF."""
    try:
        backbone, decoder = arch["backbone"], arch["decoder"]
        name, layers, inputs = backbone["name"], backbone["extra"]["layers"], backbone["input_depth"]
        crf = bool(arch.get("post", {}).get("CRF", {}).get("use", False))
    except (KeyError, TypeError) as e:
        raise ConfigError(
            f"'{path}' of the RangeNet++ release lacks the key {e} (backbone.name, .extra.layers, "
            ".input_depth, decoder.name)."
        ) from e
    problems = []
    if name != "darknet" or decoder.get("name") != "darknet":
        problems.append(f"its backbone/decoder is {name!r}/{decoder.get('name')!r}; lazytrain has Darknet only")
    elif int(layers) not in DARKNET_BLOCKS:
        problems.append(f"it is Darknet{layers}; lazytrain has Darknet21 and Darknet53")
    if not all(bool(inputs.get(k)) for k in ("range", "xyz", "remission")):
        problems.append(f"its input_depth is {dict(inputs)}; lazytrain's images hold range, xyz and remission")
    if crf:
        problems.append("it uses the CRF (post.CRF.use), which lazytrain does not have")
    if problems:
        raise ConfigError(f"'{path}': this RangeNet++ release does not fit RangeNetPP: " + "; ".join(problems) + ".")


def _read_part(folder: str, part: str) -> dict[str, torch.Tensor]:
    path = os.path.join(folder, part)
    if not os.path.isfile(path):
        present = ", ".join(sorted(os.listdir(folder)))
        raise ConfigError(
            f"the RangeNet++ release '{folder}' has no '{part}' (it holds {present}); a release holds "
            "backbone, segmentation_decoder and segmentation_head."
        )
    try:
        weights = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConfigError(f"cannot read '{path}' of the RangeNet++ release: {type(e).__name__}: {e}") from e
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise ConfigError(f"'{path}' of the RangeNet++ release is not a state dict (names to tensors).")
    return weights


def _release_depth(state: dict[str, torch.Tensor], folder: str) -> int:
    """The Darknet depth of the release's backbone weights, from its number of residual blocks per stage."""
    blocks = tuple(
        len({k.split(".")[2] for k in state if k.startswith(f"backbone.enc{i}.residual_")}) for i in range(1, 6)
    )
    for layers, expected in DARKNET_BLOCKS.items():
        if blocks == expected:
            return layers
    raise ConfigError(
        f"the 'backbone' of the RangeNet++ release '{folder}' has {blocks} residual blocks per stage, which is "
        f"neither Darknet21 {DARKNET_BLOCKS[21]} nor Darknet53 {DARKNET_BLOCKS[53]}."
    )
