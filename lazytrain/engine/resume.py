"""Where a run starts: ``--resume`` from ``last_checkpoint`` (everything, for an exact continuation), or the
weights of ``train.init_checkpoint``, or from scratch."""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

import torch
import yaml
from omegaconf import DictConfig

from .. import comm
from ..checkpoint import Checkpointer, ShapeMismatchError, iterations_done, load_init_weights, read_checkpoint
from ..errors import ConfigError, TrainingError
from ..rng import set_rng_state
from .trainer import Trainer

__all__ = ["config_changes", "report_config_changes", "resume_or_load"]

logger = logging.getLogger(__name__)


def resume_or_load(trainer: Trainer, cfg: DictConfig, resume: bool) -> int:
    """Load the newest checkpoint of ``output_dir`` (with ``resume``: everything, for an exact continuation)
    or ``train.init_checkpoint`` (weights only); return the number of iterations already done (0: from the
    start)."""
    checkpointer = trainer.checkpointer
    assert checkpointer is not None, "the trainer has no checkpointer (build it with build_trainer)"
    if resume:
        loaded = _load_for_resume(checkpointer, trainer)
        if loaded is not None:
            path, extra = loaded
            if int(extra["iteration"]) >= cfg.train.max_iter:
                raise ConfigError(
                    f"--resume: the checkpoint {path} is at iteration {iterations_done(extra)}, past "
                    f"train.max_iter={cfg.train.max_iter}.",
                    hint="Raise train.max_iter to continue, or start a new run (another --output-dir, or --overwrite "
                    "instead of --resume).",
                )
            _restore_rng(extra, cfg)
            _restore_hook_states(trainer, extra.get("hooks") or {})
            _warn_if_the_loader_keeps_no_position(trainer.data_loader)
            report_config_changes(extra.get("config"), trainer.config_yaml)
            done = iterations_done(extra) or 0
            logger.info("Resumed from %s at iteration %d; training continues with iteration %d.", path, done, done + 1)
            return done
        _warn("--resume: no checkpoint in %s; starting from scratch.", checkpointer.save_dir)
    if cfg.train.init_checkpoint:
        t = cfg.train
        model = checkpointer.model
        # the EMA (if any) starts from these weights: its first update copies the model
        load_init_weights(model, t.init_checkpoint, [tuple(pair) for pair in t.init_rename], t.init_strict)
    return 0


def _load_for_resume(checkpointer: Checkpointer, trainer: Trainer) -> Optional[tuple[str, dict[str, Any]]]:
    """``(path, extra)`` of the checkpoint ``last_checkpoint`` names, or of the newest intact one when that
    file is missing or truncated (with a warning); None when the folder has none."""
    named = checkpointer.get_checkpoint_file() if checkpointer.has_checkpoint() else ""
    candidates = ([named] if named else []) + [p for p in checkpointer.intact_checkpoints() if p != named]
    problems: list[str] = []
    checkpointer.strict_shapes = True  # resuming into other shapes would silently re-initialise weights
    try:
        for path in candidates:
            if not os.path.isfile(path):
                problems.append(f"{os.path.basename(path)} does not exist")
                continue
            try:
                extra = checkpointer.load(path)
            except ShapeMismatchError as e:
                raise _shape_error(e, path, trainer.config_yaml) from None
            except (ValueError, KeyError) as e:  # torch's optimizer / scheduler load_state_dict: other parameters
                raise _other_config_error(e, path, trainer.config_yaml) from None
            except TrainingError as e:  # unreadable: truncated by a crash, or not a checkpoint
                problems.append(f"{os.path.basename(path)} cannot be read ({e.message})")
                continue
            if problems:
                _warn("--resume: %s; resuming from the newest intact checkpoint, %s.", "; ".join(problems), path)
            return path, extra
    finally:
        checkpointer.strict_shapes = False
    if problems:
        raise TrainingError(
            f"--resume: no checkpoint in {checkpointer.save_dir} can be loaded: {'; '.join(problems)}.",
            hint="Start without --resume (or from weights with train.init_checkpoint=...).",
        )
    return None


