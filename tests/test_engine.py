"""The trainer: a run's outputs, hooks, AMP, accumulation, clipping, exact resume, failures users see."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import DEVICES, REPO, TOY, cli_env

from lazytrain.config import L
from lazytrain.engine import Trainer, train_main
from lazytrain.errors import TrainingError


def read_metrics(path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_cli_run_writes_every_output_file(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "lazytrain.cli",
            "train",
            str(TOY / "configs" / "toy.py"),
            "train.max_iter=12",
            "train.log_period=4",
            "train.checkpoint_period=5",
            f"--output-dir={out}",
        ],
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr + r.stdout
    names = set(os.listdir(out))
    assert {"config.yaml", "log.txt", "metrics.jsonl", "checkpoints"} <= names
    assert any(n.startswith("events.out.tfevents") for n in names)
    ckpts = set(os.listdir(out / "checkpoints"))
    # one numbering everywhere: iteration N is the state after N iterations
    assert {"model_0000005.pth", "model_0000010.pth", "model_final.pth", "last_checkpoint"} <= ckpts
    assert (out / "checkpoints" / "last_checkpoint").read_text() == "model_final.pth"
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["iteration"] for r in rows if "total_loss" in r] == [4, 8, 12]
    assert any("accuracy" in r and r["iteration"] == 12 for r in rows)  # the final evaluation
    log = (out / "log.txt").read_text()
    assert "iter:  4/12" in log and "iter: 12/12" in log and "accuracy" in r.stdout
    assert "Evaluation at iteration 12:" in log
    # the start block: processes and backend, parameters with their size (a toy model is not "0.0 MB")
    assert "lt.engine.run]: 1 process, no process group." in log
    assert "Model MLPClassifier: 420 parameters (420 trainable, 0 frozen), 1.6 kB" in log
    assert f"Saving checkpoint to {out / 'checkpoints' / 'model_0000005.pth'}" in log
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/total_loss")] == [4, 8, 12]
    assert [e.step for e in acc.Scalars("val/accuracy")] == [12]
    # config.yaml is the resolved config and loads back
    from lazytrain.config import LazyConfig

    assert LazyConfig.load(out / "config.yaml").model.num_classes == 4


def test_the_terminal_speaks_from_step_1_and_each_iter_line_comes_before_its_evaluation(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run(
        [sys.executable, "-m", "lazytrain.cli", "train", str(TOY / "configs" / "toy.py"), "train.max_iter=6",
         "train.log_period=3", "train.eval_period=3", f"--output-dir={out}"],
        capture_output=True, text=True, env=cli_env(), cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr + r.stdout
    log = (out / "log.txt").read_text()
    lines = [line for line in log.splitlines() if "iter: " in line or "Evaluation at iteration" in line]
    assert [line.split("]: ")[1].split("  ")[0] for line in lines] == [
        "iter: 1/6", "iter: 3/6", "Evaluation at iteration 3:", "iter: 6/6", "Evaluation at iteration 6:",
    ]  # fmt: skip
    assert lines[0].endswith("(first step includes start-up)") and "eta:" not in lines[0]
    assert "eta:" in lines[1] and "start-up" not in lines[1]
    # the files keep one train row per log period, each evaluation's results in an eval row after it
    rows = read_metrics(out / "metrics.jsonl")
    assert [(row["iteration"], row["kind"]) for row in rows] == [(3, "train"), (3, "eval"), (6, "train"), (6, "eval")]
    assert "total_loss" in rows[0] and "accuracy" in rows[1]


def test_hooks_command_prints_the_list_in_order_with_periods():
    r = subprocess.run(
        [sys.executable, "-m", "lazytrain.cli", "hooks", str(TOY / "configs" / "toy.py"), "train.log_period=7"],
        capture_output=True,
        text=True,
        env=cli_env(),
    )
    assert r.returncode == 0, r.stderr
    hooks, settings = r.stdout.split("settings (no hooks, but they change training):\n")
    lines = hooks.strip().splitlines()
    assert [line.split()[1].split("(")[0] for line in lines] == [
        "HangWatchdog",
        "IterationTimer",
        "LRScheduler",
        "PeriodicWriter",  # the terminal's, before the evaluation table of its iteration
        "EvalHook",
        "PeriodicCheckpointer",
        "ParamNormLogger",  # the config's hooks: before the file writers, so their values are in the same row
        "PeriodicWriter",  # metrics.jsonl and TensorBoard, with that evaluation's results
        "GracefulStop",
    ]
    assert "PeriodicWriter(period=7" in r.stdout and "PeriodicCheckpointer(period=100" in r.stdout
    assert [line.split()[0] for line in settings.splitlines()] == [
        "train.freeze", "train.compile", "train.init_checkpoint", "train.init_rename", "train.init_strict", "train.ema",
        "train.activation_checkpointing", "train.amp.modules", "train.freeze_norm_eval",
    ]  # fmt: skip


def test_hooks_command_names_the_settings_that_change_training(tmp_path):
    weights = tmp_path / "w.pth"
    torch.save({"model": {}}, weights)
    r = subprocess.run(
        [sys.executable, "-m", "lazytrain.cli", "hooks", str(TOY / "configs" / "toy.py"), "train.freeze=['net.0.*']",
         "train.compile.enabled=True", f"train.init_checkpoint={weights}", "train.init_rename=[['^backbone', 'net']]",
         "train.ema.enabled=True"],
        capture_output=True, text=True, env=cli_env(),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    settings = r.stdout.split("settings (no hooks, but they change training):\n")[1]
    assert settings.splitlines() == [
        "    train.freeze                    ['net.0.*']: 2 of 4 parameter tensors, 288 of 420 parameters frozen",
        "    train.compile                   on (mode=None, backend='inductor')",
        f"    train.init_checkpoint           {weights} (its model weights; a --resume loads all instead)",
        "    train.init_rename               [['^backbone', 'net']] (regex, replacement) on its keys",
        "    train.init_strict               False (the tensors that fit)",
        "    train.ema                       on (decay 0.9998: EMAHook; evaluation uses the average)",
        "    train.activation_checkpointing  [] (every activation kept for backward)",
        "    train.amp.modules               [] (train.amp.enabled=False: all fp32)",
        "    train.freeze_norm_eval          True (no frozen norm layer)",
    ]


def no_decay_for_biases(model, weight_decay):
    decay = [p for n, p in model.named_parameters() if not n.endswith("bias")]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias")]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def test_optimizer_param_groups_from_a_function_of_the_model(toy_config):
    from lazytrain.engine import build_trainer

    cfg = toy_config()
    cfg.optimizer.params = L(no_decay_for_biases)(weight_decay=0.01)
    groups = build_trainer(cfg).optimizer.param_groups
    assert [g["weight_decay"] for g in groups] == [0.01, 0.0] and len(groups[1]["params"]) == 2


def test_hooks_replace_keeps_only_the_config_hooks(toy_config):
    from lazytrain.engine import build_hooks

    hooks = build_hooks(toy_config("train.hooks_replace=True"))
    assert [type(h).__name__ for h in hooks] == ["ParamNormLogger"]


class Recorder(torch.nn.Module):
    """A linear regression model that records the autocast dtype its forward ran under."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 1)
        self.seen_dtypes = []

    def forward(self, batch):
        out = self.lin(batch["x"])
        self.seen_dtypes.append(out.dtype)
        return {"loss_mse": ((out.float() - batch["y"]) ** 2).mean()}


