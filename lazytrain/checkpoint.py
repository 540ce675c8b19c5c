"""Checkpoints that survive crashes: fvcore's Checkpointer with atomic writes, keep-last-N and clear errors;
RNG state capture for exact resume."""

from __future__ import annotations

import glob
import os
import random
import tempfile
from typing import Any, Optional

import numpy as np
import torch
from fvcore.common.checkpoint import Checkpointer as _FvcoreCheckpointer

from .errors import ConfigError, TrainingError

__all__ = ["Checkpointer", "atomic_save", "get_rng_state", "set_rng_state"]

_TMP_PREFIX = ".tmp-"


def atomic_save(obj: Any, path: str) -> None:
    """``torch.save`` to a temp file in the same folder, fsync, then ``os.replace``: a reader (or a crash) never
    sees a half-written ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=_TMP_PREFIX, suffix="-" + os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(obj, (bytes, str)):
                f.write(obj.encode() if isinstance(obj, str) else obj)
            else:
                torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(folder)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a folder; the rename is still atomic
    finally:
        os.close(fd)


class Checkpointer(_FvcoreCheckpointer):
    """Saves ``model`` and every checkpointable (anything with ``state_dict`` / ``load_state_dict``).

    Writes are atomic, ``last_checkpoint`` is replaced only after its file is complete, and only the newest
    ``keep_last`` periodic checkpoints stay (``model_final`` is always kept). Loading reports missing and
    unexpected keys (fvcore's report) and names the file when it cannot be read.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        save_dir: str = "",
        *,
        keep_last: Optional[int] = None,
        save_to_disk: bool = True,
        **checkpointables: Any,
    ) -> None:
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.keep_last = keep_last
        if save_dir and save_to_disk:
            os.makedirs(save_dir, exist_ok=True)
            for stale in glob.glob(os.path.join(save_dir, _TMP_PREFIX + "*")):
                os.remove(stale)  # left by a run killed while it was writing

    def save(self, name: str, **extra: Any) -> None:
        """Write ``<save_dir>/<name>.pth`` with the model, the checkpointables and ``extra``."""
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        data.update(extra)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", path)
        atomic_save(data, path)
        self.tag_last_checkpoint(basename)
        self._remove_old()

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        atomic_save(last_filename_basename, os.path.join(self.save_dir, "last_checkpoint"))

    def periodic_checkpoints(self) -> list[str]:
        """The ``model_<iter>.pth`` files, oldest first."""
        files = glob.glob(os.path.join(self.save_dir, "model_[0-9]*.pth"))
        return sorted(files, key=lambda f: int(os.path.basename(f)[len("model_") : -len(".pth")]))

    def _remove_old(self) -> None:
        if not self.keep_last or self.keep_last <= 0:
            return
        last = self.get_checkpoint_file()
        for path in self.periodic_checkpoints()[: -self.keep_last]:
            if os.path.abspath(path) != os.path.abspath(last):
                os.remove(path)

    def load(self, path: str, checkpointables: Optional[list[str]] = None) -> dict[str, Any]:
        if path and not os.path.isfile(path):
            raise ConfigError(f"checkpoint '{path}' does not exist.", hint="Check the path given to --weights.")
        return super().load(path, checkpointables)

    def _load_file(self, f: str) -> dict[str, Any]:
        try:
            # our own checkpoints hold RNG states and the config, which weights_only cannot load
            data = torch.load(f, map_location="cpu", weights_only=False)
        except Exception as e:
            raise TrainingError(
                f"cannot read checkpoint '{f}': {type(e).__name__}: {e}",
                hint="The file is truncated or not a PyTorch checkpoint; use another one.",
            ) from e
        if isinstance(data, dict) and "model" not in data and all(isinstance(v, torch.Tensor) for v in data.values()):
            data = {"model": data}  # a bare state_dict
        if not isinstance(data, dict) or "model" not in data:
            raise TrainingError(f"checkpoint '{f}' holds no 'model' state dict.")
        return data


def get_rng_state() -> dict[str, Any]:
    """The Python, NumPy, torch and CUDA RNG states of this process. CUDA: the state of this process's own
    device only (a rank uses one GPU), so a resume on a machine with another number of GPUs works."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.random.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.random.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        if isinstance(cuda, (list, tuple)):  # an earlier layout: the states of every visible GPU
            index = torch.cuda.current_device()
            if index >= len(cuda):
                return
            cuda = cuda[index]
        torch.cuda.set_rng_state(cuda)
