"""`lazytrain export`: the trained model as ONNX, checked against torch with onnxruntime on real batches.

torch's torch.export-based ONNX exporter (``dynamo=True``) is used: the TorchScript exporter is deprecated
since torch 2.9, and the torch.export route gives a dynamic batch axis from ``dynamic_shapes`` and error
messages that point at the op that cannot be converted. The model is first captured with
``torch.export.export`` so that a conversion error can be traced back to the module that issued the op.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Optional

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from .checkpoint import load_inference_weights
from .config import instantiate
from .engine.build import build_loader
from .errors import ConfigError, TrainingError
from .fileio import TMP_PREFIX, atomic_write
from .onnx_conversion import ExportError, name_batch_axis, to_onnx_program
from .progress import Progress

__all__ = ["ExportError", "check_onnx", "export_onnx", "report_path", "verify_onnx"]

logger = logging.getLogger(__name__)

RTOL, ATOL = 1e-3, 1e-4


def within_tolerance(expected: np.ndarray, got: np.ndarray) -> tuple[bool, float]:
    """Whether onnxruntime's ``got`` matches torch's ``expected``: rtol=1e-3, atol 1e-4 times the output's RMS
    (at least 1e-4); the verdict and that atol. The atol follows the output's scale because float32 rounding in
    a deep network grows with the values summed, not with each output: an element near zero among logits of
    RMS 60 inherits their rounding (Darknet53, random weights, 64 x 2048: torch float32 is itself 2.3e-4 from
    float64, onnxruntime too; 9 elements a million beyond a fixed 1e-4). A wrong op moves outputs far more."""
    scale = float(np.sqrt(np.mean(np.square(expected, dtype=np.float64)))) if expected.size else 0.0
    atol = ATOL * max(1.0, scale)
    return bool(np.allclose(got, expected, rtol=RTOL, atol=atol)), atol


_EXPORT_EXAMPLE = "export = dict(input_keys=['image'], output_names=['logits'], dynamic_batch=True)"


class _TensorsInTensorsOut(torch.nn.Module):
    """Takes the tensors named by ``input_keys`` positionally, builds the batch dict the model expects, and
    returns plain tensors (a dict output in ``output_names`` order)."""

    def __init__(self, model: torch.nn.Module, input_keys: Sequence[str], output_names: Sequence[str]) -> None:
        super().__init__()
        self.model, self.input_keys, self.output_names = model, list(input_keys), list(output_names)

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(dict(zip(self.input_keys, tensors)))
        if isinstance(out, torch.Tensor):
            return (out,)
        if isinstance(out, Mapping):
            return tuple(out[name] for name in self.output_names)
        return tuple(out)


def export_onnx(
    cfg: DictConfig,
    weights: str,
    output: str = "model.onnx",
    *,
    opset: Optional[int] = None,
    check: bool = True,
    num_batches: int = 4,
    use_ema: bool = True,
) -> dict[str, Any]:
    """Export the config's model with ``weights`` to ``output``; unless ``check`` is False, verify it (see
    :func:`verify_onnx`). Writes the report beside the model (``model.onnx`` -> ``model.report.json``, see
    :func:`report_path`) and returns it, with ``"report"``: where it went. Each stage is logged as it starts,
    and the check's progress with an ETA every few seconds."""
    spec = _export_spec(cfg)
    stages = _Stages(5 if check else 4)
    stages.start(f"loading the weights and {max(num_batches, 1)} test batches")
    wrapper, batches, which = _prepare(cfg, weights, spec, num_batches, use_ema)
    onnx_program = to_onnx_program(wrapper, _example_with_two_samples(batches), spec, opset, stages.start)
    stages.start(f"saving {output} and checking it with onnx.checker")
    folder = os.path.dirname(os.path.abspath(output))
    os.makedirs(folder, exist_ok=True)
    # written whole or not at all: the exporter's file goes to a temp name, the final one by atomic_write
    draft = os.path.join(folder, f"{TMP_PREFIX}{os.getpid()}-{os.path.basename(output)}")
    try:
        onnx_program.save(draft)

        import onnx

        saved = onnx.load(draft)
    finally:
        if os.path.exists(draft):
            os.remove(draft)
    if spec["dynamic_batch"]:
        name_batch_axis(saved)
    atomic_write(output, saved.SerializeToString())
    onnx.checker.check_model(output)
    report: dict[str, Any] = {
        "model": os.path.abspath(output),
        "weights": os.path.abspath(weights),
        "ema_weights": which == "ema",
        "opset": next((o.version for o in saved.opset_import if o.domain in ("", "ai.onnx")), None),
        "inputs": {i.name: _dims(i) for i in saved.graph.input},
        "outputs": {o.name: _dims(o) for o in saved.graph.output},
        "checked": False,
    }
    if check:
        stages.start("comparing it with torch in onnxruntime")
        report.update(check_onnx(wrapper, output, batches, spec))
    report["report"] = _write_report(output, report)
    return report