def batches(n, size, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"x": torch.randn(size, 4, generator=g), "y": torch.randn(size, 1, generator=g)} for _ in range(n)]


def run_trainer(trainer, iters):
    trainer.train(0, iters)
    return trainer


@pytest.mark.parametrize("device", DEVICES)
def test_amp_bf16_runs_the_forward_in_bf16(device):
    torch.manual_seed(0)
    model = Recorder().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = run_trainer(Trainer(model, batches(3, 8), opt, device=device, amp_enabled=True, amp_dtype="bf16"), 3)
    assert model.seen_dtypes == [torch.bfloat16] * 3
    assert not trainer.grad_scaler.is_enabled()  # bf16 has fp32's range: no loss scaling
    losses = [v for v, _ in trainer.storage.history("total_loss")]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))


def test_a_finite_loader_is_restarted_each_epoch():
    model = Recorder()
    trainer = run_trainer(Trainer(model, batches(2, 4), torch.optim.SGD(model.parameters(), lr=0.1)), 5)
    assert len(trainer.storage.history("total_loss")) == 5
    with pytest.raises(TrainingError, match="the train loader yields no batches"):
        run_trainer(Trainer(Recorder(), [], torch.optim.SGD(model.parameters(), lr=0.1)), 1)


@pytest.mark.parametrize("device", DEVICES)
def test_amp_fp16_uses_a_grad_scaler(device):
    model = Recorder().to(device)
    before = model.lin.weight.detach().clone()
    trainer = Trainer(
        model, batches(2, 8), torch.optim.SGD(model.parameters(), lr=0.1), device=device, amp_enabled=True,
        amp_dtype="fp16",
    )  # fmt: skip
    assert trainer.grad_scaler.is_enabled()
    run_trainer(trainer, 5)  # the scaler may skip a step or two with inf gradients while it finds its scale
    assert model.seen_dtypes[0] == torch.float16
    assert not torch.equal(model.lin.weight, before)


