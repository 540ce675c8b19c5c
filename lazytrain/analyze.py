"""`lazytrain analyze`: a config's model without training: parameters per module (trainable and frozen), FLOPs
and activations per module on one real batch (fvcore), forward latency and peak memory on the run's device."""

from __future__ import annotations

import resource
import statistics
import sys
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Mapping
from typing import Any, Optional

import torch
from omegaconf import DictConfig, OmegaConf

from .checkpoint import load_inference_weights
from .data import describe_batch, to_device
from .engine.build import build_loader, build_model, freeze_parameters, resolve_device, seed_everything
from .engine.memory import inference_autocast
from .errors import ConfigError, LazytrainError, TrainingError, UserCodeError, from_worker

with warnings.catch_warnings():  # fvcore.nn scripts its focal losses on import, which torch now deprecates
    warnings.simplefilter("ignore", DeprecationWarning)
    from fvcore.nn import ActivationCountAnalysis, FlopCountAnalysis, parameter_count

__all__ = ["WARMUP_RUNS", "analyze_model", "format_report"]

WARMUP_RUNS = 2


def analyze_model(cfg: DictConfig, weights: Optional[str] = None, runs: int = 10, depth: int = 2) -> dict[str, Any]:
    """Build ``cfg``'s model (``train.freeze`` applied; ``weights`` loaded with their EMA when there is one,
    else freshly initialised with ``train.seed``), take one batch of ``dataloader.test`` (else
    ``dataloader.train``) and return the numbers :func:`format_report` prints: the per-module table down to
    ``depth`` levels, fvcore's FLOP and activation counts with the ops it could not count, the median forward
    latency of ``runs`` passes and the peak memory. JSON-serialisable."""
    if runs < 1:
        raise ConfigError(f"--runs must be at least 1, got {runs}.")
    if depth < 0:
        raise ConfigError(f"--depth must be at least 0, got {depth}.")
    device = resolve_device(cfg.train.device)
    seed_everything(cfg.train.seed, deterministic=False)  # fresh weights are the same on every call
    model = build_model(cfg, device)
    freeze_parameters(model, list(cfg.train.freeze))
    loaded = load_inference_weights(model, weights)["weights"] if weights else None
    model.eval()
    batch, source = _one_batch(cfg, device)
    autocast = inference_autocast(model, cfg, device)  # train.amp, or inside train.amp.modules
    speed = _time_forward(model, batch, device, runs, autocast)  # before the tracing: its memory is not ours
    flops, activations = _fvcore_counts(model, batch)
    modules = _module_table(model, flops.by_module(), activations.by_module(), depth)
    samples = _samples_in(batch)
    return {
        "model": type(model).__name__,
        "weights": weights,
        "weights_used": loaded,  # "ema" | "model" | None (freshly initialised)
        "device": str(device),
        "autocast": cfg.train.amp.dtype if cfg.train.amp.enabled else None,
        "batch": {"source": source, "structure": describe_batch(batch), "samples": samples},
        "parameters": {key: modules[0][key] for key in ("parameters", "trainable", "frozen")},
        "modules": modules,
        "flops": {
            "total": _int(flops.total()),
            "per_sample": _int(flops.total() / samples) if samples else None,
            **_uncounted(flops.unsupported_ops()),
        },
        "activations": {"total": _int(activations.total()), **_uncounted(activations.unsupported_ops())},
        **speed,
    }


