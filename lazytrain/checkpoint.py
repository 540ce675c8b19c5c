"""Checkpoints that survive crashes: fvcore's Checkpointer with atomic writes, keep-last-N and clear errors;
the weights of a checkpoint or an authors' release loaded for fine-tuning or inference."""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Callable, Sequence
from typing import Any, Optional

import torch
from fvcore.common.checkpoint import Checkpointer as _FvcoreCheckpointer

from .errors import ConfigError, TrainingError
from .fileio import TMP_PREFIX, atomic_write, describe_write_error, os_error_in
from .weights_fit import check_weights_fit

__all__ = [
    "Checkpointer",
    "ShapeMismatchError",
    "atomic_save",
    "iterations_done",
    "load_inference_weights",
    "load_init_weights",
    "read_checkpoint",
    "read_model_weights",
]


def atomic_save(obj: Any, path: str) -> None:
    """``torch.save`` through :func:`lazytrain.fileio.atomic_write`: a reader (or a crash) never sees a
    half-written ``path``."""
    atomic_write(path, lambda f: torch.save(obj, f))


class Checkpointer(_FvcoreCheckpointer):
    """Saves ``model`` and every checkpointable (anything with ``state_dict`` / ``load_state_dict``).

    Writes are atomic and ``last_checkpoint`` is replaced only after its file is complete;
    :meth:`remove_old` keeps the newest periodic checkpoints. Loading reports missing and unexpected keys
    (fvcore's report) and names the file when it cannot be read.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        save_dir: str = "",
        *,
        save_to_disk: bool = True,
        **checkpointables: Any,
    ) -> None:
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.logger = logging.getLogger(__name__)  # fvcore's messages ("Saving checkpoint to ...") under our name
        self.strict_shapes = False  # True (for --resume): a weight of another shape is an error, not skipped
        if save_dir and save_to_disk:
            os.makedirs(save_dir, exist_ok=True)
            for stale in glob.glob(os.path.join(save_dir, TMP_PREFIX + "*")):
                os.remove(stale)  # left by a run killed while it was writing

    def save(self, name: str, tag_last: bool = True, **extra: Any) -> None:
        """Write ``<save_dir>/<name>.pth`` with the model, the checkpointables and ``extra``; then point
        ``last_checkpoint`` at it (unless ``tag_last=False``, as for ``model_best``)."""
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        data.update(extra)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", path)
        try:
            atomic_save(data, path)
            if tag_last:
                self.tag_last_checkpoint(basename)
        except (OSError, RuntimeError) as e:
            cause = os_error_in(e)
            if cause is None:
                raise
            raise TrainingError(
                describe_write_error(cause, path, _tensor_bytes(data)) + ".", hint=self.write_error_hint()
            ) from e

    def write_error_hint(self) -> str:
        """What to do after a write of this run failed (a full disk): resume from the checkpoint
        ``last_checkpoint`` names, when there is one."""
        last = self.get_checkpoint_file() if self.save_dir and self.has_checkpoint() else ""
        if last and os.path.isfile(last):
            return (
                f"The last checkpoint, {last}, and last_checkpoint are intact: free some space (or move "
                "train.output_dir elsewhere) and continue with --resume."
            )
        return "No checkpoint was written yet: free some space (or choose another --output-dir) and start again."

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        atomic_write(os.path.join(self.save_dir, "last_checkpoint"), last_filename_basename)

    def periodic_checkpoints(self) -> list[str]:
        """The ``model_<iter>.pth`` files, oldest first."""
        files = glob.glob(os.path.join(self.save_dir, "model_[0-9]*.pth"))
        return sorted(files, key=lambda f: int(os.path.basename(f)[len("model_") : -len(".pth")]))

    def remove_old(self, keep_last: int) -> None:
        """Delete all but the newest ``keep_last`` periodic checkpoints (0: keep all); the one
        ``last_checkpoint`` names and any other file (``model_final.pth``) always stay."""
        if keep_last <= 0 or not self.save_to_disk:
            return
        last = self.get_checkpoint_file()
        for path in self.periodic_checkpoints()[:-keep_last]:
            if os.path.abspath(path) != os.path.abspath(last):
                os.remove(path)

    def intact_checkpoints(self) -> list[str]:
        """Every ``*.pth`` in ``save_dir`` (never a temp file of an unfinished write), newest first."""
        files = glob.glob(os.path.join(self.save_dir, "*.pth"))
        return sorted(files, key=os.path.getmtime, reverse=True)

    def _load_model(self, checkpoint: Any) -> Any:
        if self.strict_shapes:
            model_state = self.model.state_dict()
            mismatched = [
                (key, tuple(value.shape), tuple(model_state[key].shape))
                for key, value in checkpoint["model"].items()
                if key in model_state and tuple(value.shape) != tuple(model_state[key].shape)
            ]
            if mismatched:
                raise ShapeMismatchError(mismatched, saved_config=checkpoint.get("config"))
        return super()._load_model(checkpoint)

    def load(self, path: str, checkpointables: Optional[list[str]] = None) -> dict[str, Any]:
        if path and not os.path.isfile(path):
            raise ConfigError(f"checkpoint '{path}' does not exist.", hint="Check the path given to --weights.")
        return super().load(path, checkpointables)

    def _load_file(self, f: str) -> dict[str, Any]:
        return read_checkpoint(f)


def read_checkpoint(f: str) -> dict[str, Any]:
    """The dict a checkpoint file holds (a bare state_dict becomes ``{"model": ...}``), on the CPU; a file
    that cannot be read, or that holds no state dict, is a TrainingError naming it."""
    data = _torch_load(f)
    checkpoint = _as_checkpoint(data)
    if checkpoint is None:
        raise TrainingError(_unknown_format(f, _what_file_holds(data)))
    return checkpoint


def _torch_load(f: str) -> Any:
    try:
        # our own checkpoints hold RNG states and the config, which weights_only cannot load
        return torch.load(f, map_location="cpu", weights_only=False)
    except Exception as e:
        raise TrainingError(
            f"cannot read checkpoint '{f}': {type(e).__name__}: {e}",
            hint="The file is truncated or not a PyTorch checkpoint; use another one.",
        ) from e


def _as_checkpoint(data: Any) -> Optional[dict[str, Any]]:
    """``data`` as lazytrain's checkpoint dict (a bare state_dict becomes ``{"model": ...}``); None when it is
    neither."""
    if (
        isinstance(data, dict)
        and "model" not in data
        and data
        and all(isinstance(v, torch.Tensor) for v in data.values())
    ):
        return {"model": data}
    return data if isinstance(data, dict) and "model" in data else None


RELEASE = "release"  # the key of read_model_weights's answer naming the reader of an authors' release


def read_model_weights(model: torch.nn.Module, path: str, key: Optional[str] = None) -> dict[str, Any]:
    """The weights at ``path`` for ``model`` as ``{"model": state_dict, ...}``, whatever their format.

    First the authors' release format of the model's class: ``read_release_weights(path)``, a classmethod
    that a model class may define (the class is found inside DDP's, torch.compile's and EMA's wrappers), returns
    the state dict in the model's own key names, or None when ``path`` is not in that format; the answer then
    also holds ``"release"``: the reader's name. Else a lazytrain checkpoint (or a bare state dict). A path that
    does not exist, or one in no known format, is one paragraph naming what it holds and the formats accepted
    (a ConfigError naming ``key`` when given, e.g. ``train.init_checkpoint``)."""
    hint = None if key else "Check the path given to --weights."
    if not os.path.exists(path):
        raise ConfigError(f"checkpoint '{path}' does not exist.", key=key, hint=hint)
    reader = release_reader(model)
    if reader is not None:
        state = reader(path)
        if state is not None:
            return {"model": state, RELEASE: reader.__qualname__}
    if os.path.isdir(path):
        names = sorted(os.listdir(path))
        found = f"a folder holding {_few(names, 6)}" if names else "an empty folder"
        raise ConfigError(_unknown_format(path, found, reader), key=key, hint=hint)
    data = _torch_load(path)
    checkpoint = _as_checkpoint(data)
    if checkpoint is None:
        raise ConfigError(_unknown_format(path, _what_file_holds(data), reader), key=key, hint=hint)
    return checkpoint


def release_reader(model: torch.nn.Module) -> Optional[Callable[[str], Optional[dict[str, torch.Tensor]]]]:
    """The ``read_release_weights`` classmethod of the model's class (inside DDP's, torch.compile's and EMA's
    wrappers), or None when the class has none."""
    reader = getattr(type(_plain_module(model)), "read_release_weights", None)
    return reader if callable(reader) else None


def _plain_module(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside DDP (``module``), torch.compile (``_orig_mod``) and EMA (``AveragedModel.module``)."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.optim.swa_utils.AveragedModel)):
            inner = model.module
        if not isinstance(inner, torch.nn.Module):
            return model
        model = inner


def _what_file_holds(data: Any) -> str:
    if isinstance(data, dict):
        keys = [repr(k) for k in data][:50]
        return f"a dict with the top-level keys {_few(keys, 6)}" if keys else "an empty dict"
    return f"a {type(data).__name__}, not a dict"


def _unknown_format(path: str, found: str, reader: Optional[Callable[..., Any]] = None) -> str:
    """One paragraph: ``path`` holds ``found``, which is in none of the formats accepted (listed)."""
    accepted = "a lazytrain checkpoint (a dict with 'model', as lazytrain train writes it) or a bare state dict"
    if reader is not None:
        doc = (reader.__doc__ or "").strip().split("\n\n")[0]
        what = " ".join(doc.split()) or "the format it reads"
        accepted += f", or what {reader.__qualname__} reads: {what}"
    return f"'{path}' is in no weights format lazytrain knows: it is {found}. Accepted: {accepted}" + (
        "" if accepted.endswith(".") else "."
    )


class ShapeMismatchError(TrainingError):
    """Weights of the checkpoint have other shapes than the model's (``mismatched``: key, saved, model)."""

    def __init__(
        self, mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]], saved_config: Optional[str] = None
    ) -> None:
        self.mismatched = mismatched
        self.saved_config = saved_config  # the resolved config the checkpoint was trained with
        shown = "; ".join(f"{k}: {saved} in the checkpoint, {now} in the model" for k, saved, now in mismatched[:3])
        more = f" (and {len(mismatched) - 3} more)" if len(mismatched) > 3 else ""
        super().__init__(f"the checkpoint's weights do not fit the model: {shown}{more}.")


