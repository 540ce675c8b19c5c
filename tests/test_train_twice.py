"""A trainer can train again (a notebook: ``trainer.train(0, 4)``, look, then ``trainer.train(4, 8)``): the
writers reopen, and metrics.jsonl and TensorBoard hold both parts."""

from __future__ import annotations

import json

from lazytrain.engine import build_trainer


def test_a_second_train_call_continues_and_writes_metrics_and_tensorboard_again(toy_config, tmp_path, log_lines):
    trainer = build_trainer(toy_config("train.max_iter=8", "train.log_period=2", "train.eval_period=4"))
    trainer.train(0, 4)
    trainer.train(4, 8)
    out = tmp_path / "out"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["iteration"] for row in rows if "total_loss" in row] == [2, 4, 6, 8]
    assert [row["iteration"] for row in rows if "accuracy" in row] == [4, 8]
    assert len(list(out.glob("events.out.tfevents.*"))) == 2  # one event file per train() call
    assert sum("iter: 8/8" in line for line in log_lines) == 1  # the terminal speaks in the second call too


def test_the_same_iterations_trained_again_are_written_again(toy_config, tmp_path):
    trainer = build_trainer(toy_config("train.max_iter=4", "train.log_period=2", "train.eval_period=0"))
    trainer.train(0, 4)
    trainer.train(0, 4)
    rows = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [row["iteration"] for row in rows if "total_loss" in row] == [2, 4, 2, 4]
