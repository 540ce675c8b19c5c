"""The entry points the CLI and the launcher call in every process: :func:`train_main` and
:func:`evaluate_main`, and the output folder they share."""

from __future__ import annotations

import copy
import logging
import os
import shlex
import sys
from typing import Any, Optional

from omegaconf import DictConfig

from .. import comm
from ..checkpoint import iterations_done, load_inference_weights
from ..config import LazyConfig
from ..config.lazy_config import resolved_copy
from ..errors import ConfigError, TrainingError
from ..evaluation import flatten_results, format_results, inference_on_dataset
from ..fileio import describe_write_error
from ..invocation import invoked_config_path, lazytrain_arguments
from .build import build_evaluation, build_model, build_trainer, resolve_device, seed_everything
from .eval_record import EvalDestination, eval_destination, write_eval_record
from .logger import setup_logger
from .memory import inference_autocast
from .resume import resume_or_load
from .run_folder import clear_run, refuse_rerun
from .run_lock import refuse_if_locked, run_lock
from .settings import check_required
from .trainer import Trainer

__all__ = ["evaluate_main", "prepare_output_dir", "save_run_config", "train_main"]

logger = logging.getLogger(__name__)


def prepare_output_dir(cfg: DictConfig) -> None:
    """Create ``output_dir`` and the logger (rank 0 writes log.txt). The run's ``config.yaml`` is written
    by :func:`save_run_config` once training has started, never by eval, predict, export or analyze."""
    _open_log_folder(
        cfg.train.output_dir, "Free some space, or choose another folder with --output-dir.", key="train.output_dir"
    )


def save_run_config(cfg: DictConfig) -> None:
    """Write the resolved config to ``output_dir/config.yaml`` (atomically, rank 0): the record of how the
    run was trained. Called only after the trainer was built and its weights loaded, so a run that fails at
    start-up (a wrong ``dataset.root``, a checkpoint of another config) leaves the earlier record as it was."""
    if not comm.is_main_process():
        return
    path = os.path.join(cfg.train.output_dir, "config.yaml")
    try:
        LazyConfig.save(resolved_copy(cfg), path)
    except OSError as e:
        raise TrainingError(
            describe_write_error(e, path) + ".",
            key="train.output_dir",
            hint="Free some space, or choose another folder with --output-dir.",
        ) from e
    logger.info("Config saved to %s", path)


def train_main(
    cfg: DictConfig, resume: bool = False, eval_only: bool = False, overwrite: bool = False
) -> dict[str, Any]:
    """Train (or with ``eval_only`` only evaluate) the config. Returns, after training, the newest
    ``(value, iteration)`` of every scalar the run put (losses, lr, evaluation results; ``iteration`` as in
    metrics.jsonl: N after N iterations); with ``eval_only``, the evaluator's results.

    A folder that holds a run is refused unless ``resume`` (continue it) or ``overwrite`` (clear it first)."""
    check_required(cfg)
    if resume and overwrite:
        raise ConfigError(
            "--resume continues the run in train.output_dir and --overwrite deletes it: give one of them."
        )
    out = cfg.train.output_dir
    if eval_only or not comm.is_main_process():  # the other ranks write nothing of the run's record
        return _train(cfg, resume, eval_only, [])
    refuse_if_locked(out)  # a run training there now is named, before what it has written so far
    if not (resume or overwrite):
        refuse_rerun(out)
    with run_lock(out, _command()) as took_over:
        notes = [took_over] if took_over else []
        if overwrite:
            cleared = clear_run(out)
            if cleared:
                notes.append(f"--overwrite: removed the earlier run's {', '.join(cleared)} from {out}.")
        return _train(cfg, resume, eval_only, notes)


def _train(cfg: DictConfig, resume: bool, eval_only: bool, notes: list[str]) -> dict[str, Any]:
    prepare_output_dir(cfg)
    for note in notes:  # what happened to the folder before the log existed
        logger.info("%s", note)
    _log_versions_and_processes()
    trainer = build_trainer(cfg)
    _log_run(cfg, trainer)
    start_iter = resume_or_load(trainer, cfg, resume)
    if eval_only:
        if start_iter == 0 and not cfg.train.init_checkpoint:
            logger.warning("--eval-only with no checkpoint loaded: evaluating freshly initialised weights.")
        trainer.iter = trainer.start_iter = start_iter
        return trainer.test()
    if resume and start_iter == cfg.train.max_iter:  # a finished run: evaluating and saving again adds nothing
        assert trainer.checkpointer is not None
        logger.info(
            "--resume: nothing left to train: %s is at iteration %d, train.max_iter. To train longer, raise it: "
            "train.max_iter=%d --resume.",
            trainer.checkpointer.get_checkpoint_file(),
            start_iter,
            2 * start_iter,
        )
        return {}
    save_run_config(cfg)
    trainer.train(start_iter, cfg.train.max_iter)
    if comm.is_main_process():
        _log_where_things_are(cfg)
    latest = trainer.storage.latest() if trainer.storage else {}
    return {name: (value, index + 1) for name, (value, index) in latest.items()}


def _command() -> str:
    args = lazytrain_arguments()
    return shlex.join(["lazytrain", *args]) if args is not None else shlex.join(sys.argv)


