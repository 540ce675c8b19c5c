"""The torch model as an ONNX program: captured with ``torch.export``, converted by ``torch.onnx.export(dynamo=True)``;
a failure names the op that has no conversion and the module that called it."""

from __future__ import annotations

import contextlib
import inspect
import itertools
import logging
import os
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Optional

import torch

from .errors import LazytrainError

__all__ = ["ExportError", "name_batch_axis", "quiet_exporter", "to_onnx_program"]


class ExportError(LazytrainError):
    """The model cannot be exported, or the ONNX model does not compute what the torch model computes."""


def to_onnx_program(
    wrapper: torch.nn.Module,
    example: tuple[torch.Tensor, ...],
    spec: Mapping[str, Any],
    opset: Optional[int],
    stage: Optional[Callable[[str], None]] = None,
) -> Any:
    """``wrapper`` (its ``model`` inside, tensors in, tensors out) as an ONNX program: captured with
    ``torch.export`` on ``example`` (a dynamic batch axis when ``spec["dynamic_batch"]``), then converted with
    ``spec``'s input and output names. ``stage`` is told each step as it starts. Failures are an ExportError."""
    if "dynamo" not in inspect.signature(torch.onnx.export).parameters:
        raise ExportError(
            f"lazytrain export uses torch.onnx.export(dynamo=True), which torch {torch.__version__} does not have.",
            hint="Upgrade torch to 2.5 or newer (and install onnxscript).",
        )
    dynamic_shapes = None
    if spec["dynamic_batch"]:
        batch = torch.export.Dim("batch")
        dynamic_shapes = (tuple({0: batch} for _ in example),)  # one entry: forward(*tensors)
    if stage is not None:
        stage(f"capturing {type(wrapper.model).__name__}.forward with torch.export")
    with quiet_exporter():
        try:
            program = torch.export.export(wrapper, example, dynamic_shapes=dynamic_shapes)
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ExportError(
                f"torch.export cannot capture {type(wrapper.model).__name__}.forward: {type(e).__name__}: {first}",
                hint="Typical causes: Python control flow on tensor values, or .item()/.tolist() in forward "
                "(run with --traceback for the exporter's full report).",
            ) from e
        if stage is not None:
            stage("converting it to ONNX")
        try:
            kwargs: dict[str, Any] = {
                "dynamo": True,
                "verbose": False,
                "input_names": list(spec["input_keys"]),
                "output_names": list(spec["output_names"]),
            }
            if opset is not None:
                kwargs["opset_version"] = opset
            onnx_program = torch.onnx.export(program, example, **kwargs)
        except Exception as e:
            raise _conversion_error(e, program, wrapper) from e
    return onnx_program


def _conversion_error(error: Exception, program: Any, wrapper: torch.nn.Module) -> ExportError:
    """Name the op that has no ONNX conversion and the module that called it."""
    text = f"{error}\n{error.__cause__}"
    match = re.search(r"target=torch\.ops\.([\w.]+?)\.(?:default|\w+)\]", text) or re.search(r"op='([\w.]+)'", text)
    if match is None:
        return ExportError(f"the ONNX exporter failed: {type(error).__name__}: {str(error).splitlines()[0]}")
    op = match.group(1)
    where = "the model"
    for node in program.graph.nodes:
        if node.op == "call_function" and str(node.target).startswith(op):
            stack = node.meta.get("nn_module_stack") or {}
            if stack:
                path, cls = list(stack.values())[-1]
                name = cls.__name__ if isinstance(cls, type) else str(cls).rsplit(".", 1)[-1].strip("'>")
                where = f"module '{_clean_path(path)}' ({name})"
            break
    return ExportError(
        f"{where} uses {op}, which the ONNX exporter cannot convert.",
        hint="Rewrite that part with ops ONNX supports (e.g. fixed-size pooling instead of adaptive pooling), or "
        "register an ONNX translation for the op with torch.onnx.",
    )


def _clean_path(path: str) -> str:
    # torch.export prefixes paths with the wrapper's attribute and uses L['self'] / getattr notation
    path = re.sub(r"L\['self'\]\.?", "", path)
    path = re.sub(r"getattr\((?:L\['self'\]\.)?([\w.]+), '(\w+)'\)", r"\1.\2", path)
    return path.removeprefix("model.") or "(the model itself)"


def name_batch_axis(model: Any) -> None:
    """Call the exporter's symbolic batch dimension (``s0``, ``s95``...) "batch" in the graph's signature."""
    symbols = {v.type.tensor_type.shape.dim[0].dim_param for v in model.graph.input} - {""}
    for value in itertools.chain(model.graph.input, model.graph.output, model.graph.value_info):
        dims = value.type.tensor_type.shape.dim
        for dim in dims:
            if dim.dim_param in symbols:
                dim.dim_param = "batch"


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """The exporter logs progress and optional-dependency warnings (torchvision) that users need not see."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