def _warn_if_the_loader_keeps_no_position(loader: Any) -> None:
    """A loader without ``state_dict`` / ``load_state_dict`` (a plain DataLoader) is not in the checkpoint: it
    starts a new pass, so the resume is not exact. Said once, by rank 0 (the same on every rank)."""
    if hasattr(loader, "state_dict") and hasattr(loader, "load_state_dict"):
        return
    if comm.is_main_process():
        logger.warning(
            "--resume: the train loader (%s) keeps no position in checkpoints: it starts a new pass over the "
            "data (a new shuffle, epoch 0), so the batches differ from an uninterrupted run. For an exact resume, "
            "use lazytrain.data.build_train_loader (dataloader.train = L(build_train_loader)(dataset=..., "
            "batch_size=...)) or give the loader state_dict() and load_state_dict().",
            type(loader).__name__,
        )


def _restore_hook_states(trainer: Trainer, states: dict[str, Any]) -> None:
    """Hooks with their own state (the best metric so far, ...) continue where the checkpoint left them."""
    for hook in trainer.hooks:
        state = states.get(type(hook).__name__)
        if state is not None and hasattr(hook, "load_state_dict"):
            hook.load_state_dict(state)


def _restore_rng(extra: dict[str, Any], cfg: DictConfig) -> None:
    rng_states = extra.get("rng_states") or []
    if len(rng_states) == comm.get_world_size():
        set_rng_state(rng_states[comm.get_rank()])
    else:
        _warn(
            "the checkpoint was written by %s, this run has %d: %s. RNG states are not restored and each "
            "process reads other samples, so random draws (dropout, augmentations) and the batches differ from an "
            "uninterrupted run.",
            _processes(len(rng_states)),
            comm.get_world_size(),
            _global_batch_change(extra.get("config"), cfg, len(rng_states), comm.get_world_size()),
        )
    if extra.get("num_threads") not in (None, torch.get_num_threads()):
        _warn(
            "the checkpoint was written with %s CPU threads and this run uses %d: CPU kernels may round "
            "differently, so losses can differ in the last bits from an uninterrupted run.",
            extra["num_threads"],
            torch.get_num_threads(),
        )


def _warn(message: str, *args: Any) -> None:
    # every rank reads the same checkpoint and config: one rank says it (not one line per rank)
    if comm.is_main_process():
        logger.warning(message, *args)


def _processes(n: int) -> str:
    return f"{n} process" if n == 1 else f"{n} processes"


def _global_batch_change(saved_yaml: Optional[str], cfg: DictConfig, saved_procs: int, procs: int) -> str:
    """How the samples per optimizer step change with the number of processes (the batch size is per
    process): ``the global batch size changes from 32 to 64 samples per step (...)``."""
    from omegaconf import OmegaConf

    batch = OmegaConf.select(cfg, "dataloader.train.batch_size", default=None)
    accum = int(cfg.train.grad_accum)
    saved = _flat(_parse(saved_yaml)) if saved_yaml else {}
    saved_batch = saved.get("dataloader.train.batch_size", batch)
    saved_accum = saved.get("train.grad_accum", accum)
    if not all(isinstance(v, int) for v in (batch, saved_batch, saved_accum)):  # a batch size the config computes
        return (
            f"the global batch size (samples per optimizer step) changes by a factor of {procs}/{saved_procs}, "
            "since dataloader.train.batch_size is per process"
        )
    return (
        f"the global batch size changes from {saved_batch * saved_accum * saved_procs} to {batch * accum * procs} "
        f"samples per optimizer step (dataloader.train.batch_size={batch} per process x train.grad_accum={accum} x "
        f"{_processes(procs)}), while optimizer.lr and the schedule stay as they were"
    )


def config_changes(saved_yaml: Optional[str], current_yaml: str) -> dict[str, tuple[Any, Any]]:
    """``{key: (value in the checkpoint's config, value now)}`` for every leaf that differs."""
    if not saved_yaml:
        return {}
    saved, current = _flat(_parse(saved_yaml)), _flat(_parse(current_yaml))
    missing = object()
    return {
        key: (saved.get(key, missing), current.get(key, missing))
        for key in sorted(set(saved) | set(current))
        if saved.get(key, missing) != current.get(key, missing)
    }


