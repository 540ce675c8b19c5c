"""User evaluation code (the evaluator, the model's eval forward, the test loader) is treated as the training
loop's user code: its traceback is kept and one closing line names what raised and where; rank 0's results
are the ones that count, so evaluators that return None off rank 0 (detectron2's convention) work."""

from __future__ import annotations

import subprocess

import pytest
import torch
from conftest import last_line, train_toy
from toyproj.evaluator import AccuracyEvaluator
from toyproj.model import MLPClassifier

from lazytrain import comm
from lazytrain.errors import TrainingError, UserCodeError
from lazytrain.evaluation import inference_on_dataset


class ProcessRaises(AccuracyEvaluator):
    def process(self, batch, outputs):
        raise ValueError("the user's evaluator broke")


class EvalForwardRaises(MLPClassifier):
    def forward(self, batch):
        if not self.training:
            raise RuntimeError("the user's eval forward broke")
        return super().forward(batch)


class NoneOffRankZero(AccuracyEvaluator):
    def evaluate(self):
        results = super().evaluate()
        return results if comm.is_main_process() else None


class EmptyOffRankZero(AccuracyEvaluator):
    def evaluate(self):
        results = super().evaluate()
        return results if comm.is_main_process() else {}


def train(tmp_path, body: str, *args: str) -> subprocess.CompletedProcess:
    return train_toy(tmp_path, body, "train.max_iter=4", "dataloader.test.dataset.num_samples=128", *args)


def test_an_evaluator_that_raises_ends_with_one_line_naming_it_and_the_iteration(tmp_path):
    r = train(tmp_path, "from test_evaluation_errors import ProcessRaises\nevaluator._target_ = ProcessRaises\n")
    assert r.returncode == 1
    assert last_line(r) == (
        "error: evaluation at iteration 4, batch 1: ProcessRaises.process raised ValueError: the user's evaluator broke"
    )
    assert 'in process\n    raise ValueError("the user\'s evaluator broke")' in r.stderr  # the user's frames


def test_a_model_whose_eval_forward_raises_is_named_with_the_batch():
    loader = [{"x": torch.zeros(2, 8), "y": torch.zeros(2, dtype=torch.int64)}]
    with pytest.raises(UserCodeError) as raised:
        inference_on_dataset(EvalForwardRaises(8, 4), loader, AccuracyEvaluator())
    assert str(raised.value) == (
        "evaluation, batch 1: EvalForwardRaises.forward raised RuntimeError: the user's eval forward broke "
        "(batch: {x: float32[2, 8], y: int64[2]})"
    )
    assert "in forward" in raised.value.details


def test_an_evaluator_that_raises_in_evaluate_or_reset_is_named():
    class Broken(AccuracyEvaluator):
        def evaluate(self):
            return {}["accuracy"]

    loader = [{"x": torch.zeros(2, 8), "y": torch.zeros(2, dtype=torch.int64)}]
    with pytest.raises(UserCodeError, match=r"^evaluation: Broken.evaluate raised KeyError: 'accuracy'$"):
        inference_on_dataset(MLPClassifier(8, 4), loader, Broken())


def test_an_evaluator_returning_none_means_no_metrics_and_a_list_is_a_one_paragraph_error():
    loader = [{"x": torch.zeros(2, 8), "y": torch.zeros(2, dtype=torch.int64)}]

    class ReturnsNone(AccuracyEvaluator):
        def evaluate(self):
            return None

    class ReturnsList(AccuracyEvaluator):
        def evaluate(self):
            return [0.5]

    assert inference_on_dataset(MLPClassifier(8, 4), loader, ReturnsNone()) == {}
    with pytest.raises(TrainingError, match=r"ReturnsList\.evaluate returned list; it must return a dict"):
        inference_on_dataset(MLPClassifier(8, 4), loader, ReturnsList())


@pytest.mark.parametrize("evaluator", ["NoneOffRankZero", "EmptyOffRankZero"])
def test_results_off_rank_0_do_not_count_and_train_best_saves_on_every_rank(tmp_path, evaluator):
    r = train(
        tmp_path,
        f"from test_evaluation_errors import {evaluator}\nevaluator._target_ = {evaluator}\n",
        "train.eval_period=2",
        "train.best.metric=accuracy",
        "--num-procs",
        "2",
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "checkpoints" / "model_best.pth").is_file()
    assert "Evaluation at iteration 4:" in r.stdout
