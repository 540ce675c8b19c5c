"""Framework overhead: the same model, data, optimizer and iterations run as a hand-written PyTorch loop,
through lazytrain's Trainer with its default hooks (terminal / JSON / TensorBoard writers every 20
iterations, checkpoints at the default period), and through Lightning's Trainer (where installed, at its
defaults), repeated in one process run. Prints each trainer's step time, the hand-written loop's step time
measured beside it, and their ratio.

On the CPU the hand-written loop runs inside the other trainer's step callback, one of its steps after each of
the trainer's, so both see the same machine; on CUDA the runs go one after the other (see Interleave, Clock).

    python tools/bench_overhead.py                      # tiny MLP and RangeNet on the CPU (and CUDA cases if any)
    python tools/bench_overhead.py --case tiny --repeats 7 --iters 600
    python tools/bench_overhead.py --case ddp               # 2 processes: hand-written DDP loop vs lazytrain
    python tools/bench_overhead.py --case rangenet --compile  # torch.compile in both (train.compile in lazytrain)
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
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
from lazytrain.engine import HookBase, add_train_defaults, build_trainer, prepare_output_dir
from lazytrain.launch import process_group_backend
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


def ddp_case() -> dict[str, Any]:
    return dict(tiny_case(), name="tiny MLP, 2-process DDP", ddp=True, seeded_variant=False)


def rangenet_case() -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)

    def make(i: int) -> dict[str, torch.Tensor]:
        return {"image": torch.randn(5, 64, 512, generator=g), "label_image": torch.randint(20, (64, 512), generator=g)}

    return dict(name="RangeNet 64x512", model=lambda: RangeNet(num_classes=20, width=16, depth=3),
                dataset=InMemory(make, 32), batch_size=2,
                optimizer=lambda params: torch.optim.AdamW(params, lr=1e-3))  # fmt: skip


class HandLoop:
    """The hand-written loop, one step per call: DataLoader (a DistributedSampler under DDP), forward, backward,
    ``step``, ``zero_grad``."""

    def __init__(self, case: dict[str, Any], device: torch.device, amp: bool) -> None:
        torch.manual_seed(0)
        self.device, self.amp = device, amp
        model = case["model"]().to(device).train()
        self.sampler: Any = None
        if torch.distributed.is_initialized():
            from torch.utils.data.distributed import DistributedSampler

            ids = [device.index] if device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
            self.sampler = DistributedSampler(case["dataset"], shuffle=True)
        self.model = torch.compile(model) if case.get("compile") else model
        self.opt = case["optimizer"](model.parameters())
        self.loader = DataLoader(case["dataset"], batch_size=case["batch_size"], shuffle=self.sampler is None,
                                 sampler=self.sampler, drop_last=True, pin_memory=device.type == "cuda")  # fmt: skip
        self.epoch, self.batches = 0, iter(self.loader)

    def step(self) -> None:
        try:
            batch = next(self.batches)
        except StopIteration:
            self.epoch += 1
            if self.sampler is not None:
                self.sampler.set_epoch(self.epoch)
            self.batches = iter(self.loader)
            batch = next(self.batches)
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            loss = sum(self.model(batch).values())
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


def run_hand_written(case: dict[str, Any], iters: int, device: torch.device, amp: bool, on_step: Callable) -> None:
    loop = HandLoop(case, device, amp)
    for _ in range(iters):
        loop.step()
        on_step()


class Interleave:
    """Called at the end of each step of a trainer (its last hook, or a Lightning callback): times that step
    (from the end of the previous call), then runs and times one step of a hand-written loop. The two loops
    alternate step by step, so a slower spell of the machine (this VM has them, lasting seconds) slows both.
    The ratio is of mean step times over the window, so periodic work (log writes) counts in full."""

    def __init__(self, hand: HandLoop, warmup: int) -> None:
        self.hand, self.warmup = hand, warmup
        self.mark: float | None = None
        self.trainer_steps: list[float] = []
        self.hand_steps: list[float] = []

    def __call__(self) -> None:
        now = time.perf_counter()
        if self.mark is not None:
            self.trainer_steps.append(now - self.mark)
        self.hand.step()
        self.mark = time.perf_counter()
        self.hand_steps.append(self.mark - now)

    def step_times(self) -> tuple[float, float]:
        """(trainer, hand-written) mean step over the window: after the warm-up, and before the trainer's
        last step, which writes its final checkpoint."""
        trainer = self.trainer_steps[self.warmup : -1]
        hand = self.hand_steps[self.warmup : -1]
        return statistics.fmean(trainer), statistics.fmean(hand)


class Clock:
    """For CUDA, where steps cannot be interleaved without syncing each one: stamps each step's end, waits for
    the GPU at both ends of the window (after the warm-up; before the last step), and gives the window's mean
    step. Runners run one after the other in each repeat."""

    def __init__(self, warmup: int, iters: int) -> None:
        self.first, self.last = warmup, iters - 2
        self.stamps: list[float] = []

    def __call__(self) -> None:
        if len(self.stamps) in (self.first, self.last):
            torch.cuda.synchronize()
        self.stamps.append(time.perf_counter())

    def step_time(self) -> float:
        return (self.stamps[self.last] - self.stamps[self.first]) / (self.last - self.first)


class _OnStep(HookBase):
    def __init__(self, on_step: Callable[[], None]) -> None:
        self.on_step = on_step

    def after_step(self) -> None:
        self.on_step()


def lazytrain_config(case: dict[str, Any], iters: int, device: torch.device, amp: bool, out: str,
                     seed_batches: bool | None = None) -> Any:  # fmt: skip
    cfg = OmegaConf.create({}, flags={"allow_objects": True})  # what LazyConfig.load returns
    cfg.model = L(case["model"])()
    cfg.optimizer = L(case["optimizer"])()
    dataset = L(lambda: case["dataset"])()  # the same samples, without pickling them into config.yaml's side file
    cfg.dataloader = dict(
        train=L(build_train_loader)(dataset=dataset, batch_size=case["batch_size"], seed_batches=seed_batches)
    )
    cfg.train = dict(max_iter=iters, output_dir=out, device=str(device), amp=dict(enabled=amp, dtype="bf16"),
                     compile=dict(enabled=bool(case.get("compile"))))  # fmt: skip
    add_train_defaults(cfg)
    return cfg


def run_lazytrain(case: dict[str, Any], iters: int, device: torch.device, amp: bool, on_step: Callable[[], None],
                  out: str, seed_batches: bool | None = None) -> None:  # fmt: skip
    """lazytrain's own path: output dir, logger, trainer with the default hooks, and ``on_step`` as the last
    hook (so a step's time includes every default hook's work)."""
    cfg = lazytrain_config(case, iters, device, amp, out, seed_batches)
    with _quiet_stdout():
        prepare_output_dir(cfg)
    for handler in logging.getLogger("lazytrain").handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setStream(open(os.devnull, "w"))  # noqa: SIM115 - formatted like a real run, not shown
    torch.manual_seed(0)
    trainer = build_trainer(cfg)
    trainer.register_hooks([_OnStep(on_step)])
    trainer.train(0, cfg.train.max_iter)


def lightning_installed() -> bool:
    return importlib.util.find_spec("lightning") is not None


def run_lightning(case: dict[str, Any], iters: int, device: torch.device, amp: bool, on_step: Callable[[], None],
                  out: str) -> None:  # fmt: skip
    import lightning as lt

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

    class OnStep(lt.Callback):
        def on_train_batch_end(self, *args: Any) -> None:
            on_step()

    torch.manual_seed(0)
    loader = DataLoader(case["dataset"], batch_size=case["batch_size"], shuffle=True, drop_last=True,
                        pin_memory=device.type == "cuda")  # fmt: skip
    trainer = lt.Trainer(max_steps=iters, accelerator=device.type, devices=1, default_root_dir=out,
                         callbacks=[OnStep()], precision="bf16-mixed" if amp else "32-true",
                         enable_model_summary=False)  # fmt: skip
    with _quiet_stdout(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Module(), loader)


@contextlib.contextmanager
def _quiet_stdout() -> Any:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


Runner = Callable[[Callable[[], None], str], None]  # (on_step, output dir)


def runners(case: dict[str, Any], iters: int, device: torch.device, amp: bool) -> dict[str, Runner]:
    """The trainers compared with the hand-written loop (Lightning: not in the DDP case), and the control."""
    out: dict[str, Runner] = {
        "lazytrain": lambda on_step, o: run_lazytrain(case, iters, device, amp, on_step, o),
    }
    if case.get("seeded_variant"):
        out["lazytrain*"] = lambda on_step, o: run_lazytrain(case, iters, device, amp, on_step, o, True)
    if lightning_installed() and not case.get("ddp") and not case.get("compile"):
        out["lightning"] = lambda on_step, o: run_lightning(case, iters, device, amp, on_step, o)
    # the control: the hand-written loop against itself shows what the pairing alone does to a ratio
    out["A/A"] = lambda on_step, o: run_hand_written(case, iters, device, amp, on_step)
    return out


def one_repeat(case: dict[str, Any], iters: int, device: torch.device, amp: bool) -> dict[str, tuple]:
    """``{trainer: (its step time, the step time of the hand-written loop it was paired with, the ratio of their
    peak CUDA memory or None on the CPU)}``."""
    warmup = max(5, iters // 10)
    result: dict[str, tuple] = {}
    with tempfile.TemporaryDirectory() as out:
        for name, run in runners(case, iters, device, amp).items():
            if device.type == "cuda":
                hand, trainer = Clock(warmup, iters), Clock(warmup, iters)
                torch.cuda.reset_peak_memory_stats()
                run_hand_written(case, iters, device, amp, hand)
                hand_peak = torch.cuda.max_memory_allocated()
                torch.cuda.reset_peak_memory_stats()
                run(trainer, os.path.join(out, name))
                result[name] = (trainer.step_time(), hand.step_time(), torch.cuda.max_memory_allocated() / hand_peak)
            else:
                interleave = Interleave(HandLoop(case, device, amp), warmup)
                run(interleave, os.path.join(out, name))
                result[name] = (*interleave.step_times(), None)
    return result


def _ddp_worker(rank: int, url: str, iters: int, repeats: int, threads: int, out: str) -> None:
    """One of two processes (plain torch.multiprocessing + init_process_group): lazytrain's trainer joins this
    process group as it joins torchrun's; the hand-written DDP loop runs in the same group."""
    import torch.distributed as dist

    torch.set_num_threads(threads)
    os.environ["LOCAL_RANK"] = str(rank)  # what lazytrain's launcher and torchrun set
    device = _ddp_device(rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(process_group_backend(device.type == "cuda"), init_method=url, rank=rank, world_size=2)
    warnings.filterwarnings("ignore")
    results = [one_repeat(ddp_case(), iters, device, False) for _ in range(repeats)]
    if rank == 0:
        with open(os.path.join(out, "results.json"), "w") as f:
            json.dump(results, f)
    dist.destroy_process_group()


def _ddp_device(rank: int) -> torch.device:
    return torch.device("cuda", rank) if torch.cuda.device_count() >= 2 else torch.device("cpu")


def ddp_repeats(iters: int, repeats: int) -> list[dict[str, tuple]]:
    import torch.multiprocessing as mp

    from lazytrain.launch.cluster import free_port

    with tempfile.TemporaryDirectory() as out:
        url = f"tcp://127.0.0.1:{free_port()}"
        mp.spawn(_ddp_worker, args=(url, iters, repeats, torch.get_num_threads(), out), nprocs=2)
        with open(os.path.join(out, "results.json")) as f:
            return json.load(f)


def bench(case: dict[str, Any], iters: int, repeats: int, device: torch.device, amp: bool) -> dict[str, Any]:
    """Per trainer: the medians over repeats of its step time, of the paired hand-written step time and of
    the ratio (with its min and max), and on CUDA the median ratio of peak memory."""
    if case.get("ddp"):
        results = ddp_repeats(iters, repeats)
    else:
        results = [one_repeat(case, iters, device, amp) for _ in range(repeats)]
    summary = {}
    for name in results[0]:
        runs = [r[name] for r in results]
        ratios = [trainer / hand for trainer, hand, _ in runs]
        memory = statistics.median(m for _, _, m in runs) if runs[0][2] is not None else None
        summary[name] = (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs),
                         statistics.median(ratios), min(ratios), max(ratios), memory)  # fmt: skip
    return summary


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
    parser.add_argument("--compile", action="store_true",
                        help="rangenet: torch.compile in both loops (lazytrain: train.compile.enabled)")  # fmt: skip
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
        rangenet = dict(rangenet_case(), compile=args.compile)
        if args.compile:
            rangenet["name"] += ", torch.compile"
        plans.append((rangenet, args.iters or 40, torch.device("cpu"), False))
        if torch.cuda.is_available():
            plans.append((rangenet, args.iters or 200, torch.device("cuda"), True))
    if args.case in ("ddp", "all"):
        # two processes: NCCL on two GPUs when there are two, else gloo on the CPU
        plans.append((ddp_case(), args.iters or 400, _ddp_device(0), False))
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    print(f"# {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}{gpu}")
    for case, iters, device, amp in plans:
        summary = bench(case, iters, args.repeats, device, amp)
        how = "one after the other" if device.type == "cuda" else "interleaved step by step"
        print(f"\n{case['name']} on {device.type}{' bf16' if amp else ''}, {iters} it x {args.repeats} repeats, "
              f"each trainer paired with a hand-written loop run {how}")  # fmt: skip
        memory = device.type == "cuda"
        print(f"  {'trainer':<12}{'step':>12}{'hand-written':>15}{'ratio':>9}{'min..max':>16}"
              + (f"{'peak memory ratio':>20}" if memory else ""))  # fmt: skip
        for name, (step, hand, ratio, low, high, mem) in summary.items():
            print(f"  {name:<12}{step * 1e3:>9.3f} ms{hand * 1e3:>12.3f} ms{ratio:>9.3f}{low:>9.3f}..{high:.3f}"
                  + (f"{mem:>20.3f}" if memory else ""))  # fmt: skip
        if "lazytrain*" in summary:
            print("  lazytrain*: build_train_loader(seed_batches=True): RNGs seeded per batch in this process too")
        print("  A/A: the hand-written loop in the trainer's place; its distance from 1 is the method's own error")
    return 0


if __name__ == "__main__":
    sys.exit(main())
