"""A SIGTERM to the whole process group with DataLoader workers (Kubernetes, `timeout`) checkpoints and exits
75; workers that leave stop signals to the trainer still end with their loader, and a dataset's error in a
worker still surfaces."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys

import pytest
from conftest import TOY
from test_preemption import env_with_tests

from lazytrain.data import TrainLoader
from lazytrain.engine import EXIT_PREEMPTED


def sigterm_the_process_group(tmp_path, out) -> tuple[int, str]:
    """`setsid lazytrain train CFG dataloader.train.num_workers=2 & ...; kill -TERM -$!` once 3 iterations are
    done; returns (exit code, stderr)."""
    cfg = tmp_path / "slow.py"
    cfg.write_text(
        f"import sys\nsys.path.insert(0, {str(TOY / 'configs')!r})\n"
        "from toy import *\nfrom lazytrain.config import L\nfrom test_preemption import AnnounceSteps\n"
        "hooks = [L(AnnounceSteps)()]\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "lazytrain.cli", "train", str(cfg), "train.max_iter=200", "train.eval_period=0",
         "train.checkpoint_period=1000", "dataloader.train.num_workers=2", f"--output-dir={out}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_with_tests(), start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == "finished 3":
            os.killpg(proc.pid, signal.SIGTERM)  # the process group: the trainer and its loader's workers
            break
    _, stderr = proc.communicate(timeout=120)
    return proc.returncode, stderr


def check_stopped_with_a_checkpoint(tmp_path, out) -> None:
    code, stderr = sigterm_the_process_group(tmp_path, out)
    assert code == EXIT_PREEMPTED, stderr
    assert "error: stopped by SIGTERM after iteration" in stderr and "Traceback" not in stderr
    assert "--- Logging error ---" not in stderr
    last = (out / "checkpoints" / "last_checkpoint").read_text()
    assert (out / "checkpoints" / last).is_file()


def test_sigterm_to_the_process_group_with_loader_workers_checkpoints_and_exits_75(tmp_path):
    check_stopped_with_a_checkpoint(tmp_path, tmp_path / "o")


@pytest.mark.slow
def test_sigterm_to_the_process_group_with_loader_workers_exits_75_five_times_in_a_row(tmp_path):
    for attempt in range(5):
        check_stopped_with_a_checkpoint(tmp_path, tmp_path / f"o{attempt}")


class RaisesAt5:
    def __len__(self) -> int:
        return 32

    def __getitem__(self, index: int) -> int:
        if index == 5:
            raise ValueError("sample 5 is corrupt")
        return index


def loader_children(earlier: set) -> list:
    """The child processes started since ``earlier`` (another test's may still be ending)."""
    return [p for p in multiprocessing.active_children() if p not in earlier]


def test_a_dataset_error_in_a_worker_surfaces_and_no_worker_outlives_the_loader():
    earlier = set(multiprocessing.active_children())
    loader = TrainLoader(RaisesAt5(), batch_size=2, num_workers=2, shuffle=False)
    batches = iter(loader)
    with pytest.raises(ValueError, match="sample 5 is corrupt"):
        for _ in range(20):
            next(batches)
    batches.close()  # type: ignore[attr-defined]
    assert loader_children(earlier) == []


def test_workers_leave_a_sigterm_to_the_trainer_and_end_with_their_loader():
    loader = TrainLoader(list(range(64)), batch_size=2, num_workers=2, shuffle=False)
    earlier = set(multiprocessing.active_children())
    batches = iter(loader)
    next(batches), next(batches)  # one batch from each worker: both have started
    workers = loader_children(earlier)
    assert len(workers) == 2
    for worker in workers:
        os.kill(worker.pid, signal.SIGTERM)  # what a SIGTERM to the process group does to them
    for _ in range(10):  # still loading, past the batches prefetched: the stop is the trainer's to decide
        next(batches)
    batches.close()  # type: ignore[attr-defined]
    assert loader_children(earlier) == []


def test_a_plain_dataloaders_workers_leave_a_sigterm_to_the_trainer(tmp_path):
    import torch

    from lazytrain.engine import HookBase, Trainer

    def users_init(worker_id: int) -> None:
        torch.manual_seed(worker_id)

    earlier = set(multiprocessing.active_children())

    class SigtermWorkers(HookBase):
        def after_step(self) -> None:
            if self.trainer.iter == 1:
                for worker in loader_children(earlier):
                    os.kill(worker.pid, signal.SIGTERM)

    data = [torch.randn(4) for _ in range(64)]
    loader = torch.utils.data.DataLoader(data, batch_size=2, num_workers=2, worker_init_fn=users_init)

    class Loss(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(4, 1)

        def forward(self, batch):
            return self.linear(batch).pow(2).mean()

    net = Loss()
    trainer = Trainer(net, loader, torch.optim.SGD(net.parameters(), lr=0.01))
    trainer.register_hooks([SigtermWorkers()])
    trainer.train(0, 20)  # the workers live on through the signal; the loader ends them at the end
    assert trainer.completed and loader_children(earlier) == []
    assert loader.worker_init_fn.then is users_init  # type: ignore[union-attr]


def test_a_process_whose_loader_was_never_shut_down_still_exits():
    # workers ignore SIGTERM: multiprocessing's exit handler SIGTERMs daemonic children and waits for them
    script = (
        "from lazytrain.data import TrainLoader\n"
        "batches = iter(TrainLoader(list(range(64)), batch_size=2, num_workers=2, shuffle=False))\n"
        "next(batches)\n"
        "import builtins; builtins.kept = batches  # never shut down, as when an error keeps it referenced\n"
        "print('exiting', flush=True)\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env_with_tests(), timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "exiting"
