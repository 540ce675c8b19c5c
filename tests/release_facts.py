"""Seeded weights for a network given by its state-dict keys and shapes: the same tensors for the authors'
network (tools/record_*_facts.py, run outside the repository on the authors' code) and for ours (the tests),
so recorded outputs of the authors' network can be compared with ours without a copy of their code here."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

import torch

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def seeded_state(shapes: Mapping[str, Sequence[int]], seed: int = 0) -> dict[str, torch.Tensor]:
    """A tensor for each key, drawn from one generator in sorted key order: batch-norm statistics and scales
    near their usual values (``running_var`` in [0.5, 1.5], ``running_mean`` and biases ~0.1 N(0, 1), 1-D
    ``weight`` 1 + 0.1 N(0, 1)), convolution weights N(0, 1 / fan_in); ``num_batches_tracked`` 0."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key in sorted(shapes):
        shape = tuple(shapes[key])
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=generator)
        elif key.endswith(("running_mean", "bias")):
            state[key] = 0.1 * torch.randn(shape, generator=generator)
        elif len(shape) == 1:
            state[key] = 1.0 + 0.1 * torch.randn(shape, generator=generator)
        else:
            fan_in = max(1, torch.Size(shape).numel() // shape[0])
            state[key] = torch.randn(shape, generator=generator) / fan_in**0.5
    return state


def seeded_input(shape: Sequence[int], seed: int = 1) -> torch.Tensor:
    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed))


def read_facts(name: str) -> dict:
    with open(os.path.join(DATA, name), encoding="utf-8") as f:
        return json.load(f)
