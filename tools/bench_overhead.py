"""Framework overhead: the same model, data, optimizer and iterations run as a hand-written PyTorch loop,
through lazytrain's Trainer with its default hooks (terminal / JSON / TensorBoard writers every 20
iterations, checkpoints at the default period), and through Lightning's Trainer (where installed, at its
defaults) -- interleaved and repeated in one process. Prints the median step time of each and the ratios.

    python tools/bench_overhead.py                      # tiny MLP and RangeNet on the CPU (and CUDA cases if any)
    python tools/bench_overhead.py --case tiny --repeats 7 --iters 600
    python tools/bench_overhead.py --case ddp               # 2 processes: hand-written DDP loop vs lazytrain
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from lazytrain.config import LazyCall as L
from lazytrain.data import build_train_loader
from lazytrain.engine import HookBase
from lazytrain.engine.defaults import add_train_defaults, build_trainer, prepare_output_dir
from lazytrain.lidar import RangeNet


class TinyMLP(nn.Module):
    def __init__(self, features: int = 32, classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, 64), nn.ReLU(), nn.Linear(64, classes))

    def forward(self, batch: dict[str, torch.Tensor]) -> Any:
        logits = self.net(batch["x"])
        return {"loss": nn.functional.cross_entropy(logits, batch["y"])} if self.training else logits


class InMemory(Dataset):
    """Pre-made samples, so every runner measures the same data cost."""

    def __init__(self, make: Callable[[int], dict[str, torch.Tensor]], size: int) -> None:
        self.samples = [make(i) for i in range(size)]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.samples[i]


def tiny_case() -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)

    def make(i: int) -> dict[str, torch.Tensor]:
        return {"x": torch.randn(32, generator=g), "y": torch.randint(10, (), generator=g)}

    return dict(name="tiny MLP", model=lambda: TinyMLP(), dataset=InMemory(make, 4096), batch_size=64,
                optimizer=lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9),
                seeded_variant=True)  # fmt: skip


def rangenet_case() -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)

    def make(i: int) -> dict[str, torch.Tensor]:
        return {"image": torch.randn(5, 64, 512, generator=g), "label_image": torch.randint(20, (64, 512), generator=g)}

    return dict(name="RangeNet 64x512", model=lambda: RangeNet(num_classes=20, width=16, depth=3),
                dataset=InMemory(make, 32), batch_size=2,
                optimizer=lambda params: torch.optim.AdamW(params, lr=1e-3))  # fmt: skip


def median_step(stamps: list[float], warmup: int) -> tuple[float, float]:
    """(median, mean) of the time between consecutive step ends, after ``warmup`` steps."""
    diffs = [b - a for a, b in zip(stamps[warmup:], stamps[warmup + 1 :])]
    return statistics.median(diffs), sum(diffs) / len(diffs)


def run_hand_written(case: dict[str, Any], iters: int, device: torch.device, amp: bool) -> list[float]:
    torch.manual_seed(0)
    model = case["model"]().to(device).train()
    opt = case["optimizer"](model.parameters())
    loader = DataLoader(case["dataset"], batch_size=case["batch_size"], shuffle=True, drop_last=True,
                        pin_memory=device.type == "cuda")  # fmt: skip
    stamps, it = [], iter(loader)
    for _ in range(iters):
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = sum(model(batch).values())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        stamps.append(time.perf_counter())
    if device.type == "cuda":
        torch.cuda.synchronize()
    return stamps


class _StepClock(HookBase):
    def __init__(self) -> None:
        self.stamps: list[float] = []

    def after_step(self) -> None:
        self.stamps.append(time.perf_counter())


def lazytrain_config(case: dict[str, Any], iters: int, device: torch.device, amp: bool, out: str,
                     seed_batches: bool | None = None) -> Any:  # fmt: skip
    cfg = OmegaConf.create({}, flags={"allow_objects": True})  # what LazyConfig.load returns
    cfg.model = L(case["model"])()
    cfg.optimizer = L(case["optimizer"])()
    dataset = L(lambda: case["dataset"])()  # the same samples, without pickling them into config.yaml's side file
    cfg.dataloader = dict(
        train=L(build_train_loader)(dataset=dataset, batch_size=case["batch_size"], seed_batches=seed_batches)
    )
    cfg.train = dict(max_iter=iters, output_dir=out, device=device.type, amp=dict(enabled=amp, dtype="bf16"))
    add_train_defaults(cfg)
    return cfg


def train_with_clock(cfg: Any) -> list[float]:
    """lazytrain's own path: output dir, logger, trainer with the default hooks; plus a clock hook."""
    with _quiet_stdout():
        prepare_output_dir(cfg)
    for handler in logging.getLogger("lazytrain").handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setStream(open(os.devnull, "w"))  # noqa: SIM115 - formatted like a real run, not shown
    torch.manual_seed(0)
    trainer = build_trainer(cfg)
    clock = _StepClock()
    trainer.register_hooks([clock])
    trainer.train(0, cfg.train.max_iter)
    return clock.stamps