def _log_versions_and_processes() -> None:
    import platform

    import torch

    from .. import __version__

    logger.info("lazytrain %s, torch %s, Python %s", __version__, torch.__version__, platform.python_version())
    if comm.get_world_size() > 1:
        logger.info("Process group: %d processes, backend %s.", comm.get_world_size(), comm.get_backend())
    else:
        logger.info("1 process, no process group.")


def _log_run(cfg: DictConfig, trainer: Trainer) -> None:
    import torch

    device = trainer.device
    if device.type == "cuda":
        where = f"{device} ({torch.cuda.get_device_name(device)})"
    else:
        where = f"cpu ({torch.get_num_threads()} threads)"
    out = cfg.train.output_dir
    logger.info("Device %s; output in %s", where, out)
    loaders = (("train", trainer.data_loader), ("test", trainer.test_loader))
    sizes = [f"{name} {_size(loader)}" for name, loader in loaders if loader is not None]
    logger.info("Data: %s", ", ".join(sizes))
    logger.info("Hooks: %s", ", ".join(repr(h) for h in trainer.hooks))


def _size(loader: Any) -> str:
    dataset = getattr(loader, "dataset", None)
    try:
        return f"{len(dataset)} samples" if dataset is not None else f"{len(loader)} batches"
    except TypeError:
        return "(size unknown)"


def _log_where_things_are(cfg: DictConfig) -> None:
    """The end of a run: where its files are and the commands that come next."""
    out = cfg.train.output_dir
    checkpoints = os.path.join(out, "checkpoints")
    final = os.path.join(checkpoints, "model_final.pth")
    lines = [
        f"  log          {os.path.join(out, 'log.txt')}",
        f"  metrics      {os.path.join(out, 'metrics.jsonl')} (exact values; the terminal shows medians)",
        f"  TensorBoard  tensorboard --logdir {os.path.dirname(os.path.abspath(out))}",
    ]
    if os.path.isfile(final):
        lines.append(f"  checkpoint   {final}")
    best = os.path.join(checkpoints, "model_best.pth")
    if os.path.isfile(best):
        lines.append(f"  best         {best}")
    config = invoked_config_path() or "CONFIG"
    if os.path.isfile(final):
        lines.append(f"  next         lazytrain eval {config} --weights {final}")
        if cfg.get("export") is not None:
            lines.append(f"               lazytrain export {config} --weights {final}")
    logger.info("Training done. Where things are:\n%s", "\n".join(lines))


def evaluate_main(
    cfg: DictConfig, weights: str, use_ema: bool = True, destination: Optional[EvalDestination] = None
) -> dict[str, Any]:
    """Load ``weights`` (their EMA when the checkpoint has one and ``use_ema``) into the config's model and
    evaluate it; results go to the log and to ``destination`` (default: the ``eval/`` folder of the run the
    weights came from, else of ``train.output_dir``: see :func:`eval_destination`), with its log.txt and the
    eval command's config.yaml. Nothing is written in ``train.output_dir`` otherwise, nor over a run's record."""
    check_required(cfg, ("model",))
    if cfg.get("evaluator") is None:
        raise ConfigError("this config has no evaluator.", key="evaluator", hint="Add evaluator = L(MyEvaluator)(...).")
    if destination is None:
        destination = eval_destination(weights, cfg.train.output_dir)
    cfg = copy.deepcopy(cfg)
    cfg.train.output_dir = destination.folder  # what the config writes (${train.output_dir}) goes there too
    _prepare_eval_dir(destination.folder)
    seed_everything(cfg.train.seed + comm.get_rank(), cfg.train.deterministic)
    device = resolve_device(cfg.train.device)
    model = build_model(cfg, device)
    extra = load_inference_weights(model, weights, use_ema)
    evaluator, test_loader = build_evaluation(cfg, device)
    assert evaluator is not None and test_loader is not None
    autocast = inference_autocast(model, cfg, device)  # train.amp, or inside train.amp.modules
    results = inference_on_dataset(model, test_loader, evaluator, device=device, autocast=autocast)
    done = iterations_done(extra)
    at = f"iteration {done}" if done is not None else "no iteration recorded"
    logger.info("Evaluation of %s (%s):\n%s", weights, at, format_results(results))
    if comm.is_main_process():
        ema = extra["weights"] == "ema"
        row = {"iteration": done, "kind": "eval", "weights": weights, "ema": ema, **flatten_results(results)}
        write_eval_record(destination, cfg, row)
        logger.info("Appended these results to %s (%s)", destination.metrics, destination.reason)
    return results


def _prepare_eval_dir(folder: str) -> None:
    """Create the evaluation's folder and the logger (rank 0 writes its log.txt)."""
    _open_log_folder(folder, "Free some space, or name another folder with --output-dir (the results go to its eval/).")


def _open_log_folder(folder: str, hint: str, key: Optional[str] = None) -> None:
    """Create ``folder`` (rank 0) and set up the logger, rank 0 writing ``folder/log.txt``; a folder that cannot
    be written is a TrainingError naming it (and ``key``), with ``hint``."""
    try:
        if comm.is_main_process():
            os.makedirs(folder, exist_ok=True)
        setup_logger(folder if comm.is_main_process() else None, rank=comm.get_rank())
    except OSError as e:
        raise TrainingError(describe_write_error(e, folder) + ".", key=key, hint=hint) from e
