"""Checkpoints: atomic writes that survive a kill, keep-last-N, RNG state, exact resume."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import DEVICES, TOY, cli_env, load_config

from lazytrain.checkpoint import Checkpointer
from lazytrain.config import L
from lazytrain.engine import HookBase, train_main
from lazytrain.fileio import atomic_write


def read_metrics(path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


class CrashAt(HookBase):
    """Simulates a crash (after the checkpointer ran) at one iteration."""

    def __init__(self, iteration):
        self.iteration = iteration

    def after_step(self):
        if self.trainer.iter == self.iteration:
            raise KeyboardInterrupt("simulated crash")


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_continues_with_identical_losses(tmp_path, num_workers):
    common = [
        "train.max_iter=16",
        "train.log_period=1",
        "train.checkpoint_period=8",
        "train.deterministic=True",
        "train.eval_period=0",
        f"dataloader.train.num_workers={num_workers}",
        "model.dropout=0.2",
    ]
    full = load_config(TOY / "configs/toy.py", f"train.output_dir={tmp_path / 'full'}", *common)
    train_main(full)

    parts = load_config(TOY / "configs/toy.py", f"train.output_dir={tmp_path / 'parts'}", *common)
    parts.hooks.append(L(CrashAt)(iteration=9))
    with pytest.raises(KeyboardInterrupt):
        train_main(parts)
    resumed = load_config(TOY / "configs/toy.py", f"train.output_dir={tmp_path / 'parts'}", *common)
    train_main(resumed, resume=True)

    def losses(run):
        rows = read_metrics(tmp_path / run / "metrics.jsonl")
        return {r["iteration"]: r["total_loss"] for r in rows if "total_loss" in r}

    a, b = losses("full"), losses("parts")
    assert sorted(a) == list(range(1, 17)) and sorted(b) == list(range(1, 17))
    assert [a[i] for i in range(1, 17)] == [b[i] for i in range(1, 17)]  # to the last bit
    assert len(set(a.values())) > 8  # they really vary: dropout, jitter and shuffling are in play


def test_checkpoint_write_killed_midway_leaves_previous_checkpoint_valid(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys, torch
        from lazytrain.checkpoint import Checkpointer
        model = torch.nn.Linear(4, 4)
        ckpt = Checkpointer(model, {str(tmp_path)!r})
        ckpt.save("model_0000001", iteration=0)
        model.register_buffer("big", torch.zeros(200_000_000))  # 800 MB: the write takes a while
        print("saving", flush=True)
        ckpt.save("model_0000002", iteration=1)
        print("saved", flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=cli_env())
    assert proc.stdout.readline().strip() == "saving"
    import time

    deadline = time.time() + 30
    while time.time() < deadline:  # kill it once the temp file is being written
        if any(n.startswith(".tmp-") and os.path.getsize(tmp_path / n) > 0 for n in os.listdir(tmp_path)):
            break
        time.sleep(0.002)
    proc.kill()
    proc.wait()
    assert proc.returncode == -9
    assert not (tmp_path / "model_0000002.pth").exists()
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    from lazytrain.checkpoint import Checkpointer

    ckpt = Checkpointer(torch.nn.Linear(4, 4), str(tmp_path))  # also removes the stale temp file
    assert ckpt.load(ckpt.get_checkpoint_file())["iteration"] == 0
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]


@pytest.mark.parametrize("device", DEVICES)
def test_saved_rng_state_repeats_the_same_draws(device):
    import random

    import numpy as np

    from lazytrain.rng import get_rng_state, set_rng_state

    torch.rand(1, device=device)  # CUDA: its RNG state is saved once CUDA is in use

    def draw():
        return random.random(), float(np.random.rand()), torch.rand(3, device=device).tolist()

    state = get_rng_state()
    first = draw()
    set_rng_state(state)
    assert draw() == first
    assert device != "cuda" or "cuda" in state


def test_keep_last_removes_old_periodic_checkpoints_but_never_final_or_last(tmp_path):
    ckpt = Checkpointer(torch.nn.Linear(2, 2), str(tmp_path))
    for done in (10, 20, 30, 40):
        ckpt.save(f"model_{done:07d}", iteration=done - 1)
        ckpt.remove_old(2)
    ckpt.save("model_final", iteration=39)
    ckpt.remove_old(2)
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000030.pth", "model_0000040.pth",
                                            "model_final.pth"]  # fmt: skip
    ckpt.remove_old(0)  # 0 keeps all
    assert len(ckpt.periodic_checkpoints()) == 2


def test_written_files_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write(str(tmp_path / "a"), b"x")
        Checkpointer(torch.nn.Linear(2, 2), str(tmp_path / "ck")).save("model_final")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "a").st_mode & 0o777 == 0o644  # teammates can read it (mkstemp alone: 0600)
    assert os.stat(tmp_path / "ck" / "model_final.pth").st_mode & 0o777 == 0o644
    assert os.stat(tmp_path / "ck" / "last_checkpoint").st_mode & 0o777 == 0o644


def enospc_save(obj, f):
    """torch.save on a full disk: some bytes, then torch's RuntimeError chained to the ENOSPC."""
    f.write(b"PK partial")
    try:
        raise OSError(28, "No space left on device")
    except OSError as e:
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0") from e


