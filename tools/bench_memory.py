"""Peak memory and step time of a train step with and without activation checkpointing, side by side in one run.

    python tools/bench_memory.py                         # the flagship (configs/kitti_seg.py as it is), and its
                                                         # model at width 32 / depth 4 on 64 x 2048 images
    python tools/bench_memory.py --config configs/kitti_rangenet53.py dataloader.train.batch_size=2
    python tools/bench_memory.py --config CFG train.device=cuda --patterns "backbone.*" --steps 5

Each (case, setting) runs in a fresh process: the config's model, optimizer and one batch of its train loader
(``num_workers=0``), one warm-up step (optimizer state, class weights, allocator caches), then ``--steps`` timed
steps (forward, backward, optimizer step; ``train.amp`` as training applies it), then one step whose peak memory
is measured: on a GPU ``torch.cuda.max_memory_allocated``; on the CPU the process's resident-set high-water mark
(``VmHWM``, reset before the step through /proc/self/clear_refs), with glibc's mmap and trim thresholds set
to 128 kB for that step so that a freed tensor leaves the resident set at once. "step peak" is that peak less
the memory held before the step (model, optimizer state, batch). The checkpointed modules are ``--patterns``,
else the config's ``train.activation_checkpointing``, else every top-level module that holds parameters.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import time

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, REPO)

FLAGSHIP = os.path.join(REPO, "configs", "kitti_seg.py")
DEFAULT_CASES = [
    ("flagship (kitti_seg.py)", FLAGSHIP, []),
    ("width 32, depth 4, 64x2048", FLAGSHIP, ["model.width=32", "model.depth=4", "dataset.projection.width=2048"]),
]


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        match = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.MULTILINE)
    assert match is not None, field
    return int(match.group(1))


def measure(config: str, overrides: list[str], patterns: list[str] | None, checkpointing: bool, steps: int) -> dict:
    """One case in this process: the figures as a dict (run in a fresh process per case)."""
    import torch

    from lazytrain.data import to_device
    from lazytrain.engine.build import build_loader, build_model, build_optimizer, freeze_parameters, resolve_device
    from lazytrain.engine.memory import amp_modules, apply_memory_settings
    from lazytrain.engine.settings import load_run_config
    from lazytrain.engine.trainer import autocast_context

    cfg = load_run_config(config, overrides)
    if "num_workers" in cfg.dataloader.train:
        cfg.dataloader.train.num_workers = 0
    device = resolve_device(cfg.train.device)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg, device)
    freeze_parameters(model, list(cfg.train.freeze))
    if patterns is None:
        patterns = list(cfg.train.activation_checkpointing) or [
            name for name, child in model.named_children() if any(True for _ in child.parameters())
        ]
    cfg.train.activation_checkpointing = patterns if checkpointing else []
    done = apply_memory_settings(model, cfg, device)
    model.train()
    optimizer = build_optimizer(cfg, model)
    loader = build_loader(cfg.dataloader.train, "dataloader.train", device)
    batch = to_device(next(iter(loader)), device)
    autocast = autocast_context(device, cfg.train.amp.enabled and not amp_modules(cfg), cfg.train.amp.dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step() -> None:
        with autocast:
            out = model(batch)
        loss = sum(out.values()) if isinstance(out, dict) else out
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up
    del loader
    times = []
    for _ in range(steps):
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    gc.collect()
    if device.type == "cuda":
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        sync()
        peak = torch.cuda.max_memory_allocated(device)
    else:
        # from here on glibc returns a freed tensor's pages at once: the resident set follows the live tensors
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 128 * 1024)
        libc.mallopt(_M_TRIM_THRESHOLD, 128 * 1024)
        libc.malloc_trim(0)
        before = _status_kib("VmRSS") * 1024
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident set
        step()
        peak = _status_kib("VmHWM") * 1024
    image = batch.get("image") if isinstance(batch, dict) else None
    return {
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "checkpointed": done.checkpointed,
        "patterns": patterns,
        "before": before,
        "peak": peak,
        "step_s": statistics.median(times),
        "input": list(image.shape) if isinstance(image, torch.Tensor) else None,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def run_case(config: str, overrides: list[str], patterns: list[str] | None, checkpointing: bool, steps: int) -> dict:
    """:func:`measure` in a fresh process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([REPO, env.get("PYTHONPATH", "")])
    args = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        json.dumps([config, overrides, patterns, checkpointing, steps]),
    ]
    r = subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO)
    if r.returncode != 0:
        raise SystemExit(f"{config} {' '.join(overrides)} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config",
        nargs="+",
        metavar=("CFG", "OVERRIDE"),
        help="one config and its overrides (default: the flagship and its wide model)",
    )
    parser.add_argument("--patterns", nargs="+", help="train.activation_checkpointing globs to measure")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per case (median)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*json.loads(args.child))))
        return 0
    cases = [("", args.config[0], args.config[1:])] if args.config else DEFAULT_CASES
    print(
        "| case | input (B, C, H, W) | checkpointed modules | peak off | peak on | step peak off | step peak on "
        "| step time off | step time on |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    device = ""
    for name, config, overrides in cases:
        off = run_case(config, overrides, args.patterns, False, args.steps)
        on = run_case(config, overrides, args.patterns, True, args.steps)
        device = f"{off['device']} ({off['threads']} threads)"
        step_off, step_on = off["peak"] - off["before"], on["peak"] - on["before"]
        label = name or " ".join([os.path.relpath(config, REPO), *overrides])
        shown = ", ".join(on["checkpointed"][:4]) + (" ..." if len(on["checkpointed"]) > 4 else "")
        print(
            f"| {label} | {tuple(off['input'] or ())} | {len(on['checkpointed'])} ({shown}) | {mib(off['peak'])} "
            f"| {mib(on['peak'])} | {mib(step_off)} | {mib(step_on)} ({step_on / step_off:.0%}) "
            f"| {off['step_s']:.3f} s | {on['step_s']:.3f} s ({on['step_s'] / off['step_s']:.2f}x) |"
        )
    print(
        f"\ndevice: {device}; peak: resident set (CPU) or max_memory_allocated (GPU); step time: median of "
        f"{args.steps} steps"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
