"""Inference speed of the flagship model: torch eager, torch.compile and onnxruntime on the exported model,
for range images of 64 x W and a few batch sizes, measured in the same run (ratios against eager).

    python tools/bench_inference.py                                   # 64x512 and 64x2048, batch 1 and 8, CPU
    python tools/bench_inference.py --widths 512 --batches 1 --no-compile
    python tools/bench_inference.py --device cuda                     # on a GPU (onnxruntime: CUDA provider if present)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from lazytrain.lidar import RangeNet


class ImageToLogits(torch.nn.Module):
    """The flagship model as ONNX sees it: the range image in, the logits out."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model({"image": image})


def median_ms(fn: Callable[[], object], runs: int, sync: Callable[[], None]) -> float:
    fn()
    fn()  # warm-up (and, for compiled code, the compilation)
    times = []
    for _ in range(runs):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--model-width", type=int, default=16, help="RangeNet width (the flagship's default: 16)")
    parser.add_argument("--model-depth", type=int, default=3)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (its compilation is slow)")
    parser.add_argument("--no-onnx", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    model = ImageToLogits(RangeNet(num_classes=20, width=args.model_width, depth=args.model_depth)).to(device).eval()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(
        f"RangeNet(width={args.model_width}, depth={args.model_depth}) inference on {name}, torch {torch.__version__}"
    )
    print(f"{'input':<18} {'eager ms':>10} {'compile ms':>11} {'x eager':>8} {'onnxrt ms':>10} {'x eager':>8}")
    sessions: dict[int, object] = {}
    compiled = None if args.no_compile else torch.compile(model)
    for width in args.widths:
        for batch in args.batches:
            x = torch.randn(batch, 5, 64, width, device=device)
            with torch.inference_mode():
                eager = median_ms(lambda x=x: model(x), args.runs, sync)
                comp = median_ms(lambda x=x: compiled(x), args.runs, sync) if compiled is not None else None
            ort = None
            if not args.no_onnx:
                session = sessions.get(width) or _onnx_session(model, x, device)
                sessions[width] = session
                feed = {"image": x.cpu().numpy()}
                ort = median_ms(lambda s=session, f=feed: s.run(None, f), args.runs, lambda: None)  # type: ignore[attr-defined]
            row = f"{f'64x{width} batch {batch}':<18} {eager:>10.2f}"
            row += f" {comp:>11.2f} {comp / eager:>8.3f}" if comp is not None else f" {'-':>11} {'-':>8}"
            row += f" {ort:>10.2f} {ort / eager:>8.3f}" if ort is not None else f" {'-':>10} {'-':>8}"
            print(row, flush=True)
    return 0


def _onnx_session(model: torch.nn.Module, x: torch.Tensor, device: torch.device) -> object:
    import onnxruntime as ort

    path = os.path.join(tempfile.mkdtemp(prefix="bench-onnx-"), "model.onnx")
    example = torch.cat([x[:1], x[:1]]).cpu()  # a batch of 2: torch.export specialises a dimension of size 1
    batch_dim = torch.export.Dim("batch")
    torch.onnx.export(model.cpu(), (example,), path, input_names=["image"], output_names=["logits"],
                      dynamic_shapes=({0: batch_dim},), dynamo=True, verbose=False)  # fmt: skip
    model.to(device)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    providers = ["CUDAExecutionProvider"] if device.type == "cuda" else []
    providers = [p for p in providers if p in ort.get_available_providers()] + ["CPUExecutionProvider"]
    return ort.InferenceSession(path, options, providers=providers)


if __name__ == "__main__":
    sys.exit(main())