def test_grad_accumulation_of_k_batches_equals_one_batch_k_times_larger():
    torch.manual_seed(0)
    small = batches(4, 8, seed=1)
    large = [{k: torch.cat([b[k] for b in small]) for k in small[0]}]
    a, b = Recorder(), Recorder()
    b.load_state_dict(a.state_dict())
    run_trainer(Trainer(a, small, torch.optim.SGD(a.parameters(), lr=0.5), grad_accum=4), 1)
    run_trainer(Trainer(b, large, torch.optim.SGD(b.parameters(), lr=0.5), grad_accum=1), 1)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)
    assert not torch.equal(a.lin.weight, Recorder().lin.weight)


def test_clipping_bounds_the_update_norm():
    torch.manual_seed(0)
    model = Recorder()
    before = [p.detach().clone() for p in model.parameters()]
    data = [{"x": torch.randn(8, 4) * 100, "y": torch.randn(8, 1) * 100}]
    trainer = run_trainer(Trainer(model, data, torch.optim.SGD(model.parameters(), lr=1.0), clip_max_norm=0.5), 1)
    step = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)])
    assert step.norm() <= 0.5 + 1e-5
    assert trainer.storage.history("grad_norm")[0][0] > 0.5  # the norm before clipping was larger


def test_grad_norm_is_logged_without_clipping_too_and_equals_the_clipping_norm():
    torch.manual_seed(0)
    a, b = Recorder(), Recorder()
    b.load_state_dict(a.state_dict())
    data = [{"x": torch.randn(8, 4), "y": torch.randn(8, 1)}]
    plain = run_trainer(Trainer(a, data, torch.optim.SGD(a.parameters(), lr=0.1)), 1)
    clipped = run_trainer(Trainer(b, data, torch.optim.SGD(b.parameters(), lr=0.1), clip_max_norm=1e9), 1)
    norm = plain.storage.history("grad_norm")[0][0]
    assert norm > 0 and norm == pytest.approx(clipped.storage.history("grad_norm")[0][0], rel=1e-6)


class NaNAt(torch.nn.Module):
    def __init__(self, at: int = 5):
        super().__init__()
        self.lin = torch.nn.Linear(8, 4)
        self.at = at
        self.calls = 0

    def forward(self, batch):
        loss = self.lin(batch["x"]).pow(2).mean()
        self.calls += 1
        if self.calls > self.at:
            loss = loss * float("nan")
        return {"loss_a": loss, "loss_b": torch.ones(())}


def test_nan_loss_stops_naming_the_iteration_and_saves_no_checkpoint_of_it(toy_config, tmp_path):
    cfg = toy_config("train.checkpoint_period=3", "train.log_period=4", "train.max_iter=20")
    cfg.model = L(NaNAt)(at=5)
    cfg.evaluator = None
    with pytest.raises(TrainingError) as info:
        train_main(cfg)
    msg = str(info.value)
    assert "non-finite loss at iteration 6" in msg and "loss_a=nan" in msg and "loss_b=1.0" in msg  # the 6th
    ckpts = set(os.listdir(tmp_path / "out" / "checkpoints"))
    assert "model_0000003.pth" in ckpts and "model_0000006.pth" not in ckpts and "model_final.pth" not in ckpts