class _Stages:
    """Names each stage of an export as it starts (``Export 3/5: converting it to ONNX``): capture and
    conversion take tens of seconds on a large model, and a silent wait reads as a hang."""

    def __init__(self, total: int) -> None:
        self.total, self.count = total, 0

    def start(self, what: str) -> None:
        self.count += 1
        logger.info("Export %d/%d: %s", self.count, self.total, what)


def verify_onnx(cfg: DictConfig, weights: str, path: str, num_batches: int = 4, use_ema: bool = True) -> dict[str, Any]:
    """Compare the ONNX model at ``path`` with the config's model and ``weights`` on test batches (and on a
    batch of another size); an ExportError (exit 1) beyond the tolerance of :func:`within_tolerance`."""
    spec = _export_spec(cfg)
    wrapper, batches, which = _prepare(cfg, weights, spec, num_batches, use_ema)
    report = {"model": os.path.abspath(path), "weights": os.path.abspath(weights), "ema_weights": which == "ema"}
    report.update(check_onnx(wrapper, path, batches, spec))
    report["report"] = _write_report(path, report)
    return report


def _prepare(
    cfg: DictConfig, weights: str, spec: Mapping[str, Any], num_batches: int, use_ema: bool = True
) -> tuple[torch.nn.Module, list[tuple[torch.Tensor, ...]], str]:
    """The model with ``weights`` in a wrapper of plain tensors, example batches, and which weights ("ema" or
    "model") it holds."""
    model = instantiate(cfg.model, key="model")
    which = load_inference_weights(model, weights, use_ema)["weights"]  # map_location=cpu: CUDA checkpoints too
    wrapper = _TensorsInTensorsOut(model.cpu().eval(), spec["input_keys"], spec["output_names"]).eval()
    batches = list(itertools.islice(_input_batches(cfg, spec["input_keys"]), max(num_batches, 1)))
    return wrapper, batches, which


def report_path(model_path: str) -> str:
    """Where the report of the ONNX model at ``model_path`` goes: beside it, named after it (``model.onnx`` ->
    ``model.report.json``), so exports into one folder keep their own reports. A report of another model is
    never replaced: should that file hold one (``model`` beside ``model.onnx``), the next free name is used
    (``model.onnx.report.json``, ``model.report.2.json``, ...)."""
    model = os.path.abspath(model_path)
    stem = model[: -len(".onnx")] if model.lower().endswith(".onnx") else model
    candidates = [stem + ".report.json", model + ".report.json"]
    candidates += [f"{stem}.report.{n}.json" for n in range(2, 100)]
    for path in dict.fromkeys(candidates):  # in order, without repeats
        try:
            with open(path, encoding="utf-8") as f:
                owner = json.load(f).get("model")
        except (OSError, ValueError, AttributeError):
            return path  # none yet, or not a report
        if owner == model:
            return path
    raise ExportError(f"every report name beside {model} holds another model's report.", hint="Export elsewhere.")


def _write_report(model_path: str, report: dict[str, Any]) -> str:
    """Write ``report`` (atomically) where :func:`report_path` says; return that path."""
    path = report_path(model_path)
    atomic_write(path, json.dumps(report, indent=2) + "\n")
    if report.get("checked") and not report["passed"]:
        atol = report["atol"].get(report["worst_output"], ATOL)
        raise ExportError(
            f"the ONNX model differs from the torch model: max abs diff {report['max_abs_diff']:.3g} on output "
            f"'{report['worst_output']}' (allowed: rtol={RTOL}, atol={atol:.3g}: 1e-4 times the output's RMS); "
            "argmax agreement "
            f"{report['argmax_agreement']:.4f}. Report: {path}.",
            hint="Check for ops whose ONNX version computes differently (the report lists each batch).",
        )
    return path


