"""Record facts of RangeNet++'s network from the authors' code, for tests/test_models.py: run once, outside
the repository, on a checkout of PRBonn/lidar-bonnetal (nothing of their code is kept here).

    python tools/record_darknet_facts.py /path/to/lidar-bonnetal [--commit SHA]

For Darknet21 and Darknet53 it builds their ``Segmentator`` (train/tasks/semantic/modules/segmentator.py with
config/arch/darknetNN.yaml, 20 classes), records its parameter count and the keys and shapes of the three
state dicts of a release (``backbone``, ``segmentation_decoder``, ``segmentation_head``), gives it the seeded
weights of tests/release_facts.py (keys ``<file>.<key>``), runs it in eval mode on a seeded input and writes
the argmax of every pixel and the softmax at a few pixels to tests/data/rangenet_darknetNN.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
from release_facts import DATA, seeded_input, seeded_state  # noqa: E402

INPUT_SHAPE = (1, 5, 8, 32)
POSITIONS = [(0, 0), (3, 17), (7, 31), (5, 8), (2, 25), (6, 3)]
PARTS = {"backbone": "backbone", "segmentation_decoder": "decoder", "segmentation_head": "head"}


def authors_segmentator(bonnetal: str, layers: int) -> torch.nn.Module:
    train = os.path.join(bonnetal, "train")
    semantic = os.path.join(train, "tasks", "semantic")
    sys.path[:0] = [semantic, train]  # their modules import `__init__` (tasks/semantic's) and `tasks.*`
    import __init__  # noqa: F401  (cached as theirs before their package puts "../../" first on sys.path)

    cwd = os.getcwd()
    os.chdir(semantic)  # their TRAIN_PATH is "../../"
    try:
        from tasks.semantic.modules.segmentator import Segmentator

        with open(f"config/arch/darknet{layers}.yaml") as f:
            arch = yaml.safe_load(f)
        return Segmentator(arch, 20)
    finally:
        os.chdir(cwd)


def record(bonnetal: str, layers: int, commit: str) -> dict:
    model = authors_segmentator(bonnetal, layers)
    parts = {name: getattr(model, attr).state_dict() for name, attr in PARTS.items()}
    shapes = {f"{name}.{key}": list(v.shape) for name, sd in parts.items() for key, v in sd.items()}
    state = seeded_state(shapes, seed=0)
    for name, attr in PARTS.items():
        getattr(model, attr).load_state_dict(
            {k[len(name) + 1 :]: v for k, v in state.items() if k.startswith(name + ".")}
        )
    model.eval()
    with torch.no_grad():
        probs = model(seeded_input(INPUT_SHAPE, seed=1))[0]  # their forward ends in a softmax
    return {
        "source": f"PRBonn/lidar-bonnetal@{commit}: Segmentator with config/arch/darknet{layers}.yaml, 20 classes",
        "parameters": sum(p.numel() for p in model.parameters()),
        "release_files": {name: {k: list(v.shape) for k, v in sd.items()} for name, sd in parts.items()},
        "weights": "tests/release_facts.py seeded_state(seed=0) over the keys '<file>.<key>'",
        "input": {"shape": list(INPUT_SHAPE), "seed": 1},
        "argmax": probs.argmax(0).flatten().tolist(),
        "softmax_at": {
            "positions": POSITIONS,
            "values": [[round(float(p), 6) for p in probs[:, h, w]] for h, w in POSITIONS],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bonnetal", help="a checkout of PRBonn/lidar-bonnetal")
    parser.add_argument("--commit", default="unknown", help="its commit, recorded in the facts")
    args = parser.parse_args()
    for layers in (21, 53):
        facts = record(args.bonnetal, layers, args.commit)
        path = os.path.join(DATA, f"rangenet_darknet{layers}.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(facts, f, separators=(",", ":"))
        print(f"wrote {path}: {facts['parameters']} parameters")


if __name__ == "__main__":
    main()