def test_a_checkpoint_write_on_a_full_disk_is_one_paragraph_and_keeps_the_previous(tmp_path, monkeypatch):
    from lazytrain.errors import TrainingError

    ckpt = Checkpointer(torch.nn.Linear(256, 256), str(tmp_path))
    ckpt.save("model_0000010", iteration=9)
    monkeypatch.setattr(torch, "save", enospc_save)
    with pytest.raises(TrainingError) as info:
        ckpt.save("model_0000020", iteration=19)
    message = str(info.value)
    assert message.startswith(
        f"cannot write {tmp_path / 'model_0000020.pth'}: [Errno 28] No space left on device (ENOSPC)"
    )
    # the fake full disk has room now: the message says what happened, not that 257 kB do not fit
    assert re.search(r"; \S+ has \d+ (kB|MB) free now, more than the file's ~257 kB, after the partial", message)
    assert "unexpected pos" not in message
    assert f"The last checkpoint, {tmp_path / 'model_0000010.pth'}, and last_checkpoint are intact" in message
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000010.pth"]  # no temp file left
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000010.pth"


def test_config_yaml_on_a_full_disk_names_the_folder(toy_config, monkeypatch, tmp_path):
    import lazytrain.config.lazy_config as lazy_config
    from lazytrain.errors import TrainingError

    def full(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(lazy_config, "atomic_write", full)
    with pytest.raises(TrainingError) as info:
        train_main(toy_config())
    assert str(info.value).startswith(f"train.output_dir: cannot write {tmp_path / 'out' / 'config.yaml'}: [Errno 28]")
    assert "(ENOSPC)" in str(info.value) and "--output-dir" in str(info.value)


@pytest.fixture
def tiny_filesystem(tmp_path):
    """A 2 MB tmpfs, where this machine lets us mount one (root in a container); skipped elsewhere."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_real_full_disk_leaves_the_previous_checkpoint_intact(tiny_filesystem):
    from lazytrain.errors import TrainingError

    model = torch.nn.Linear(256, 256)  # ~257 kB
    ckpt = Checkpointer(model, str(tiny_filesystem))
    ckpt.save("model_0000010", iteration=9)
    model.register_buffer("big", torch.zeros(1_000_000))  # 4 MB: does not fit
    with pytest.raises(TrainingError, match=r"\(ENOSPC\).* has \d+ (kB|MB) free and this file needs about 4 MB"):
        ckpt.save("model_0000020", iteration=19)
    assert sorted(os.listdir(tiny_filesystem)) == ["last_checkpoint", "model_0000010.pth"]
    assert (
        Checkpointer(torch.nn.Linear(256, 256), str(tiny_filesystem)).load(ckpt.get_checkpoint_file())["iteration"] == 9
    )


class DiskFullAt(HookBase):
    """From ``iteration`` on, the output folder's disk is full. ``how="open"``: opening a file there for
    writing fails with ENOSPC (TensorBoard's writer thread reopens its event file for each record; checkpoints
    are new files; metrics.jsonl and log.txt stay open). ``how="fill"``: a file fills the folder's file system
    (a small tmpfs), so that every write there fails."""

    def __init__(self, iteration: int, how: str = "open") -> None:
        self.iteration, self.how = iteration, how

    def after_step(self) -> None:
        if self.trainer.iter != self.iteration:
            return
        import builtins
        import errno
        import io

        folder = os.path.abspath(self.trainer.cfg.train.output_dir)
        if self.how == "fill":
            with open(os.path.join(folder, "filler"), "wb", buffering=0) as f:
                for size in (1 << 16, 1 << 12, 1):
                    try:
                        while True:
                            f.write(b"x" * size)
                    except OSError:
                        pass
            return
        real_open = io.open

        def full(file, mode="r", *args, **kwargs):
            name = os.readlink(f"/proc/self/fd/{file}") if isinstance(file, int) else os.path.abspath(os.fsdecode(file))
            if any(c in mode for c in "wax+") and name.startswith(folder):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), name)
            return real_open(file, mode, *args, **kwargs)

        builtins.open = io.open = full


def train_until_the_disk_fills(tmp_path, out, *overrides: str) -> subprocess.CompletedProcess:
    env = cli_env()
    env["PYTHONPATH"] += os.pathsep + os.path.dirname(os.path.abspath(__file__))
    env["CUDA_VISIBLE_DEVICES"] = ""
    config = tmp_path / "full.py"
    config.write_text(
        f"import sys\nsys.path.insert(0, {str(TOY / 'configs')!r})\n"
        "from toy import *\nfrom lazytrain.config import L\nfrom test_checkpoint import DiskFullAt\n"
        "hooks = [L(DiskFullAt)(iteration=2)]\n"
    )
    return subprocess.run(
        [sys.executable, "-m", "lazytrain.cli", "train", str(config), "train.max_iter=30", "train.log_period=2",
         "train.eval_period=0", f"--output-dir={out}", *overrides],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip


def assert_one_paragraph(r: subprocess.CompletedProcess) -> str:
    """The run ends in one error paragraph about the disk: no traceback (of the training thread, tensorboard's
    writer thread or logging), not called an error of user code."""
    assert r.returncode == 1, r.stderr
    for noise in ("Traceback", "Exception in thread", "Logging error", "raised OSError"):
        assert noise not in r.stderr, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot write ") and ": [Errno 28] No space left on device (ENOSPC); " in last
    return last


def test_a_disk_that_fills_during_the_run_ends_in_one_paragraph(tmp_path):
    out = tmp_path / "out"
    last = assert_one_paragraph(train_until_the_disk_fills(tmp_path, out, "train.checkpoint_period=100"))
    assert last.startswith(f"error: cannot write {out / 'events.out.tfevents.'}")  # tensorboard's write failed
    assert "No checkpoint was written yet: free some space" in last and "intact" not in last


def test_a_checkpoint_on_a_disk_that_filled_names_the_last_one_that_is_intact(tmp_path):
    out = tmp_path / "out"
    last = assert_one_paragraph(train_until_the_disk_fills(tmp_path, out, "train.checkpoint_period=2"))
    checkpoints = out / "checkpoints"
    assert last.startswith(f"error: cannot write {checkpoints / 'model_0000004.pth'}: ")
    assert f"The last checkpoint, {checkpoints / 'model_0000002.pth'}, and last_checkpoint are intact" in last
    assert not list(checkpoints.glob(".tmp-*"))


def test_a_real_disk_that_fills_during_the_run_ends_in_one_paragraph(tmp_path, tiny_filesystem):
    # a row per iteration: metrics.jsonl, TensorBoard's file and log.txt soon need a page the disk has not
    r = train_until_the_disk_fills(tmp_path, tiny_filesystem / "out", "hooks.0.how=fill", "train.max_iter=300",
                                   "train.log_period=1")  # fmt: skip
    last = assert_one_paragraph(r)
    assert f"cannot write {tiny_filesystem / 'out'}" in last and " has 0 kB free" in last


def test_log_txt_on_a_full_disk_is_one_line_once_not_a_traceback_per_record(tmp_path, capfd):
    import errno

    from lazytrain.engine.logger import setup_logger

    class Full:
        def write(self, text):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def flush(self):
            pass

    logger = setup_logger(str(tmp_path), name="lazytrain.test_full_log")
    file_handler = next(h for h in logger.handlers if hasattr(h, "baseFilename"))
    file_handler.stream = Full()
    logger.info("one")
    logger.info("two")
    err = capfd.readouterr().err
    assert err.count("lazytrain: cannot write") == 1 and "Traceback" not in err and "Logging error" not in err
    assert f"cannot write {tmp_path / 'log.txt'}: [Errno 28] No space left on device (ENOSPC); " in err
    assert err.rstrip().endswith("the log goes on in the terminal only.")
    import logging

    ours = list(logger.handlers)
    for log in (logger, logging.getLogger("fvcore")):
        for handler in ours:
            log.removeHandler(handler)


def crashed_run(toy_config, *overrides):
    """A run of the toy config that crashes in iteration 13, after its metrics (checkpoints after 5 and 10
    iterations, metrics every iteration)."""
    cfg = toy_config("train.max_iter=20", "train.checkpoint_period=5", "train.log_period=1", *overrides)
    cfg.hooks.append(L(CrashAt)(iteration=12))
    with pytest.raises(KeyboardInterrupt):
        train_main(cfg)


def test_resume_falls_back_to_the_newest_intact_checkpoint_when_the_last_is_truncated(toy_config, tmp_path):
    crashed_run(toy_config)
    folder = tmp_path / "out" / "checkpoints"
    last = folder / "model_0000010.pth"
    last.write_bytes(last.read_bytes()[:1000])  # truncated, as by a full disk or a crash of the file system
    train_main(toy_config("train.max_iter=20", "train.checkpoint_period=5", "train.log_period=1"), resume=True)
    log = (tmp_path / "out" / "log.txt").read_text()
    assert "model_0000010.pth cannot be read" in log
    assert f"resuming from the newest intact checkpoint, {folder / 'model_0000005.pth'}" in log
    assert f"Resumed from {folder / 'model_0000005.pth'} at iteration 5; training continues with iteration 6." in log


def test_resume_when_last_checkpoint_names_a_missing_file(toy_config, tmp_path):
    crashed_run(toy_config)
    (tmp_path / "out" / "checkpoints" / "model_0000010.pth").unlink()
    train_main(toy_config("train.max_iter=20", "train.checkpoint_period=5", "train.log_period=1"), resume=True)
    log = (tmp_path / "out" / "log.txt").read_text()
    assert "model_0000010.pth does not exist" in log and "model_0000005.pth at iteration 5;" in log


def test_a_resumed_history_holds_each_iteration_once_in_metrics_and_tensorboard(toy_config, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    crashed_run(toy_config)
    rows_before = read_metrics(tmp_path / "out" / "metrics.jsonl")
    assert max(r["iteration"] for r in rows_before if "total_loss" in r) == 13  # 11..13 are lost with the crash
    assert "Trained 13 iterations in " in (tmp_path / "out" / "log.txt").read_text()  # the 13th finished its step
    train_main(toy_config("train.max_iter=20", "train.checkpoint_period=5", "train.log_period=1"), resume=True)
    log = (tmp_path / "out" / "log.txt").read_text()
    assert "metrics.jsonl: removed 3 rows of iterations after 10, which this resumed run replaces." in log
    rows = [r for r in read_metrics(tmp_path / "out" / "metrics.jsonl") if "total_loss" in r]
    assert [r["iteration"] for r in rows] == list(range(1, 21))
    acc = EventAccumulator(str(tmp_path / "out"))
    acc.Reload()
    events = acc.Scalars("train/total_loss")
    assert [e.step for e in events] == list(range(1, 21))  # iteration 10's value (before the START) is kept
    assert [e.value for e in events] == pytest.approx([r["total_loss"] for r in rows])


def test_a_checkpoint_named_the_old_way_resumes_after_the_iterations_it_holds(toy_config, tmp_path):
    """Checkpoints store ``iteration`` as the 0-based index of their last iteration, as they always have: one
    written when files were named by that index (model_0000009.pth after 10 iterations) resumes with
    iteration 11, and metrics.jsonl continues without a gap or a repeat."""
    from lazytrain.checkpoint import read_checkpoint

    train_main(toy_config("train.max_iter=10", "train.log_period=5", "train.eval_period=0"))
    folder = tmp_path / "out" / "checkpoints"
    assert read_checkpoint(str(folder / "model_final.pth"))["iteration"] == 9
    os.rename(folder / "model_final.pth", folder / "model_0000009.pth")
    (folder / "last_checkpoint").write_text("model_0000009.pth")
    train_main(toy_config("train.max_iter=12", "train.log_period=1", "train.eval_period=0"), resume=True)
    log = (tmp_path / "out" / "log.txt").read_text()
    assert f"Resumed from {folder / 'model_0000009.pth'} at iteration 10; training continues with iteration 11." in log
    assert "Starting training from iteration 10 to 12" in log
    rows = read_metrics(tmp_path / "out" / "metrics.jsonl")
    assert [r["iteration"] for r in rows if "total_loss" in r] == [5, 10, 11, 12]


def test_resume_with_other_model_shapes_names_the_config_keys_and_weights(toy_config):
    from lazytrain.config import ConfigError

    crashed_run(toy_config)
    with pytest.raises(ConfigError) as info:
        train_main(toy_config("train.max_iter=20", "train.checkpoint_period=5", "model.hidden=64"), resume=True)
    message = str(info.value)
    assert message.startswith("--resume: the config changed model.hidden (32 -> 64) since ")
    assert "the checkpoint's weights do not fit the model: net.0.weight: (32, 8) in the checkpoint, (64, 8) in the " \
        "model" in message  # fmt: skip
    assert "train.init_checkpoint" in message


def test_resume_with_allowed_changes_warns_what_changed_and_what_it_means(toy_config, tmp_path):
    crashed_run(toy_config)
    train_main(
        toy_config("train.max_iter=24", "train.checkpoint_period=5", "train.log_period=2", "optimizer.lr=0.5"),
        resume=True,
    )
    log = (tmp_path / "out" / "log.txt").read_text()
    assert "--resume: the config changed since the checkpoint was written:" in log
    assert "train.max_iter: 20 -> 24" in log and "train.log_period: 1 -> 2" in log and "optimizer.lr: 0.1 -> 0.5" in log
    assert "optimizer: the optimizer's state comes from the checkpoint" in log
    assert "train.max_iter: the LR schedule follows the fraction of training done" in log


def test_resume_of_a_checkpoint_past_max_iter_is_one_paragraph(toy_config, tmp_path):
    """A checkpoint after 10 iterations and train.max_iter=8: no step would run, and model_final.pth would
    carry iteration 10's weights stamped 8."""
    from lazytrain.config import ConfigError

    crashed_run(toy_config)
    with pytest.raises(ConfigError) as info:
        train_main(toy_config("train.max_iter=8", "train.checkpoint_period=5", "train.log_period=1"), resume=True)
    path = tmp_path / "out" / "checkpoints" / "model_0000010.pth"
    assert str(info.value) == (
        f"--resume: the checkpoint {path} is at iteration 10, past train.max_iter=8. Raise "
        "train.max_iter to continue, or start a new run (another --output-dir, or --overwrite instead of --resume)."
    )
    assert not (tmp_path / "out" / "checkpoints" / "model_final.pth").exists()


def test_resume_with_another_number_of_processes_says_the_global_batch_size_changed(monkeypatch, toy_config):
    import logging

    from lazytrain import comm
    from lazytrain.config import LazyConfig
    from lazytrain.engine import resume
    from lazytrain.rng import get_rng_state

    cfg = toy_config()
    extra = {"rng_states": [get_rng_state()], "config": LazyConfig.to_yaml(cfg, resolve=True)}  # one process
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())  # type: ignore[method-assign]
    resume.logger.addHandler(handler)
    try:
        resume._restore_rng(extra, cfg)
    finally:
        resume.logger.removeHandler(handler)
    assert messages[0].startswith(
        "the checkpoint was written by 1 process, this run has 2: the global batch size changes from 32 to 64 "
        "samples per optimizer step (dataloader.train.batch_size=32 per process x train.grad_accum=1 x 2 processes)"
    )
    assert "RNG states are not restored" in messages[0]