def _samples_in(batch: Any) -> Optional[int]:
    """The batch size: the first dimension of the batch's first tensor (None when it holds no tensor)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else None
    values = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (list, tuple)) else ()
    for value in values:
        samples = _samples_in(value)
        if samples:
            return samples
    return None


def _uncounted(ops: Mapping[str, int]) -> dict[str, dict[str, int]]:
    """fvcore's ops without a counter, less those that are exactly 0 in inference (dropout in all its forms is
    the identity there): listing those as "not counted" would contradict "dropout counts 0"."""
    zero = {op: n for op, n in ops.items() if "dropout" in op}
    return {"not_counted": {op: n for op, n in ops.items() if op not in zero}, "zero_in_inference": zero}


def _one_batch(cfg: DictConfig, device: torch.device) -> tuple[Any, str]:
    """The first batch of the test loader (the train loader when there is none) on ``device``."""
    key = (
        "dataloader.test" if OmegaConf.select(cfg, "dataloader.test", default=None) is not None else "dataloader.train"
    )
    loader_cfg = OmegaConf.select(cfg, key, default=None)
    if loader_cfg is None:
        raise ConfigError(
            "analyze needs one batch, but the config has neither dataloader.test nor dataloader.train.",
            key="dataloader",
            hint="Add dataloader.test = L(build_test_loader)(dataset=..., batch_size=...).",
        )
    loader = build_loader(loader_cfg, key, device)
    iterator = iter(loader)
    try:
        batch = next(iterator)
    except StopIteration:
        raise ConfigError("the loader yields no batch: its dataset is empty.", key=key) from None
    except LazytrainError as e:
        raise from_worker(e) from None
    finally:
        del iterator  # stops the loader's worker processes now
    return to_device(batch, device), key


def _time_forward(model: torch.nn.Module, batch: Any, device: torch.device, runs: int, autocast: Any) -> dict[str, Any]:
    """Median latency of ``runs`` forwards after WARMUP_RUNS, and the peak memory while they ran."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        allocated_before = torch.cuda.memory_allocated(device)
    rss_before = _peak_rss_bytes()
    seconds = []
    with torch.inference_mode(), autocast:
        for i in range(WARMUP_RUNS + runs):
            start = time.perf_counter()
            try:
                model(batch)
            except Exception as e:
                raise _forward_error(model, batch, e) from e
            if cuda:
                torch.cuda.synchronize(device)
            if i >= WARMUP_RUNS:
                seconds.append(time.perf_counter() - start)
    latency = {
        "median": 1e3 * statistics.median(seconds),
        "min": 1e3 * min(seconds),
        "max": 1e3 * max(seconds),
        "runs": runs,
        "warmup": WARMUP_RUNS,
    }
    if cuda:
        peak = torch.cuda.max_memory_allocated(device)
        memory = {
            "kind": "cuda_max_memory_allocated",
            "peak_bytes": peak,
            "forward_bytes": peak - allocated_before,  # above the weights and the batch
        }
    else:
        rss_after = _peak_rss_bytes()
        memory = {"kind": "process_peak_rss_growth", "peak_bytes": rss_after, "forward_bytes": rss_after - rss_before}
    return {"latency_ms": latency, "memory": memory}


def _peak_rss_bytes() -> int:
    """The process's peak resident set size so far (``ru_maxrss``: kilobytes on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def _forward_error(model: torch.nn.Module, batch: Any, error: Exception) -> UserCodeError:
    wrapped = UserCodeError(
        f"the model ({type(model).__name__}) raised {type(error).__name__} in its eval-mode forward: "
        f"{str(error).strip()} (batch: {describe_batch(batch)})"
    )
    wrapped.details = "".join(traceback.format_exception(type(error), error, error.__traceback__)).rstrip()
    return wrapped


def _fvcore_counts(model: torch.nn.Module, batch: Any) -> tuple[FlopCountAnalysis, ActivationCountAnalysis]:
    """fvcore's analyses of ``model((batch,))``, traced now, without their warnings (the ops they could not
    count are reported instead)."""
    analyses = (FlopCountAnalysis(model, (batch,)), ActivationCountAnalysis(model, (batch,)))
    for analysis in analyses:
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        try:
            with torch.no_grad():
                analysis.total()  # traces the forward once; the other numbers reuse the trace
        except Exception as e:
            raise TrainingError(
                f"fvcore could not trace the forward of {type(model).__name__}: {type(e).__name__}: "
                f"{str(e).strip()} (batch: {describe_batch(batch)})",
                hint="fvcore traces with torch.jit.trace: the forward must run on tensors without Python "
                "control flow that depends on their values.",
            ) from e
    return analyses


def _module_table(
    model: torch.nn.Module, flops: Mapping[str, float], activations: Mapping[str, float], depth: int
) -> list[dict[str, Any]]:
    """One row per module down to ``depth`` levels (the model itself is level 0, named "")."""
    total = parameter_count(model)
    trainable: Counter[str] = Counter()
    for name, param in model.named_parameters():
        if param.requires_grad:
            parts = name.split(".")
            for k in range(len(parts)):  # every enclosing module, as fvcore's parameter_count does
                trainable[".".join(parts[:k])] += param.numel()
    rows = []
    for name, module in model.named_modules():
        level = name.count(".") + 1 if name else 0
        if level > depth:
            continue
        rows.append(
            {
                "module": name,
                "type": type(module).__name__,
                "depth": level,
                "parameters": total[name],
                "trainable": trainable[name],
                "frozen": total[name] - trainable[name],
                "flops": _int(flops.get(name, 0)),
                "activations": _int(activations.get(name, 0)),
            }
        )
    return rows


def _int(value: float) -> int:
    return round(value)


def format_report(report: Mapping[str, Any]) -> str:
    """The plain-text report of :func:`analyze_model`'s numbers."""
    p = report["parameters"]
    if report["weights_used"] is None:
        weights = "freshly initialised weights (no --weights)"
    else:
        which = "EMA" if report["weights_used"] == "ema" else "trained"
        weights = f"the {which} weights of {report['weights']}"
    lines = [
        f"{report['model']}: {p['parameters']:,} parameters ({p['trainable']:,} trainable, {p['frozen']:,} frozen), "
        f"{weights}",
        f"batch of {report['batch']['source']} on {report['device']}: {report['batch']['structure']}",
        "",
        *_table(report),
        "",
        _flops_line(report),
        f"activations: {_si(report['activations']['total'])}",
        f"not counted in FLOPs: {_ops(report['flops']['not_counted'])}",
        f"not counted in activations: {_ops(report['activations']['not_counted'])}",
    ]
    lines += _latency_lines(report)
    memory = report["memory"]
    if memory["kind"] == "cuda_max_memory_allocated":
        lines.append(
            f"peak memory: {_mib(memory['peak_bytes'])} allocated on {report['device']} during the forward passes "
            f"(torch.cuda.max_memory_allocated), {_mib(memory['forward_bytes'])} above the weights and the batch"
        )
    else:
        lines.append(
            f"peak memory: process peak RSS +{_mib(memory['forward_bytes'])} during the forward passes, "
            f"{_mib(memory['peak_bytes'])} in all (CPU: ru_maxrss, blind below an earlier peak)"
        )
    return "\n".join(lines)


