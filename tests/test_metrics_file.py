"""metrics.jsonl has one shape: a "train" row per logged iteration, an "eval" row per evaluation, each with its
"iteration"; a full disk leaves no half row, and a torn last line is repaired at the next start."""

from __future__ import annotations

import json

from lazytrain.engine import train_main


def read_rows(path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_every_row_has_a_kind_one_train_row_per_logged_iteration_then_its_evaluation(toy_config):
    # the toy config's ParamNormLogger is a config hook: what it puts is in its iteration's train row
    cfg = toy_config("train.max_iter=8", "train.log_period=4", "train.eval_period=4", "hooks.0.period=4")
    train_main(cfg)
    rows = read_rows(f"{cfg.train.output_dir}/metrics.jsonl")
    assert [(row["iteration"], row["kind"]) for row in rows] == [(4, "train"), (4, "eval"), (8, "train"), (8, "eval")]
    train, evaluation = rows[0], rows[1]
    assert {"total_loss", "lr", "time", "param_norm"} <= set(train) and "accuracy" not in train
    assert set(evaluation) == {"iteration", "kind", "accuracy", "num_samples"}