def run_lazytrain(
    case: dict[str, Any], iters: int, device: torch.device, amp: bool, out: str, seed_batches: bool | None = None
) -> list[float]:
    return train_with_clock(lazytrain_config(case, iters, device, amp, out, seed_batches))


def _ddp_device(rank: int) -> torch.device:
    return torch.device("cuda", rank) if torch.cuda.device_count() >= 2 else torch.device("cpu")


def _hand_ddp_loop(rank: int, iters: int) -> list[float]:
    """A hand-written DDP loop: DistributedSampler, DDP model, forward, backward, step."""
    from torch.utils.data.distributed import DistributedSampler

    device = _ddp_device(rank)
    case = tiny_case()
    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(case["model"]().to(device),
                                                device_ids=[rank] if device.type == "cuda" else None)  # fmt: skip
    opt = case["optimizer"](model.parameters())
    sampler = DistributedSampler(case["dataset"], shuffle=True)
    loader = DataLoader(case["dataset"], batch_size=case["batch_size"], sampler=sampler, drop_last=True,
                        pin_memory=device.type == "cuda")  # fmt: skip
    stamps, epoch, it = [], 0, iter(loader)
    for _ in range(iters):
        try:
            batch = next(it)
        except StopIteration:
            epoch += 1
            sampler.set_epoch(epoch)
            it = iter(loader)
            batch = next(it)
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        loss = sum(model(batch).values())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        stamps.append(time.perf_counter())
    if device.type == "cuda":
        torch.cuda.synchronize()
    return stamps


def _ddp_pair_worker(rank: int, url: str, iters: int, repeats: int, threads: int, out: str) -> None:
    """Both runners in the same two processes, one after the other in each repeat: pairs taken seconds apart
    on the same process group, so process start-up and placement do not enter the comparison."""
    import torch.distributed as dist

    torch.set_num_threads(threads)
    os.environ["LOCAL_RANK"] = str(rank)  # what lazytrain's launcher and torchrun set
    device = _ddp_device(rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method=url, rank=rank, world_size=2)
    warnings.filterwarnings("ignore")
    runs: list[dict[str, list[float]]] = []
    for repeat in range(repeats):
        pair = {}
        dist.barrier()
        pair["hand-written"] = _hand_ddp_loop(rank, iters)
        dist.barrier()
        cfg = lazytrain_config(tiny_case(), iters, device, False, os.path.join(out, f"lazytrain{repeat}"))
        pair["lazytrain"] = train_with_clock(cfg)
        runs.append(pair)
    if rank == 0:
        with open(os.path.join(out, "runs.json"), "w") as f:
            json.dump(runs, f)
    dist.destroy_process_group()


def run_ddp_pairs(iters: int, repeats: int) -> list[dict[str, list[float]]]:
    """Spawn the two processes once (plain torch.multiprocessing + init_process_group) and return rank 0's
    step stamps of each runner per repeat."""
    import torch.multiprocessing as mp

    from lazytrain.launch import _free_port

    with tempfile.TemporaryDirectory() as out:
        url = f"tcp://127.0.0.1:{_free_port()}"
        mp.spawn(_ddp_pair_worker, args=(url, iters, repeats, torch.get_num_threads(), out), nprocs=2)
        with open(os.path.join(out, "runs.json")) as f:
            return json.load(f)


