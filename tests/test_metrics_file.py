"""metrics.jsonl has one shape: a "train" row per logged iteration, an "eval" row per evaluation, each with its
"iteration"; a full disk leaves no half row, and a torn last line is repaired at the next start."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from lazytrain.engine import train_main
from lazytrain.errors import TrainingError
from lazytrain.events import JSONWriter


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


def test_a_full_disk_mid_row_leaves_no_half_row_and_stops_with_the_disk_full_error(toy_config, monkeypatch):
    cfg = toy_config("train.max_iter=12", "train.log_period=4", "train.eval_period=0", "hooks.0.period=4")
    metrics = f"{cfg.train.output_dir}/metrics.jsonl"
    real_write = os.write
    writes = []

    def write_half_then_fail(fd: int, data) -> int:
        if not os.readlink(f"/proc/self/fd/{fd}").endswith("metrics.jsonl"):
            return real_write(fd, data)
        writes.append(len(data))
        if len(writes) < 2:
            return real_write(fd, data)
        real_write(fd, bytes(data)[: len(data) // 2])  # the disk fills up midway through the row
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", write_half_then_fail)
    with pytest.raises(TrainingError) as info:
        train_main(cfg)
    assert str(info.value).startswith(f"cannot write {metrics}: [Errno 28] No space left on device (ENOSPC)")
    monkeypatch.undo()
    text = Path(metrics).read_text()
    assert text.endswith("\n")
    assert [(row["iteration"], row["kind"]) for row in read_rows(metrics)] == [(4, "train")]  # parses line by line


@pytest.mark.parametrize(
    ("torn", "why"),
    [
        ('{"iteration": 12, "kind": "tr', "no end of line"),
        ('{"iteration": 12, "kind": "train"}', "no end of line"),
        ('{"iteration": 12, "ki\n', "not valid JSON"),
    ],
)
def test_a_torn_last_line_is_cut_off_at_the_next_start_with_one_warning(tmp_path, log_lines, torn, why):
    metrics = tmp_path / "metrics.jsonl"
    whole = '{"iteration": 4, "kind": "train", "total_loss": 1.0}\n{"iteration": 8, "kind": "train"}\n'
    metrics.write_text(whole + torn)
    JSONWriter(str(metrics)).open(start_iter=0)
    assert metrics.read_text() == whole
    warnings = [line for line in log_lines if line.startswith("WARNING")]
    size = len(torn.encode())
    assert [w.split(": ", 1)[1] for w in warnings] == [
        f"{metrics}: its last line was cut off ({size} bytes, {why}): a write there stopped midway."
    ]


def test_a_whole_file_is_left_as_it_is_at_the_next_start(tmp_path, log_lines):
    metrics = tmp_path / "metrics.jsonl"
    whole = '{"iteration": 4, "kind": "train", "total_loss": 1.0}\n'
    metrics.write_text(whole)
    JSONWriter(str(metrics)).open(start_iter=0)
    assert metrics.read_text() == whole and not [line for line in log_lines if line.startswith("WARNING")]


def test_a_resumed_run_appends_after_the_repaired_line(toy_config, tmp_path):
    train_main(toy_config("train.max_iter=8", "train.log_period=4", "train.eval_period=0", "hooks.0.period=4"))
    metrics = tmp_path / "out" / "metrics.jsonl"
    with open(metrics, "a") as f:
        f.write('{"iteration": 12, "kind": "tra')  # an older lazytrain stopped here on a full disk
    cfg = toy_config("train.max_iter=12", "train.log_period=4", "train.eval_period=0", "hooks.0.period=4")
    train_main(cfg, resume=True)
    assert [(row["iteration"], row["kind"]) for row in read_rows(metrics)] == [
        (4, "train"), (8, "train"), (8, "eval"), (12, "train"), (12, "eval"),
    ]  # fmt: skip
