"""An exception in user code during a step keeps its traceback and ends with one closing line that names the
iteration, the model / hook / dataset, and (for a forward) the batch's structure."""

from __future__ import annotations

import subprocess

import pytest
import torch
from conftest import last_line, train_toy
from toyproj.data import BlobsDataset
from toyproj.model import MLPClassifier

from lazytrain.data import describe_batch
from lazytrain.engine import HookBase


class BreaksAtStep3(MLPClassifier):
    calls = 0

    def forward(self, batch):
        BreaksAtStep3.calls += 1
        if self.training and BreaksAtStep3.calls == 4:
            raise ValueError("the user's model broke")
        return super().forward(batch)


class BrokenSample(BlobsDataset):
    def __getitem__(self, i):
        if i == 7:
            raise KeyError(f"sample {i} is missing its label")
        return super().__getitem__(i)


class RaisesInAfterStep(HookBase):
    def after_step(self):
        if self.trainer.iter == 2:
            raise ZeroDivisionError("the user's hook divided by zero")


def run(tmp_path, body: str, *args: str) -> subprocess.CompletedProcess:
    return train_toy(tmp_path, body, "train.max_iter=6", *args)


def test_a_forward_that_raises_names_the_model_and_the_batch(tmp_path):
    r = run(tmp_path, "from test_user_errors import BreaksAtStep3\nmodel._target_ = BreaksAtStep3\n")
    assert r.returncode == 1
    assert last_line(r) == (
        "error: iteration 4: BreaksAtStep3.forward raised ValueError: the user's model broke "
        "(batch: {x: float32[32, 8], y: int64[32]})"
    )
    assert 'in forward\n    raise ValueError("the user\'s model broke")' in r.stderr  # the user's frames


@pytest.mark.parametrize("workers", [0, 2])
def test_a_dataset_that_raises_names_the_loader_and_dataset(tmp_path, workers):
    r = run(
        tmp_path,
        "from test_user_errors import BrokenSample\ndataloader.train.dataset._target_ = BrokenSample\n",
        f"dataloader.train.num_workers={workers}",
        "dataloader.train.batch_size=64",
        "dataloader.train.shuffle=False",
    )
    assert r.returncode == 1
    assert last_line(r) == (
        "error: iteration 1: the train loader (TrainLoader of BrokenSample) raised KeyError: "
        "'sample 7 is missing its label'"
    )
    assert "in __getitem__" in r.stderr


def test_a_hook_that_raises_is_named(tmp_path):
    r = run(tmp_path, "from test_user_errors import RaisesInAfterStep\nhooks = [L(RaisesInAfterStep)()]\n")
    assert r.returncode == 1
    assert last_line(r) == (
        "error: iteration 3: hook RaisesInAfterStep.after_step raised ZeroDivisionError: "
        "the user's hook divided by zero"
    )
    assert "Traceback (most recent call last)" in r.stderr


def test_under_num_procs_the_rank_is_named_too(tmp_path):
    r = run(tmp_path, "from test_user_errors import RaisesInAfterStep\nhooks = [L(RaisesInAfterStep)()]\n",
            "--num-procs", "2")  # fmt: skip
    assert r.returncode == 1
    assert last_line(r).startswith("error: rank ")  # either rank: both raise at the same iteration
    assert "failed: iteration 3: hook RaisesInAfterStep.after_step raised ZeroDivisionError" in last_line(r)
    assert "Traceback (most recent call last)" in r.stderr  # the user's frames, from the worker


def test_describe_batch_gives_keys_shapes_and_dtypes():
    batch = {"image": torch.zeros(2, 5, 4, 8), "names": ["a", "b"], "pair": (torch.ones(3, dtype=torch.int64),)}
    assert describe_batch(batch) == "{image: float32[2, 5, 4, 8], names: list[str, str], pair: tuple[int64[3]]}"
