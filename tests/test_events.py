"""Metric storage and its writers: lazy conversion, cross-rank means, TensorBoard files."""

from __future__ import annotations

import math
import os
import shutil

import torch
from conftest import TOY

from lazytrain import comm
from lazytrain.engine import HookBase, train_main
from lazytrain.events import EventStorage, JSONWriter


def test_tensorboard_event_file_holds_grouped_scalars_the_config_and_hparams(toy_config, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    cfg = toy_config("train.log_period=5")
    train_main(cfg)
    acc = EventAccumulator(str(tmp_path / "out"), size_guidance={"tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"train/total_loss", "train/lr", "val/accuracy"} <= set(tags["scalars"])
    assert [e.step for e in acc.Scalars("train/total_loss")] == [5, 10]
    config_text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "max_iter: 10" in config_text and "MLPClassifier" in config_text
    plugin = acc.PluginTagToContent("hparams")
    session = plugin_data_pb2.HParamsPluginData.FromString(plugin["_hparams_/session_start_info"]).session_start_info
    assert session.hparams["max_iter"].number_value == 10 and session.hparams["optimizer.lr"].number_value == 0.1
    assert session.hparams["model"].string_value == "toyproj.model.MLPClassifier"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(plugin["_hparams_/experiment"]).experiment
    assert [m.name.tag for m in experiment.metric_infos] == ["val/accuracy", "val/num_samples"]


def test_writers_are_set_up_before_the_first_step(toy_config, tmp_path):
    """tensorboard takes ~0.3 s to import: done in before_train, it does not stall a step in the timed loop."""

    class LookAtFirstStep(HookBase):
        def before_step(self):
            if self.trainer.iter == 0:
                self.files = os.listdir(tmp_path / "out")

    from lazytrain.engine import build_trainer, prepare_output_dir

    cfg = toy_config("train.max_iter=2")
    prepare_output_dir(cfg)
    trainer = build_trainer(cfg)
    look = LookAtFirstStep()
    trainer.register_hooks([look])
    trainer.train(0, 2)
    assert any(name.startswith("events.out.tfevents") for name in look.files)


def test_event_storage_flags_the_first_nonfinite_loss_with_its_terms():
    with EventStorage() as storage:
        for it, value in enumerate([1.0, 2.0, float("inf"), float("nan")]):
            storage.iter = it
            storage.put_scalars(total_loss=torch.tensor(value), loss_x=torch.tensor(0.5), check_finite=True)
        assert storage.first_nonfinite is None or storage.first_nonfinite[0] == 2  # lazily: not yet converted
        storage.flush()
        assert storage.first_nonfinite == (2, {"total_loss": float("inf"), "loss_x": 0.5})


def test_flush_across_ranks_averages_what_this_rank_logged():
    other_rank = [("loss_a", 3.0, 0), ("loss_b", 7.0, 0), ("loss_a", float("nan"), 1)]  # loss_b: only there
    with EventStorage() as storage:
        for it in range(2):
            storage.iter = it
            storage.put_scalars(loss_a=torch.tensor(1.0), check_finite=True)
        storage.gather = lambda mine: [mine, ((), other_rank)]
        storage.flush()
        assert storage.history("loss_a")[0] == (2.0, 0)
        iteration, terms = storage.first_nonfinite
        assert iteration == 1 and math.isnan(terms["loss_a"])  # a NaN on another rank stops this rank too
        assert "loss_b" not in storage.latest()


def test_reads_in_a_process_group_never_flush_on_one_rank():
    """A hook that reads the storage between two collective flushes must not turn this rank's pending values
    into floats alone: they would skip the cross-rank mean (the logged loss was this rank's, not the mean)."""
    other_rank = ((), [("loss", 3.0, 0), ("loss", 3.0, 1)])
    with EventStorage(gather=lambda mine: [mine, other_rank]) as storage:
        for it in range(2):
            storage.iter = it
            storage.put_scalar("loss", torch.tensor(1.0), check_finite=True)
            assert "loss" not in storage.latest() and storage.history("loss") == []  # a mid-period read
            assert math.isnan(storage.median("loss", 20))
        storage.flush()  # the collective one
        assert storage.history("loss") == [(2.0, 0), (2.0, 1)]
        assert storage.latest()["loss"] == (2.0, 1)


def test_reads_in_one_process_see_every_value_put():
    with EventStorage() as storage:
        storage.put_scalar("loss", torch.tensor(1.5))
        assert storage.latest()["loss"] == (1.5, 0)


class ReadsStorageEveryStep(HookBase):
    """What a user's hook may do: look at the newest losses after each step (placed before the writer)."""

    def after_step(self) -> None:
        self.seen = self.trainer.storage.latest().get("loss_rank")


class RankZeroJSONWriter(JSONWriter):
    def write(self, storage: EventStorage) -> None:
        if comm.is_main_process():
            super().write(storage)


def test_a_hook_reading_the_storage_keeps_logged_losses_the_mean_over_ranks(tmp_path):
    import json
    import subprocess
    import sys

    from conftest import cli_env

    folder = tmp_path / "configs"
    folder.mkdir()
    shutil.copy(TOY / "configs" / "toy.py", folder / "toy.py")
    (folder / "rank.py").write_text(
        "from .toy import *\nfrom lazytrain.config import L\nfrom dist_helpers import RankLoss\n"
        "from lazytrain.engine import PeriodicWriter\n"
        "from test_events import ReadsStorageEveryStep, RankZeroJSONWriter\n"
        "model = L(RankLoss)()\nevaluator = None\ntrain.hooks_replace = True\n"
        "writer = L(RankZeroJSONWriter)(path='${train.output_dir}/metrics.jsonl')\n"
        "hooks = [L(ReadsStorageEveryStep)(), L(PeriodicWriter)(writers=[writer], period=3)]\n"
    )
    env = cli_env()
    env["PYTHONPATH"] += os.pathsep + os.path.dirname(os.path.abspath(__file__))
    env["CUDA_VISIBLE_DEVICES"] = ""
    out = tmp_path / "run"
    r = subprocess.run(
        [sys.executable, "-m", "lazytrain.cli", "train", str(folder / "rank.py"), "--num-procs", "2",
         "train.max_iter=6", "train.log_period=3", f"--output-dir={out}"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = (out / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines if "loss_rank" in line]
    assert [row["iteration"] for row in rows] == [3, 6]
    assert {row["loss_rank"] for row in rows} == {0.5}  # ranks 0 and 1, although rank 0's hook read mid-period


class TwoRanks:
    """A stand-in for two ranks in lockstep: the other rank puts ``offset`` more than this one, with the same
    layout; counts the collectives used."""

    def __init__(self, offset: float) -> None:
        self.offset, self.gathers, self.reduces = offset, 0, 0

    def gather(self, mine):
        self.gathers += 1
        layout, entries = mine
        return [mine, (layout, [(n, v + self.offset, it) for n, v, it in entries])]

    def all_reduce_sum(self, buffer: torch.Tensor) -> None:
        self.reduces += 1
        values, flag = buffer[:-1].clone(), buffer[-1].item()
        buffer[:-1] = values * 2 + self.offset
        buffer[-1] = flag * 2


def test_cross_rank_means_take_one_all_reduce_once_the_layout_is_agreed():
    ranks = TwoRanks(offset=2.0)
    with EventStorage(gather=ranks.gather, all_reduce_sum=ranks.all_reduce_sum) as storage:
        for period in range(3):
            for it in range(period * 2, period * 2 + 2):
                storage.iter = it
                storage.put_scalars(total_loss=torch.tensor(float(it)), loss_a=torch.tensor(1.0))
            storage.flush()
        assert (ranks.gathers, ranks.reduces) == (1, 2)  # pickled once; then one flat all_reduce per period
        assert storage.history("total_loss") == [(it + 1.0, it) for it in range(6)]  # (it + it + 2) / 2
        storage.iter = 6
        storage.put_scalars(total_loss=torch.tensor(6.0), grad_norm=torch.tensor(3.0))  # another layout
        storage.flush()
        assert (ranks.gathers, ranks.reduces) == (2, 3)  # the all_reduce saw the change; the gather re-agreed
        assert storage.latest()["grad_norm"] == (4.0, 6)


def test_the_terminal_line_keeps_one_number_format_and_width_from_line_to_line():
    import logging

    from lazytrain.events import TerminalWriter

    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("test_events.terminal")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    writer = TerminalWriter(max_iter=300, window=1, logger=logger)
    steps = [(9, 3.134, 2e-06, 0.01), (99, 2.73, 0.001925, 0.0123), (299, 12.5, 9.536e-05, 0.25)]
    with EventStorage() as storage:
        for it, loss, lr, seconds in steps:
            storage.iter = it
            storage.put_scalars(total_loss=loss, lr=lr, time=seconds, data_time=0.001)
            writer.write(storage)
    lines = [line.split("  max_")[0] for line in lines]  # the peak memory varies
    assert lines[0].startswith("iter:  10/300  eta: 0:00:02  total_loss: 3.1340  time: 0.0100  data_time: 0.0010")
    assert lines[0].endswith("lr: 2.000e-06")
    assert lines[1].endswith("total_loss: 2.7300  time: 0.0123  data_time: 0.0010  lr: 1.925e-03")
    assert lines[1].startswith("iter: 100/300")
    assert "total_loss: 12.5000" in lines[2] and lines[2].endswith("lr: 9.536e-05")
    # the fields of one kind start at the same column on each line (the ETA may grow; here it shrinks)
    for name in ("total_loss:", "lr:"):
        assert len({line.index(name) for line in lines[:2]}) == 1


def test_an_integer_result_stays_an_integer_in_the_table_and_metrics_jsonl(tmp_path):
    import json

    from lazytrain.evaluation import format_results

    results = {"accuracy": 0.5, "num_samples": torch.tensor(359)}
    assert format_results(results).splitlines() == ["  accuracy     0.5000", "  num_samples  359"]
    with EventStorage() as storage:
        storage.put_scalar("num_samples", 359, smoothing_hint=False, group="val")
        storage.put_scalar("accuracy", 0.5, smoothing_hint=False, group="val")
        writer = JSONWriter(str(tmp_path / "metrics.jsonl"))
        writer.write(storage)
        writer.close()
    row = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert row == {"iteration": 1, "kind": "eval", "num_samples": 359, "accuracy": 0.5}
    assert '"num_samples": 359,' in (tmp_path / "metrics.jsonl").read_text()