def check_onnx(
    wrapper: torch.nn.Module, path: str, batches: Sequence[tuple[torch.Tensor, ...]], spec: Mapping[str, Any]
) -> dict[str, Any]:
    """Run onnxruntime and torch on every batch and on a batch of another size; max abs diff, argmax
    agreement, and whether every output is within rtol / atol."""
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    input_names = [i.name for i in session.get_inputs()]
    checks = list(batches)
    sizes = {b[0].shape[0] for b in batches}
    if spec["dynamic_batch"] and checks:
        other = tuple(t[:1] for t in checks[0]) if 1 not in sizes else tuple(torch.cat([t, t]) for t in checks[0])
        checks.append(other)
    per_batch, worst, worst_name, agree, total, passed = [], 0.0, "", 0, 0, True
    atols: dict[str, float] = {}  # the atol each output was held to (its largest over the batches)
    progress = Progress("Export check (onnxruntime vs torch)", checks, unit="batch", logger=logger)
    for batch in checks:
        with torch.inference_mode():
            expected = [t.float().numpy() for t in wrapper(*batch)]
        got = session.run(None, {name: t.numpy() for name, t in zip(input_names, batch)})
        diffs = []
        for name, e, g in zip(spec["output_names"] or [f"output_{i}" for i in range(len(expected))], expected, got):
            diff = float(np.max(np.abs(e - g))) if e.size else 0.0
            diffs.append(diff)
            if diff > worst:
                worst, worst_name = diff, name
            ok, atol = within_tolerance(e, g)
            passed &= ok
            atols[name] = max(atols.get(name, 0.0), atol)
            if e.ndim >= 2:
                agree += int((e.argmax(1) == g.argmax(1)).sum())
                total += e.argmax(1).size
        per_batch.append({"batch_size": int(batch[0].shape[0]), "max_abs_diff": max(diffs)})
        progress.step()
    progress.done()
    return {
        "checked": True,
        "passed": passed,
        "max_abs_diff": worst,
        "worst_output": worst_name,
        "argmax_agreement": agree / total if total else 1.0,
        "batches": per_batch,
        "rtol": RTOL,
        "atol": atols,
        "onnxruntime": ort.__version__,
        "torch": torch.__version__,
    }


def _export_spec(cfg: DictConfig) -> dict[str, Any]:
    node = cfg.get("export")
    if node is None:
        raise ConfigError(
            "this config has no 'export' section, so lazytrain does not know which batch tensors the ONNX graph takes.",
            key="export",
            hint=f"Add to the config: {_EXPORT_EXAMPLE} (input_keys: the batch keys the model reads in eval mode).",
        )
    raw = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    if not isinstance(raw, Mapping):
        raise ConfigError("'export' must be a dict.", key="export", hint=f"e.g. {_EXPORT_EXAMPLE}")
    spec: dict[str, Any] = {str(k): v for k, v in raw.items()}
    if not spec.get("input_keys"):
        raise ConfigError("export.input_keys is empty.", key="export.input_keys", hint=f"e.g. {_EXPORT_EXAMPLE}")
    unknown = set(spec) - {"input_keys", "output_names", "dynamic_batch"}
    if unknown:
        raise ConfigError(
            f"unknown export settings: {', '.join(sorted(unknown))}.",
            key="export",
            hint="Known: input_keys, output_names, dynamic_batch.",
        )
    return {
        "input_keys": list(spec["input_keys"]),
        "output_names": list(spec.get("output_names") or ["output"]),
        "dynamic_batch": bool(spec.get("dynamic_batch", True)),
    }


def _input_batches(cfg: DictConfig, input_keys: Sequence[str]) -> Iterator[tuple[torch.Tensor, ...]]:
    key = "dataloader.test" if OmegaConf.select(cfg, "dataloader.test", default=None) is not None else None
    if key is None:
        raise ConfigError(
            "the export check needs batches from dataloader.test, and this config has none.",
            key="dataloader.test",
            hint="Add a test loader, or skip the check with --no-check.",
        )
    loader = build_loader(OmegaConf.select(cfg, key), key, torch.device("cpu"))  # the check runs on the CPU
    for batch in loader:
        missing = [k for k in input_keys if k not in batch]
        if missing:
            raise ConfigError(
                f"the test batches have no {', '.join(map(repr, missing))}; they have {', '.join(map(repr, batch))}.",
                key="export.input_keys",
            )
        yield tuple(batch[k].cpu() for k in input_keys)


def _example_with_two_samples(batches: list[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
    """torch.export specialises a dimension of size 1, so the example batch has at least 2 samples."""
    if not batches:
        raise TrainingError("the test loader yielded no batches to export with.")
    example = batches[0]
    if example[0].shape[0] >= 2:
        return example
    return tuple(torch.cat([t, t]) for t in example)


def _dims(value_info: Any) -> list[Any]:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]
