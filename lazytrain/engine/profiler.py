"""ProfilerHook: a torch.profiler trace of a window of iterations, for TensorBoard's profiler and Perfetto."""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

import torch

from .. import comm
from .hook_api import HookBase

__all__ = ["ProfilerHook"]

logger = logging.getLogger(__name__)


class ProfilerHook(HookBase):
    """Profiles ``num_iters`` iterations after the first ``start_iter`` ones, that is iterations
    ``start_iter + 1 .. start_iter + num_iters`` (CPU, and CUDA when the run uses it)
    with ``torch.profiler``; writes the trace under ``output_dir/profile/`` (``*.pt.trace.json``: TensorBoard's
    profiler plugin and https://ui.perfetto.dev open it) and logs the operators with the most self time.
    Every rank profiles; each writes its own trace file."""

    def __init__(self, start_iter: int, num_iters: int, output_dir: str, row_limit: int = 15) -> None:
        self.start_iter, self.num_iters, self.row_limit = start_iter, num_iters, row_limit
        self.output_dir = os.path.join(output_dir, "profile")
        self._profiler: Optional[Any] = None

    def before_step(self) -> None:
        if self.trainer.iter == self.start_iter and self._profiler is None:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.device(self.trainer.device).type == "cuda":
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self._profiler = torch.profiler.profile(activities=activities, record_shapes=True)
            self._profiler.__enter__()

    def after_step(self) -> None:
        if self._profiler is not None and self.trainer.iter == self.start_iter + self.num_iters - 1:
            self._finish()

    def after_train(self) -> None:
        if self._profiler is not None:  # training ended inside the window
            self._finish()

    def _finish(self) -> None:
        profiler, self._profiler = self._profiler, None
        assert profiler is not None
        profiler.__exit__(None, None, None)
        os.makedirs(self.output_dir, exist_ok=True)
        first, last = self._window()
        path = os.path.join(self.output_dir, f"rank{comm.get_rank()}.iter{first}-{last}.pt.trace.json")
        profiler.export_chrome_trace(path)
        cuda = torch.device(self.trainer.device).type == "cuda"
        table = profiler.key_averages().table(
            sort_by="self_cuda_time_total" if cuda else "self_cpu_time_total", row_limit=self.row_limit
        )
        logger.info(
            "Profiled iterations %d-%d: trace %s (TensorBoard: tensorboard --logdir %s; or https://ui.perfetto.dev)."
            "\nTop operators by self time:\n%s",
            first,
            last,
            path,
            os.path.dirname(self.output_dir),
            table,
        )

    def _window(self) -> tuple[int, int]:
        """The first and last iteration profiled, as users count them (the first iteration is 1)."""
        return self.start_iter + 1, self.start_iter + self.num_iters

    def __repr__(self) -> str:
        first, last = self._window()
        return f"ProfilerHook(iterations {first}-{last} -> {self.output_dir})"
