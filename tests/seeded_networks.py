"""Seeded weights and inputs shared by tools/record_release_facts.py (which runs the authors' networks once,
outside this repository) and the tests that compare our models with what it recorded (tests/data/*.json)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch


def seeded_weights(state: Mapping[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Every float tensor of ``state`` drawn from one generator in sorted key order: convolution weights
    ~ N(0, 1 / fan_in), BatchNorm weights and running variances ~ U(0.5, 1.5), biases and running means
    ~ N(0, 0.1^2) (random BatchNorm statistics, activations of a sane size); integer tensors (step counters)
    as they are."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key in sorted(state):
        t = state[key]
        if not t.is_floating_point():
            out[key] = t.clone()
        elif t.dim() > 1:
            fan_in = t[0].numel()
            out[key] = torch.randn(t.shape, generator=g) / math.sqrt(fan_in)
        elif key.endswith(("running_var", "weight")):
            out[key] = 0.5 + torch.rand(t.shape, generator=g)
        else:
            out[key] = 0.1 * torch.randn(t.shape, generator=g)
    return out


def seeded_input(seed: int, height: int = 64, width: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """A (1, 5, H, W) image ~ N(0, 1) and (1, H, W) labels uniform over 0..19 from one generator."""
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(1, 5, height, width, generator=g)
    labels = torch.randint(0, 20, (1, height, width), generator=g)
    return image, labels


def loss_weights(labels: torch.Tensor, num_classes: int = 20) -> list[float]:
    """RangeNet++'s 1 / (f + 0.001) from the labels' frequencies, 0 for class 0."""
    counts = torch.bincount(labels.reshape(-1), minlength=num_classes).double()
    weights = 1.0 / (counts / counts.sum() + 0.001)
    weights[0] = 0.0
    return weights.tolist()


# pixels (class, row, column) whose probabilities the facts record exactly
PROBE_PIXELS = [(0, 0, 0), (1, 5, 7), (7, 31, 40), (12, 63, 63), (19, 20, 2), (3, 47, 11), (9, 0, 63), (15, 33, 33)]


def argmax_text(probs: torch.Tensor) -> str:
    """The per-pixel argmax of (1, C, H, W) probabilities as one character a pixel ('a' = class 0), row-major."""
    return "".join(chr(ord("a") + int(c)) for c in probs[0].argmax(dim=0).reshape(-1))