def _flops_line(report: Mapping[str, Any]) -> str:
    flops, samples = report["flops"], report["batch"]["samples"]
    per_sample = f", {_si(flops['per_sample'])} per sample" if samples and samples > 1 else ""
    batch = f"on this batch of {samples} sample{'' if samples == 1 else 's'}" if samples else "on this batch"
    return (
        f"FLOPs: {_si(flops['total'])} {batch}{per_sample} "
        "(fvcore: a multiply-add is one flop; shape ops, relu and dropout count 0 by design)"
    )


# runs this far apart measured the machine's load more than the model: the median is not a number to quote
DISAGREEMENT = 2.0


def _latency_lines(report: Mapping[str, Any]) -> list[str]:
    latency = report["latency_ms"]
    precision = f"autocast {report['autocast']}" if report["autocast"] else "fp32"
    lines = [
        f"latency: median {_ms(latency['median'])} of {latency['runs']} forward passes "
        f"(min {_ms(latency['min'])}, max {_ms(latency['max'])}) after {latency['warmup']} warm-up, "
        f"torch.inference_mode, {precision}, on {report['device']}"
    ]
    if latency["min"] > 0 and latency["max"] / latency["min"] > DISAGREEMENT:
        lines.append(
            f"warning: the forward passes disagree by {latency['max'] / latency['min']:.1f}x (min "
            f"{_ms(latency['min'])}, max {_ms(latency['max'])}): something else was using the machine, or the "
            "warm-up was too short; measure again on an idle machine, with more --runs"
        )
    return lines


def _ms(value: float) -> str:
    """``1270 ms``, ``12.3 ms``, ``0.412 ms``: three significant digits, never in powers of ten."""
    decimals = 0 if value >= 100 else 1 if value >= 10 else 2 if value >= 1 else 3
    return f"{value:.{decimals}f} ms"


def _table(report: Mapping[str, Any]) -> list[str]:
    header = ("module", "parameters", "trainable", "frozen", "FLOPs", "activations")
    cells = [
        (
            "  " * row["depth"] + (f"{row['module']} ({row['type']})" if row["module"] else report["model"]),
            f"{row['parameters']:,}",
            f"{row['trainable']:,}",
            f"{row['frozen']:,}",
            _si(row["flops"]),
            _si(row["activations"]),
        )
        for row in report["modules"]
    ]
    widths = [max(len(r[i]) for r in [header, *cells]) for i in range(len(header))]
    return [
        "  ".join([r[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(r[1:], widths[1:]))]).rstrip()
        for r in [header, *cells]
    ]


def _si(n: float) -> str:
    """``24576`` -> ``24.6K``: three significant digits (exact below 1000)."""
    for factor, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= factor:
            return f"{n / factor:.3g}{unit}"
    return f"{n:g}"


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _ops(counts: Mapping[str, int]) -> str:
    if not counts:
        return "none"
    return ", ".join(f"{op} x{n}" for op, n in sorted(counts.items(), key=lambda item: (-item[1], item[0])))