def test_nan_loss_exits_1_with_one_paragraph(tmp_path):
    cfg = tmp_path / "nan.py"
    cfg.write_text(
        textwrap.dedent(
            f"""
        import sys; sys.path.insert(0, {str(REPO / "tests")!r})
        from configs_toy_base import *
        from test_engine import NaNAt
        model = L(NaNAt)(at=2)
        evaluator = None
        """
        )
    )
    (tmp_path / "configs_toy_base.py").write_text(f"exec(open({str(TOY / 'configs/toy.py')!r}).read())\n")
    env = cli_env()
    env["PYTHONPATH"] += os.pathsep + str(tmp_path)
    r = subprocess.run(
        [sys.executable, "-m", "lazytrain.cli", "train", str(cfg), f"--output-dir={tmp_path / 'o'}"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 1, r.stderr
    assert "error: non-finite loss at iteration 3" in r.stderr and "Traceback" not in r.stderr  # the 3rd


class ReturnsLogits(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 4)

    def forward(self, batch):
        return self.lin(batch["x"])


def test_model_output_not_a_loss_names_the_model_and_what_it_returned(toy_config):
    cfg = toy_config()
    cfg.model = L(ReturnsLogits)()
    with pytest.raises(TrainingError) as info:
        train_main(cfg)
    assert "ReturnsLogits.forward returned a tensor of shape (32, 4) in train mode" in str(info.value)


def test_eval_command_evaluates_a_checkpoint(toy_config, tmp_path):
    train_main(toy_config("train.max_iter=30"))
    weights = tmp_path / "out" / "checkpoints" / "model_final.pth"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "lazytrain.cli",
            "eval",
            str(TOY / "configs/toy.py"),
            "--weights",
            str(weights),
            f"--output-dir={tmp_path / 'ev'}",
        ],
        capture_output=True,
        text=True,
        env=cli_env(),
    )
    assert r.returncode == 0, r.stderr
    assert "accuracy" in r.stdout and f"Evaluation of {weights} (iteration 30):" in r.stdout
    assert r.stdout.splitlines()[-1] == f"results: {tmp_path / 'ev' / 'eval' / 'metrics.jsonl'}"
    row = read_metrics(tmp_path / "ev" / "eval" / "metrics.jsonl")[-1]
    assert row["iteration"] == 30 and row["kind"] == "eval" and row["accuracy"] > 0.5


def test_eval_only_uses_resumed_weights(toy_config, tmp_path):
    train_main(toy_config("train.max_iter=30"))
    results = train_main(toy_config("train.max_iter=30"), resume=True, eval_only=True)
    assert results["accuracy"] > 0.5
    assert "Evaluation at iteration 30:" in (tmp_path / "out" / "log.txt").read_text()


def test_a_cpu_run_on_a_gpu_machine_pins_no_memory(toy_config, monkeypatch):
    from lazytrain.engine import build_trainer

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    trainer = build_trainer(toy_config("train.device=cpu"))
    assert trainer.data_loader.pin_memory is False and trainer.test_loader.pin_memory is False


def test_a_run_starts_with_versions_device_data_and_ends_saying_where_things_are(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "lazytrain.cli", "train", str(TOY / "configs" / "toy.py"), "train.max_iter=4",
         f"--output-dir={tmp_path / 'run'}"],
        capture_output=True, text=True, env=cli_env(),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    head = r.stdout.split("Starting training")[0]
    assert "lazytrain 0." in head and f"torch {torch.__version__}" in head
    assert "Device cpu (" in head and f"Config saved to {tmp_path / 'run' / 'config.yaml'}" in head
    assert "Data: train 512 samples, test 256 samples" in head
    assert "Model MLPClassifier: 420 parameters (420 trainable, 0 frozen)" in head
    tail = r.stdout.split("Training done. Where things are:")[1]
    assert "metrics.jsonl" in tail and f"tensorboard --logdir {tmp_path}" in tail
    final = tmp_path / "run" / "checkpoints" / "model_final.pth"
    assert f"lazytrain export {TOY / 'configs' / 'toy.py'} --weights {final}" in tail


def test_log_lines_name_their_module_and_the_level_of_warnings(tmp_path, toy_config):
    train_main(toy_config("train.max_iter=2"))
    train_main(toy_config("train.max_iter=3"), resume=True)  # a resume with another config warns
    log = (tmp_path / "out" / "log.txt").read_text()
    assert " lt.engine.train_loop]: Starting training" in log
    assert " lt.engine.resume WARNING]: " in log and "the config changed since the checkpoint" in log
    assert "next         lazytrain eval CONFIG --weights " in log  # run from Python (pytest): no command line


def test_version_and_help_show_defaults_and_an_example():
    run = lambda *a: subprocess.run([sys.executable, "-m", "lazytrain.cli", *a], capture_output=True, text=True,  # noqa: E731
                                    env=cli_env())  # fmt: skip
    assert run("--version").stdout.strip().startswith("lazytrain 0.")
    help_text = run("train", "--help").stdout
    assert "(default: 1)" in help_text and "example:\n  lazytrain train configs/kitti_seg.py" in help_text

    assert "(default: auto)" in help_text
    # only defaults that tell something: none for None / False, none where the help already says it
    for command in ("train", "eval", "export", "analyze", "predict", "hooks", "config"):
        help_text = " ".join(run(command, "--help").stdout.split())  # argparse wraps lines
        assert "(default: None)" not in help_text and "(default: False)" not in help_text, command
        assert "(default: the exporter's) (default:" not in help_text and "; default: freshly initialised weights (" \
            not in help_text, command  # fmt: skip
    analyze = " ".join(run("analyze", "--help").stdout.split())
    assert analyze.count("(default: ") == 2 and "after 2 warm-up (default: 10)" in analyze
    predict = " ".join(run("predict", "--help").stdout.split())
    assert "the split to predict (sets predict.split; default: the config's) --out" in predict