def run_lightning(case: dict[str, Any], iters: int, device: torch.device, amp: bool, out: str) -> list[float] | None:
    try:
        import lightning as lt
    except ImportError:
        return None

    class Module(lt.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = case["model"]()

        def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
            loss = sum(self.model(batch).values())
            self.log("loss", loss)
            return loss

        def configure_optimizers(self) -> Any:
            return case["optimizer"](self.parameters())

    class Clock(lt.Callback):
        def __init__(self) -> None:
            self.stamps: list[float] = []

        def on_train_batch_end(self, *args: Any) -> None:
            self.stamps.append(time.perf_counter())

    torch.manual_seed(0)
    clock = Clock()
    loader = DataLoader(case["dataset"], batch_size=case["batch_size"], shuffle=True, drop_last=True,
                        pin_memory=device.type == "cuda")  # fmt: skip
    trainer = lt.Trainer(max_steps=iters, accelerator=device.type, devices=1, default_root_dir=out,
                         callbacks=[clock], precision="bf16-mixed" if amp else "32-true",
                         enable_model_summary=False)  # fmt: skip
    with _quiet_stdout(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Module(), loader)
    return clock.stamps


@contextlib.contextmanager
def _quiet_stdout() -> Any:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def bench(case: dict[str, Any], iters: int, repeats: int, device: torch.device, amp: bool) -> dict[str, Any]:
    """Per runner: the median over repeats of each run's median step, and the ratio to the hand-written loop
    (median, min and max over repeats: runs are paired within a repeat, which cancels slow drifts)."""
    warmup = max(5, iters // 10)
    if case.get("ddp"):
        runs = run_ddp_pairs(iters, repeats)
    else:
        runs = [run_each(case, iters, device, amp) for _ in range(repeats)]
    steps: dict[str, list[float]] = {}
    ratios: dict[str, list[float]] = {}
    for run in runs:
        for name, stamps in run.items():
            steps.setdefault(name, []).append(median_step(stamps, warmup)[0])
            ratios.setdefault(name, []).append(steps[name][-1] / steps["hand-written"][-1])
    return {
        name: (statistics.median(steps[name]), statistics.median(ratios[name]), min(ratios[name]), max(ratios[name]))
        for name in steps
    }


def run_each(case: dict[str, Any], iters: int, device: torch.device, amp: bool) -> dict[str, list[float]]:
    """One repeat: every runner once, one after the other, in this process; their step stamps."""
    runners: dict[str, Callable[[str], list[float] | None]] = {
        "hand-written": lambda out: run_hand_written(case, iters, device, amp),
        "lazytrain": lambda out: run_lazytrain(case, iters, device, amp, out),
    }
    if case.get("seeded_variant"):
        runners["lazytrain*"] = lambda out: run_lazytrain(case, iters, device, amp, out, seed_batches=True)
    runners["lightning"] = lambda out: run_lightning(case, iters, device, amp, out)
    run: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as out:
        for name, runner in runners.items():
            stamps = runner(os.path.join(out, name))
            if stamps is not None:
                run[name] = stamps
    return run


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=["tiny", "rangenet", "ddp", "all"], default="all")
    parser.add_argument("--iters", type=int, default=0, help="iterations per run (default: per case)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    elif args.case == "ddp" and not torch.cuda.device_count() >= 2:
        torch.set_num_threads(1)  # two CPU processes on this machine's cores: one thread each
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)

    plans = []
    if args.case in ("tiny", "all"):
        plans.append((tiny_case(), args.iters or 400, torch.device("cpu"), False))
    if args.case in ("rangenet", "all"):
        plans.append((rangenet_case(), args.iters or 40, torch.device("cpu"), False))
        if torch.cuda.is_available():
            plans.append((rangenet_case(), args.iters or 200, torch.device("cuda"), True))
    if args.case in ("ddp", "all"):
        # two processes: NCCL on two GPUs when there are two, else gloo on the CPU
        ddp = dict(tiny_case(), name="tiny MLP, 2-process DDP", ddp=True, seeded_variant=False)
        plans.append((ddp, args.iters or 400, _ddp_device(0), False))
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    print(f"# {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}{gpu}")
    for case, iters, device, amp in plans:
        summary = bench(case, iters, args.repeats, device, amp)
        label = f"{case['name']} on {device.type}{' bf16' if amp else ''}, {iters} it x {args.repeats} repeats"
        print(f"\n{label}")
        print(f"  {'runner':<14}{'median step':>14}{'ratio':>9}{'min..max':>16}")
        for name, (step, ratio, low, high) in summary.items():
            print(f"  {name:<14}{step * 1e3:>11.3f} ms{ratio:>9.3f}{low:>9.3f}..{high:.3f}")
        if "lazytrain*" in summary:
            print("  (lazytrain*: build_train_loader(seed_batches=True): RNGs seeded per batch in this process too)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
