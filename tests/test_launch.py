"""Several processes (gloo on the CPU): training, evaluation, failures that must never hang, torchrun."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TOY, cli_env
from torch.distributed.distributed_c10d import Backend, BackendConfig

from lazytrain.launch import cluster_environment, process_group_backend
from lazytrain.launch.cluster import first_slurm_host

TESTS = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def configs(tmp_path):
    """The toy config, and one that adds a failure hook, in a temp config folder."""
    folder = tmp_path / "configs"
    folder.mkdir()
    shutil.copy(TOY / "configs" / "toy.py", folder / "toy.py")
    (folder / "fail.py").write_text(
        "from .toy import *\nfrom lazytrain.config import L\nfrom dist_helpers import FailAt\n"
        "hooks = [L(FailAt)(iteration=3, rank=1)]\n"
    )
    return folder


def lazytrain(*args, env=None, timeout=120, gpus=False):
    """Run the CLI; processes use gloo on the CPU unless ``gpus`` (a GPU machine would otherwise get NCCL and
    one process per GPU)."""
    env = env or cpu_env()
    if gpus:
        env.pop("CUDA_VISIBLE_DEVICES", None)
    start = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "lazytrain.cli", *map(str, args)], capture_output=True, text=True,
                       env=env, timeout=timeout)  # fmt: skip
    r.seconds = time.monotonic() - start
    return r


def cpu_env():
    env = cli_env()
    env["PYTHONPATH"] += os.pathsep + TESTS
    env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def metrics(out):
    with open(out / "metrics.jsonl") as f:
        return [json.loads(line) for line in f]


def test_two_processes_train_and_the_checkpoint_evaluates_the_same_in_one_and_two(tmp_path, configs):
    out = tmp_path / "run"
    r = lazytrain("train", configs / "toy.py", "--num-procs", 2, "train.max_iter=30", f"--output-dir={out}")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("Starting training") == 1  # rank 0 logs; rank 1 only warns
    assert "Process group: 2 processes, backend gloo." in r.stdout
    weights = out / "checkpoints" / "model_final.pth"
    results = {}
    for procs in (1, 2):
        r = lazytrain("eval", configs / "toy.py", "--weights", weights, "--num-procs", procs,
                      f"--output-dir={tmp_path / f'eval{procs}'}")  # fmt: skip
        assert r.returncode == 0, r.stderr
        results[procs] = metrics(tmp_path / f"eval{procs}" / "eval")[-1]
    assert results[1]["num_samples"] == results[2]["num_samples"] == 256  # each test sample exactly once
    assert results[1]["accuracy"] == results[2]["accuracy"]


def test_logged_losses_are_the_mean_over_ranks(tmp_path, configs):
    (configs / "rank.py").write_text(
        "from .toy import *\nfrom lazytrain.config import L\nfrom dist_helpers import RankLoss\n"
        "model = L(RankLoss)()\nevaluator = None\nhooks = []\n"
    )
    out = tmp_path / "run"
    r = lazytrain("train", configs / "rank.py", "--num-procs", 2, "train.max_iter=6", "train.log_period=3",
                  f"--output-dir={out}")  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = [row for row in metrics(out) if "loss_rank" in row]
    assert [row["iteration"] for row in rows] == [3, 6]  # one row per log period
    assert {row["loss_rank"] for row in rows} == {0.5}  # ranks 0 and 1
    assert {row["loss_one"] for row in rows} == {1.0} and {row["total_loss"] for row in rows} == {1.5}


@pytest.mark.skipif(not torch.cuda.device_count() >= 2, reason="needs two CUDA GPUs")
def test_two_gpus_train_over_nccl_and_evaluate_like_one(tmp_path, configs):
    out = tmp_path / "run"
    r = lazytrain("train", configs / "toy.py", "--num-procs", 2, "train.max_iter=30", f"--output-dir={out}", gpus=True)
    assert r.returncode == 0, r.stderr
    assert "Process group: 2 processes, backend cuda:nccl,cpu:gloo." in r.stdout
    results = {}
    for procs in (1, 2):
        r = lazytrain("eval", configs / "toy.py", "--weights", out / "checkpoints" / "model_final.pth",
                      "--num-procs", procs, f"--output-dir={tmp_path / f'eval{procs}'}", gpus=True)  # fmt: skip
        assert r.returncode == 0, r.stderr
        results[procs] = metrics(tmp_path / f"eval{procs}" / "eval")[-1]
    assert results[1]["num_samples"] == results[2]["num_samples"] == 256
    assert results[1]["accuracy"] == results[2]["accuracy"]


# Time-to-exit is measured by tools/bench_exit.py and recorded in docs/benchmarks.md; the bound here only
# catches a hang (the process-group timeout is 1800 s), generous enough for a loaded 2-core CI machine.
EXIT_WITHOUT_HANG_S = 100


def test_on_gpus_the_process_group_has_a_cpu_backend_too():
    """The evaluators' counts, the stop vote and the logged values are CPU tensors: under NCCL alone their
    collectives fail ("No backend type associated with device type cpu"), so GPU runs get gloo for the CPU."""
    on_gpus = BackendConfig(Backend(process_group_backend(cuda=True))).get_device_backend_map()
    assert on_gpus == {"cuda": "nccl", "cpu": "gloo"}
    assert BackendConfig(Backend(process_group_backend(cuda=False))).get_device_backend_map()["cpu"] == "gloo"


def test_rank_that_raises_stops_every_rank_and_is_named(tmp_path, configs):
    r = lazytrain("train", configs / "fail.py", "--num-procs", 2, f"--output-dir={tmp_path / 'o'}")
    assert r.returncode == 1
    assert r.seconds < EXIT_WITHOUT_HANG_S
    # The user's frames are kept (the hook is user code), then one closing line names rank, iteration and hook.
    assert 'dist_helpers.py", line' in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: rank 1 failed: iteration 4: hook FailAt.after_step raised RuntimeError: ")
    assert "injected failure in iteration 4" in last
    # rank 0 was stopped by the launcher's SIGTERM: no preemption, so no promise of a checkpoint
    assert "with a checkpoint" not in r.stdout + r.stderr and "received SIGTERM" not in r.stdout + r.stderr


def test_rank_that_is_sigkilled_stops_every_rank(tmp_path, configs):
    r = lazytrain("train", configs / "fail.py", "--num-procs", 2, "hooks.0.how=kill", f"--output-dir={tmp_path / 'o'}")
    assert r.returncode == 1
    assert r.seconds < EXIT_WITHOUT_HANG_S
    assert "rank 1 was killed by signal SIGKILL" in r.stderr


def test_config_error_in_workers_keeps_exit_code_2(tmp_path, configs):
    r = lazytrain("train", configs / "toy.py", "--num-procs", 2, "model.hidden=-4", f"--output-dir={tmp_path / 'o'}")
    assert r.returncode == 2
    assert "failed: model: building" in r.stderr


def test_resume_in_two_processes_gives_identical_losses(tmp_path, configs):
    common = ["--num-procs", 2, "train.max_iter=12", "train.log_period=1", "train.checkpoint_period=6",
              "train.deterministic=True", "model.dropout=0.2"]  # fmt: skip
    assert lazytrain("train", configs / "toy.py", *common, f"--output-dir={tmp_path / 'full'}").returncode == 0
    crash = lazytrain("train", configs / "fail.py", *common, "hooks.0.iteration=7", "hooks.0.rank=null",
                      f"--output-dir={tmp_path / 'parts'}")  # fmt: skip
    assert crash.returncode == 1
    r = lazytrain("train", configs / "toy.py", *common, "--resume", f"--output-dir={tmp_path / 'parts'}")
    assert r.returncode == 0, r.stderr

    def losses(run):
        return {row["iteration"]: row["total_loss"] for row in metrics(tmp_path / run) if "total_loss" in row}

    a, b = losses("full"), losses("parts")
    assert sorted(a) == sorted(b) == list(range(1, 13))
    assert [a[i] for i in range(1, 13)] == [b[i] for i in range(1, 13)]


def test_torchrun_style_environment_is_joined(tmp_path, configs):
    from lazytrain.launch.cluster import free_port

    port = free_port()
    procs = []
    for rank in range(2):
        env = cpu_env()
        env.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port))  # fmt: skip
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "lazytrain.cli", "train", str(configs / "toy.py"), "train.max_iter=8",
             f"--output-dir={tmp_path / 'o'}"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))  # fmt: skip
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert "Starting training" in outs[0][0] and "Starting training" not in outs[1][0]
    assert (tmp_path / "o" / "checkpoints" / "model_final.pth").exists()


def test_cluster_environment_reads_torchrun_and_slurm_variables():
    assert cluster_environment({}) is None
    tr = cluster_environment({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "h0"})
    assert (tr["rank"], tr["world_size"], tr["local_rank"], tr["master_addr"]) == (3, 8, 1, "h0")
    slurm = cluster_environment({"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1",
                                 "SLURM_JOB_NODELIST": "gpu[03-04,07]", "SLURM_JOB_ID": "1234"})  # fmt: skip
    assert (slurm["rank"], slurm["world_size"], slurm["local_rank"]) == (5, 8, 1)
    assert slurm["master_addr"] == "gpu03" and slurm["master_port"] == 15000 + 1234
    assert cluster_environment({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) is None  # an interactive shell


def test_first_slurm_host_forms():
    assert first_slurm_host("node7") == "node7"
    assert first_slurm_host("a[1-3],b2") == "a1"
    assert first_slurm_host("gpu02,gpu05") == "gpu02"


def test_sigterm_to_the_launcher_stops_its_workers(tmp_path, configs):
    env = cpu_env()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lazytrain.cli", "train", str(configs / "toy.py"), "--num-procs", "2",
         "train.max_iter=100000", f"--output-dir={tmp_path / 'o'}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (tmp_path / "o" / "log.txt").exists():
        time.sleep(0.2)
    time.sleep(2)  # the workers are training now
    children = child_pids(proc.pid)
    proc.terminate()
    proc.communicate(timeout=30)
    assert proc.returncode != 0
    time.sleep(1)
    assert len(children) >= 2 and not [pid for pid in children if running(pid)]


def test_killing_the_launcher_leaves_no_process_of_the_job(tmp_path, configs):
    """SIGKILL of the launcher (the OOM killer, kill -9) while rank 1 hangs and rank 0 waits for it in a
    collective: both ranks, their DataLoader workers and the resource tracker go too."""
    (configs / "hang.py").write_text(
        "from .toy import *\nfrom lazytrain.config import L\nfrom dist_helpers import HangAt\n"
        "hooks = [L(HangAt)(iteration=3, rank=1)]\n"
    )
    output = tmp_path / "output.txt"
    with open(output, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lazytrain.cli", "train", str(configs / "hang.py"), "--num-procs", "2",
             "train.hang_timeout=0", "dataloader.train.num_workers=2", "train.max_iter=1000",
             f"--output-dir={tmp_path / 'o'}"],
            env=cpu_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    job: list[int] = []
    try:
        deadline = time.monotonic() + EXIT_WITHOUT_HANG_S
        while "rank 1 hangs at iteration 3" not in output.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, output.read_text()
            time.sleep(0.2)
        time.sleep(1)  # rank 0 is in the next step's collective now
        job = descendants(proc.pid)
        assert len(job) >= 2 + 4, output.read_text()  # 2 ranks, 2 DataLoader workers each (+ resource tracker)
        proc.kill()
        proc.wait()
        # the ranks notice within a second, their DataLoader workers within 5 s (torch's check of the parent);
        # the bound only catches processes left running for good
        deadline = time.monotonic() + EXIT_WITHOUT_HANG_S
        while [pid for pid in job if running(pid)] and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not [pid for pid in job if running(pid)], output.read_text()
        assert "the launcher (pid " in output.read_text() and ") is gone" in output.read_text()
    finally:
        proc.kill()
        for pid in job:
            if running(pid):
                os.kill(pid, signal.SIGKILL)


def descendants(parent: int) -> list[int]:
    """Every process below ``parent`` (children, grandchildren, ...), from /proc."""
    found, frontier = [], [parent]
    while frontier:
        children = [pid for p in frontier for pid in child_pids(p)]
        found += children
        frontier = children
    return found


def child_pids(parent: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:  # field 4: the parent pid
                pids.append(int(entry))
    return pids


def running(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return False


def test_a_killed_rank_is_named_even_when_its_peer_failed_in_the_same_instant(tmp_path):
    from lazytrain.launch.error_records import failure_from_records

    record = {"rank": 0, "time": 1.0, "message": "RuntimeError: gloo read error", "exit_code": 1, "traceback": ""}
    (tmp_path / "rank0.json").write_text(json.dumps(record))
    error = failure_from_records({0: 1, 1: -9}, 0, str(tmp_path))
    assert str(error).startswith("rank 1 was killed by signal SIGKILL")
    error = failure_from_records({0: 1}, 0, str(tmp_path))
    assert str(error).startswith("rank 0 failed: RuntimeError: gloo read error")


def test_more_processes_than_gpus_is_an_error_that_says_how_to_use_the_cpu(monkeypatch):
    from lazytrain.config import ConfigError
    from lazytrain.launch import launch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError) as info:
        launch(print, num_procs=2)
    assert "--num-procs 2 asks for one process per GPU, but this machine has 1 GPU." in str(info.value)
    assert "CUDA_VISIBLE_DEVICES=" in str(info.value)


def test_a_slurm_task_that_sees_one_gpu_trains_on_cuda_0_whatever_its_local_rank(monkeypatch):
    # srun --gpus-per-task=1: local rank 3 sees one GPU; cuda:3 was "invalid device ordinal"
    from lazytrain.engine.build import resolve_device
    from lazytrain.launch.cluster import set_device

    made_current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", made_current.append)
    monkeypatch.setenv("LOCAL_RANK", "0")
    set_device(3)
    assert made_current == [0]
    assert resolve_device("auto") == torch.device("cuda", 0)


@pytest.mark.parametrize("rendezvous", ["--standalone", "static"])
def test_torchrun_restarts_a_failed_attempt_which_resumes_and_finishes(tmp_path, configs, rendezvous):
    from lazytrain.checkpoint import read_checkpoint
    from lazytrain.launch.cluster import free_port

    # static (torchrun's default): one agent store for every attempt, on a fixed --master-port
    where = [rendezvous] if rendezvous != "static" else ["--master-port", str(free_port())]

    (configs / "once.py").write_text(
        "from .toy import *\nfrom lazytrain.config import L\nfrom dist_helpers import FailOnceAt\n"
        f"hooks = [L(FailOnceAt)(iteration=5, rank=1, marker={str(tmp_path / 'fired')!r})]\n"
    )
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", *where, "--nproc-per-node", "2", "--max-restarts",
         "1", "-m", "lazytrain.cli", "train", str(configs / "once.py"), "train.max_iter=12",
         "train.checkpoint_period=4", "train.eval_period=0", f"--output-dir={tmp_path / 'o'}", "--resume"],
        capture_output=True, text=True, env=cpu_env(), timeout=180,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "injected failure in iteration 6" in r.stdout + r.stderr  # the first attempt failed
    assert "Resumed from" in r.stdout and "at iteration 4; training continues with iteration 5." in r.stdout
    final = tmp_path / "o" / "checkpoints" / "model_final.pth"
    assert read_checkpoint(str(final))["iteration"] == 11  # the stored 0-based index of iteration 12


def test_a_resume_warning_is_printed_once_not_once_per_rank(tmp_path, configs):
    common = ["--num-procs", 2, "train.checkpoint_period=2", "train.eval_period=0", f"--output-dir={tmp_path / 'o'}"]
    assert lazytrain("train", configs / "toy.py", *common, "train.max_iter=2").returncode == 0
    r = lazytrain("train", configs / "toy.py", *common, "train.max_iter=4", "optimizer.lr=0.05", "--resume")
    assert r.returncode == 0, r.stderr
    assert (r.stdout + r.stderr).count("--resume: the config changed since the checkpoint was written") == 1


def test_a_hung_rank_with_loader_workers_ends_on_the_hang_message_without_cpp_or_semaphore_noise(tmp_path, configs):
    (configs / "hang.py").write_text(
        "from .toy import *\nfrom lazytrain.config import L\nfrom dist_helpers import HangAt\n"
        "hooks = [L(HangAt)(iteration=3, rank=1)]\n"
    )
    r = lazytrain("train", configs / "hang.py", "--num-procs", 2, "train.max_iter=20", "train.hang_timeout=3",
                  "dataloader.train.num_workers=2", f"--output-dir={tmp_path / 'o'}")  # fmt: skip
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith("error: rank 1 is stuck at iteration 4")
    assert "recvValue failed" not in r.stderr and "frame #" not in r.stderr  # TCPStore's C++ warning
    assert "leaked semaphore" not in r.stderr  # multiprocessing's resource tracker, after the closing line


def test_nccl_ranks_get_torchs_watchdog_and_flight_recorder_unless_the_user_chose(monkeypatch):
    from lazytrain.launch import cluster

    environ = {"TORCH_NCCL_TRACE_BUFFER_SIZE": "0"}  # the user's choice stays
    added = cluster.nccl_diagnostics(environ)
    assert environ == {
        "TORCH_NCCL_TRACE_BUFFER_SIZE": "0",
        "TORCH_NCCL_ASYNC_ERROR_HANDLING": "3",
        "TORCH_NCCL_DUMP_ON_TIMEOUT": "1",
    }
    assert set(added) == {"TORCH_NCCL_ASYNC_ERROR_HANDLING", "TORCH_NCCL_DUMP_ON_TIMEOUT"}
    # a GPU rank sets them before its process group exists (torch reads them when it creates the group)
    monkeypatch.setattr(cluster.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(cluster.torch.cuda, "set_device", lambda index: None)
    monkeypatch.setattr(cluster.torch.cuda, "device_count", lambda: 1)
    for key in cluster.NCCL_DIAGNOSTICS:  # set, then deleted: monkeypatch removes them again afterwards
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    monkeypatch.setenv("LOCAL_RANK", "0")
    cluster.set_device(0)
    assert all(os.environ[k] == v for k, v in cluster.NCCL_DIAGNOSTICS.items())