def test_the_override_example_in_help_is_one_that_changes_what_the_command_does():
    from lazytrain.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, __import__("argparse")._SubParsersAction)).choices
    for command in ("eval", "export", "analyze", "predict"):
        help_text = " ".join(commands[command].format_help().split())
        assert "train.max_iter" not in help_text, command  # evaluating or exporting runs no iteration
    assert "e.g. train.max_iter=100" in " ".join(commands["train"].format_help().split())


def test_an_error_in_before_train_is_the_one_raised_and_after_train_of_every_hook_still_runs():
    """after_train runs for every hook even when training stopped before some hook's before_train ran; what
    they raise then is logged and never replaces the error training stopped on."""
    import logging

    from lazytrain.engine import HookBase, IterationTimer, TrainerBase

    class BreaksBeforeTrain(HookBase):
        def before_train(self):
            raise RuntimeError("could not open the writer")

    class BreaksAfterTrain(HookBase):
        def after_train(self):
            raise OSError(28, "No space left on device")

    class Closes(HookBase):
        closed = False

        def after_train(self):
            Closes.closed = True

    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())  # type: ignore[method-assign]
    log = logging.getLogger("lazytrain.engine.train_loop")
    log.addHandler(handler)
    trainer = TrainerBase()
    trainer.register_hooks([BreaksBeforeTrain(), IterationTimer(), BreaksAfterTrain(), Closes()])
    try:
        with pytest.raises(RuntimeError, match="could not open the writer"):
            trainer.train(0, 5)
    finally:
        log.removeHandler(handler)
    assert Closes.closed and isinstance(trainer.failure, RuntimeError)
    warnings = [m for m in messages if "after_train raised" in m]
    assert warnings == [
        "BreaksAfterTrain.after_train raised OSError: [Errno 28] No space left on device (while training was "
        "stopping on RuntimeError)"
    ]


def test_a_raising_after_train_on_a_completed_run_still_runs_every_later_hooks_after_train(log_lines):
    from lazytrain.engine import HookBase, TrainerBase

    class BreaksAfterTrain(HookBase):
        def after_train(self):
            raise OSError(28, "No space left on device")

    class AlsoBreaks(HookBase):
        def after_train(self):
            raise ValueError("the profiler trace is empty")

    class Records(HookBase):
        ran = False

        def after_train(self):
            Records.ran = True

    class Steps(TrainerBase):
        def run_step(self):
            pass

    trainer = Steps()
    trainer.register_hooks([BreaksAfterTrain(), AlsoBreaks(), Records()])
    with pytest.raises(OSError, match="No space left on device"):
        trainer.train(0, 3)
    assert Records.ran and trainer.completed
    assert [m for m in log_lines if "after_train raised" in m] == [
        "WARNING lazytrain.engine.train_loop: AlsoBreaks.after_train raised ValueError: the profiler trace is empty "
        "(while an earlier after_train raised OSError, the error shown)"
    ]


class WarnsOnSample7(__import__("toyproj.data").data.BlobsDataset):
    def __getitem__(self, index):
        if index == 7:
            import warnings

            warnings.warn("sample 7 looks odd", stacklevel=1)
        return super().__getitem__(index)


@pytest.mark.parametrize("workers", [0, 2])
def test_warnings_and_fvcore_messages_reach_log_txt_in_our_format(toy_config, tmp_path, workers):
    cfg = toy_config("train.max_iter=3", "train.checkpoint_period=2", f"dataloader.train.num_workers={workers}",
                     "dataloader.train.batch_size=64", "dataloader.train.shuffle=False")  # fmt: skip
    cfg.dataloader.train.dataset._target_ = WarnsOnSample7
    train_main(cfg)
    log = (tmp_path / "out" / "log.txt").read_text()
    line = next(line for line in log.splitlines() if "sample 7 looks odd" in line)
    assert " py.warnings WARNING]: UserWarning: sample 7 looks odd (" in line and "test_engine.py:" in line
    assert f" lt.checkpoint]: Saving checkpoint to {tmp_path / 'out' / 'checkpoints' / 'model_0000002.pth'}" in log
    assert "fvcore.common" not in log


def test_parameter_sizes_read_in_kb_below_a_megabyte():
    from lazytrain.fileio import format_bytes

    sizes = (format_bytes(n, decimals=1) for n in (1680, 3 * 2**20, 1536 * 2**10))
    assert tuple(sizes) == ("1.6 kB", "3.0 MB", "1.5 MB")