def load_init_weights(
    model: torch.nn.Module,
    path: str,
    rename: Sequence[Sequence[str]] = (),
    strict: bool = False,
) -> dict[str, list[str]]:
    """Load the weights of checkpoint ``path`` into ``model`` for fine-tuning (``train.init_checkpoint``).

    Keys are renamed by each ``(regex, replacement)`` of ``rename`` in turn (``module.`` of DDP is dropped
    first); tensors of another shape are skipped with a warning. Returns ``{"loaded", "missing",
    "unexpected", "mismatched"}`` key lists and logs them as a short table. ``strict``: any key not loaded is
    a ConfigError naming them. A checkpoint that shares no key with the model is a ConfigError too."""
    state = read_model_weights(model, path, key="train.init_checkpoint")["model"]
    model = _plain_module(model)  # a release's keys are the plain model's
    renamed: dict[str, Any] = {}
    for key, value in state.items():
        key = key[len("module.") :] if key.startswith("module.") else key
        for pattern, replacement in rename:
            key = re.sub(pattern, replacement, key)
        renamed[key] = value
    own = model.state_dict()
    loadable = {k: v for k, v in renamed.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    report = {
        "loaded": sorted(loadable),
        "missing": sorted(k for k in own if k not in renamed),
        "unexpected": sorted(k for k in renamed if k not in own),
        "mismatched": [
            f"{k}: {tuple(v.shape)} in the checkpoint, {tuple(own[k].shape)} in the model"
            for k, v in sorted(renamed.items())
            if k in own and k not in loadable
        ],
    }
    if not loadable:
        raise ConfigError(
            f"'{path}' shares no weights with the model: its keys look like {_few(sorted(renamed))}, the "
            f"model's like {_few(sorted(own))}. It is a checkpoint of another architecture, or its keys need "
            "renaming.",
            key="train.init_checkpoint",
            hint='Map them with train.init_rename=[["^backbone\\.", "encoder."]] (regex, replacement).',
        )
    bad = {name: keys for name, keys in report.items() if name != "loaded" and keys}
    if strict and bad:
        what = "; ".join(f"{name}: {_few(keys)}" for name, keys in bad.items())
        raise ConfigError(
            f"'{path}' does not match the model exactly ({what}).",
            key="train.init_checkpoint",
            hint="Fix the keys with train.init_rename, or allow a partial load with train.init_strict=False.",
        )
    model.load_state_dict(loadable, strict=False)
    rows = [
        f"  {name:<10} {len(keys):>5}  {_few(keys) if name != 'loaded' else ''}".rstrip()
        for name, keys in report.items()
    ]
    log = logging.getLogger(__name__)
    log.info("Loaded %d of %d model tensors from %s:\n%s", len(loadable), len(own), path, "\n".join(rows))
    if report["mismatched"]:
        log.warning("skipped %d tensors of another shape: %s", len(report["mismatched"]), _few(report["mismatched"]))
    return report


def load_inference_weights(model: torch.nn.Module, path: str, use_ema: bool = True) -> dict[str, Any]:
    """Load ``path``'s weights into ``model`` for evaluation, export or prediction: its EMA of the weights
    when the checkpoint has one (``train.ema``) and ``use_ema``, else the trained weights. Returns what else
    the checkpoint holds (``iteration``, ``config``, ...) plus ``"weights": "ema" | "model"``. Weights that
    do not fit the model (missing, unexpected, of another shape) are a ConfigError naming them; keys the
    model's class lists in ``optional_weight_keys`` may be absent."""
    extra = read_model_weights(model, path)  # map_location=cpu
    log = logging.getLogger(__name__)
    if RELEASE in extra:
        _load_release(_plain_module(model), path, extra.pop("model"))
        log.info("Loaded the authors' release %s (read by %s).", path, extra[RELEASE])
        return {**extra, "weights": "model"}
    checkpointer = Checkpointer(model, save_to_disk=False)
    log.info("Loading weights from %s", path)
    fit = checkpointer._load_model(extra)  # pops "model"; a mis-shaped tensor is skipped, so check all
    check_weights_fit(_plain_module(model), path, fit.missing_keys, fit.unexpected_keys, fit.incorrect_shapes)
    ema = extra.pop("ema", None)
    if ema is not None and use_ema:
        model.load_state_dict({k[len("module.") :]: v for k, v in ema.items() if k.startswith("module.")})
        log.info("Using the EMA weights of %s (--no-ema: the trained weights).", path)
        extra["weights"] = "ema"
    else:
        extra["weights"] = "model"
    return extra


def _load_release(model: torch.nn.Module, path: str, state: dict[str, torch.Tensor]) -> None:
    """Load an authors' release into ``model`` exactly: every key, every shape, or one paragraph naming the
    differences (a release for another variant of the model: depth, number of classes)."""
    own = model.state_dict()
    problems = []
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    mismatched = [
        f"{k}: {tuple(v.shape)} in the release, {tuple(own[k].shape)} in the model"
        for k, v in sorted(state.items())
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    for name, keys in (("missing", missing), ("unexpected", unexpected), ("of another shape", mismatched)):
        if keys:
            problems.append(f"{len(keys)} {name} ({_few(keys)})")
    if problems:
        raise ConfigError(
            f"the authors' release '{path}' does not fit the model {type(model).__name__}: weights "
            + "; ".join(problems)
            + ".",
            hint="It was trained for another variant (depth, number of classes): set the model's config to match.",
        )
    model.load_state_dict(state)


def iterations_done(extra: dict[str, Any]) -> Optional[int]:
    """How many iterations the checkpoint's training had done: what users call its iteration (its stored
    ``iteration`` + 1, see :mod:`lazytrain.iterations`); None when it has none (a bare state dict)."""
    index = extra.get("iteration")
    return int(index) + 1 if isinstance(index, int) else None


def _few(items: Sequence[str], n: int = 3) -> str:
    shown = ", ".join(items[:n])
    return shown + (f" (and {len(items) - n} more)" if len(items) > n else "")


def _tensor_bytes(obj: Any) -> int:
    """About how many bytes ``torch.save(obj)`` writes: the tensors' storage (the rest is small)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0