# what a change of these keys means for a resumed run (the first prefix that matches)
_CHANGE_NOTES = (
    (
        "optimizer.",
        "the optimizer's state comes from the checkpoint, so its param groups keep the values it was "
        "saved with; to apply new optimizer settings, start a new run with train.init_checkpoint=<the checkpoint>",
    ),
    (
        "lr_multiplier.",
        "the LR multiplier's state comes from the checkpoint; the new schedule applies only where "
        "it is recomputed from the fraction of training done",
    ),
    (
        "train.max_iter",
        "the LR schedule follows the fraction of training done, so from here on it is stretched "
        "over the new length (the LR jumps to the new schedule's value now)",
    ),
    (
        "dataloader.",
        "the batches differ from those of an uninterrupted run (an exact resume needs the same data settings)",
    ),
    ("train.seed", "the data order and random draws differ from an uninterrupted run"),
)


def report_config_changes(saved_yaml: Optional[str], current_yaml: str) -> None:
    """Warn about every key whose value changed since the checkpoint was written, with what it means."""
    changes = config_changes(saved_yaml, current_yaml)
    changes.pop("train.output_dir", None)  # resuming in another folder is fine
    if not changes:
        return
    lines = [f"  {key}: {_show(old)} -> {_show(new)}" for key, (old, new) in changes.items()]
    notes = []
    for prefix, note in _CHANGE_NOTES:
        if any(key.startswith(prefix) for key in changes):
            notes.append(f"  {prefix.rstrip('.')}: {note}")
    _warn(
        "--resume: the config changed since the checkpoint was written:\n%s%s",
        "\n".join(lines),
        ("\n" + "\n".join(notes)) if notes else "",
    )


def _shape_error(error: ShapeMismatchError, path: str, current_yaml: str) -> ConfigError:
    """One paragraph: the config keys that changed the model, and the first weights that no longer fit."""
    changed = {k: v for k, v in config_changes(error.saved_config, current_yaml).items() if k.startswith("model.")}
    keys = ", ".join(f"{k} ({_show(old)} -> {_show(new)})" for k, (old, new) in changed.items())
    because = f"the config changed {keys} since {path} was written, and " if keys else f"{path}: "
    return ConfigError(
        f"--resume: {because}{error.message[0].lower()}{error.message[1:]}",
        hint="Resume with the model settings the checkpoint was trained with (its config.yaml has them), or start "
        "a new run from the weights that fit with train.init_checkpoint=<the checkpoint>.",
    )


def _other_config_error(error: Exception, path: str, current_yaml: str) -> ConfigError:
    """One paragraph for a checkpoint whose optimizer (or scheduler) state does not fit this config's: the run
    in the folder was trained with another model or optimizer. Names a few of the config keys that differ."""
    saved = read_checkpoint(path).get("config")
    changes = config_changes(saved, current_yaml)
    changes.pop("train.output_dir", None)
    first = [k for k in changes if k.startswith(("model.", "optimizer."))] or list(changes)
    shown = ", ".join(f"{k} ({_show(changes[k][0])} -> {_show(changes[k][1])})" for k in first[:4])
    more = f" and {len(changes) - min(4, len(first))} more" if len(changes) > min(4, len(first)) else ""
    differs = f" The config differs from that run's in {shown}{more}." if shown else ""
    folder = os.path.dirname(os.path.dirname(path))
    return ConfigError(
        f"--resume: {folder} holds a run of another config: its checkpoint {os.path.basename(path)} was trained "
        f"with another model or optimizer than this config builds (torch: {str(error).strip()}).{differs}",
        hint=f"Resume with the config that run was trained with ({os.path.join(folder, 'config.yaml')}), train "
        f"this config in a new folder (--output-dir=DIR), or start from that run's weights with "
        f"train.init_checkpoint={path} (the layers that fit are loaded).",
    )


def _parse(text: str) -> Any:
    return yaml.load(text, Loader=_AnyTagLoader)


class _AnyTagLoader(yaml.SafeLoader):
    pass


_AnyTagLoader.add_multi_constructor("", lambda loader, suffix, node: f"{suffix} {getattr(node, 'value', '')}")


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): tree}


def _show(value: Any) -> str:
    return "(absent)" if type(value) is object else repr(value)
