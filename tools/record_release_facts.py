"""Record facts of the authors' SalsaNext and CENet networks for tests/test_models_salsanext_cenet.py: their
state-dict keys and shapes, parameter counts, and their outputs and losses for seeded weights on a seeded input.

Run once, outside the test suite, with the authors' code at the paths given (nothing of theirs is kept here):
    python tools/record_release_facts.py --salsanext SalsaNext/train/tasks/semantic/modules \
        --cenet CENet --out tests/data
where --salsanext holds their SalsaNext.py and Lovasz_Softmax.py, and --cenet is their repository root
(modules/network/ResNet.py, modules/losses/). Their files import ``imp`` and ``__init__`` (SalsaNext) and build
OpenCV and build a one-hot on 'cuda' (CENet's boundary loss); those are stood in for so they run on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import types

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from seeded_networks import PROBE_PIXELS, argmax_text, loss_weights, seeded_input, seeded_weights


def facts_of(model: nn.Module, saved_state: dict[str, torch.Tensor], seed: int) -> dict:
    return {
        "seed": seed,
        "parameters": sum(p.numel() for p in model.parameters()),
        "state_dict": [[k, list(v.shape)] for k, v in saved_state.items()],
    }


def probes(probs: torch.Tensor) -> list[list]:
    return [[c, h, w, float(probs[0, c, h, w])] for c, h, w in PROBE_PIXELS]


def salsanext_facts(folder: str) -> dict:
    sys.modules.setdefault("imp", types.ModuleType("imp"))
    sys.modules.setdefault("__init__", types.ModuleType("__init__"))
    sys.path.insert(0, folder)
    import Lovasz_Softmax  # the authors'
    import SalsaNext as authors

    model = nn.DataParallel(authors.SalsaNext(20))  # as their infer script wraps it: keys module.*
    model.load_state_dict(seeded_weights(model.state_dict(), seed=1))
    model.eval()
    image, labels = seeded_input(seed=2)
    weights = loss_weights(labels)
    with torch.no_grad():
        probs = model(image)
        nll = nn.NLLLoss(weight=torch.tensor(weights, dtype=torch.float))(torch.log(probs.clamp(min=1e-8)), labels)
        lovasz = Lovasz_Softmax.Lovasz_softmax(ignore=0)(probs, labels)
    facts = facts_of(model, model.state_dict(), seed=1)
    facts.update(
        input_seed=2,
        loss_weights=weights,
        probes=probes(probs),
        argmax=argmax_text(probs),
        loss={"nll": float(nll), "lovasz": float(lovasz)},
    )
    return facts


def cenet_facts(root: str) -> dict:
    sys.path.insert(0, root)
    sys.modules.setdefault("cv2", types.ModuleType("cv2"))  # imported for a commented-out picture only
    from modules.losses import boundary_loss
    from modules.losses.Lovasz_Softmax import Lovasz_softmax
    from modules.network.ResNet import ResNet_34

    def one_hot_on_cpu(label: torch.Tensor, n_classes: int, requires_grad: bool = True) -> torch.Tensor:
        return torch.eye(n_classes)[label].permute(0, 3, 1, 2)

    boundary_loss.one_hot = one_hot_on_cpu

    model = ResNet_34(20, True)

    def replace(module: nn.Module, act: nn.Module) -> None:  # what their trainer does for act: "Hardswish"
        for name, child in module.named_children():
            if isinstance(child, nn.LeakyReLU):
                setattr(module, name, act)
            else:
                replace(child, act)

    replace(model, nn.Hardswish())
    model.load_state_dict(seeded_weights(model.state_dict(), seed=3))
    model.eval()
    image, labels = seeded_input(seed=4)
    weights = loss_weights(labels)
    nll = nn.NLLLoss(weight=torch.tensor(weights, dtype=torch.float))
    lovasz = Lovasz_softmax(ignore=0)
    boundary = boundary_loss.BoundaryLoss()
    with torch.no_grad():
        heads = model(image)
        per_head = [float(nll(torch.log(p.clamp(min=1e-8)), labels) + 1.5 * lovasz(p, labels)) for p in heads]
        boundaries = [float(boundary(p, labels)) for p in heads]
    lamda = 1.0  # their configs' lamda
    total = per_head[0] + lamda * sum(per_head[1:]) + boundaries[0] + lamda * sum(boundaries[1:])
    facts = facts_of(model, model.state_dict(), seed=3)
    facts.update(
        input_seed=4,
        loss_weights=weights,
        probes=probes(heads[0]),
        aux_probes=[probes(p) for p in heads[1:]],
        argmax=argmax_text(heads[0]),
        loss={"total": total, "nll_plus_lovasz_per_head": per_head, "boundary_per_head": boundaries},
    )
    return facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--salsanext", required=True, help="folder of the authors' SalsaNext.py")
    parser.add_argument("--cenet", required=True, help="the authors' CENet repository root")
    parser.add_argument("--out", default="tests/data")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name, facts in (("salsanext", salsanext_facts(args.salsanext)), ("cenet", cenet_facts(args.cenet))):
        path = os.path.join(args.out, f"{name}_facts.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(facts, f, indent=None, separators=(",", ":"))
            f.write("\n")
        print(f"{path}: {facts['parameters']} parameters, {len(facts['state_dict'])} tensors")


if __name__ == "__main__":
    main()
