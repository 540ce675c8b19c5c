"""``lazytrain train CONFIG --dry-run``: every stage of a run on a tiny scale, in seconds, so that an evaluator
bug or an export that fails shows up before a long run, not at its end."""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager, nullcontext
from typing import Any, Optional

import torch
from omegaconf import DictConfig

from .. import comm
from ..errors import TrainingError
from ..evaluation import flatten_results
from ..fileio import OUTSIDE_RUN
from .build import build_trainer
from .logger import terminal_warnings_only
from .resume import resume_or_load
from .run import prepare_output_dir, save_run_config
from .run_folder import clear_run, refuse_rerun
from .run_lock import refuse_if_locked, run_lock
from .settings import check_required
from .trainer import Trainer

__all__ = ["dry_run_main", "process_started_at"]

STEPS = 2
TEST_BATCHES = 2


def dry_run_main(
    cfg: DictConfig, keep: bool = False, started: Optional[float] = None, overwrite: bool = False
) -> list[tuple[str, float, str]]:
    """Build everything, train :data:`STEPS` steps with every hook, evaluate :data:`TEST_BATCHES` test
    batches, check that a checkpoint resumes to the state that was saved, run the export check when the config
    has ``export``; print one line per stage with its time (the run's info lines go to log.txt only), then
    delete ``train.output_dir`` (unless ``keep``; what the config writes elsewhere, such as a data set made on
    first use or a cache, stays and is named). ``started``: when the command started (``time.time()``), so the
    total includes the start-up. Returns ``(stage, seconds, note)`` rows; the first failing stage raises, named.

    With ``keep`` (a folder the user named) the dry run writes checkpoints and metrics there: a folder that
    holds a run is refused as ``train`` refuses it (``overwrite`` clears it first)."""
    started = time.time() if started is None else started
    check_required(cfg)
    t = cfg.train
    t.max_iter, t.log_period, t.checkpoint_period, t.eval_period = STEPS, 1, STEPS, 0
    out = t.output_dir
    rows: list[tuple[str, float, str]] = []
    main = comm.is_main_process()
    if main and keep:  # a folder the user named: the same rules as a train there
        refuse_if_locked(out)
        if not overwrite:
            refuse_rerun(out)
    written = _WrittenOutside()
    if main:
        print(f"dry run in {out}{'' if keep else ' (deleted afterwards)'}:", flush=True)
    logging.getLogger("lazytrain").addHandler(written)
    with run_lock(out) if main and keep else nullcontext():
        if main and keep and overwrite:
            clear_run(out)
        try:
            with ExitStack() as quiet:
                with _stage(rows, "build", main):
                    prepare_output_dir(cfg)
                    quiet.enter_context(terminal_warnings_only())
                    trainer = build_trainer(cfg)
                    save_run_config(cfg)
                    trainer.test_loader = _first_batches(trainer.test_loader, TEST_BATCHES)
                _run_stages(trainer, cfg, rows, main)
        finally:
            logging.getLogger("lazytrain").removeHandler(written)
            if not keep and main:
                shutil.rmtree(out, ignore_errors=True)
    if main:
        stages = sum(seconds for _, seconds, _ in rows)
        print(
            f"dry run passed in {time.time() - started:.1f} s since the command started "
            f"({stages:.1f} s in the stages above, the rest is start-up: imports, loading the config)",
            flush=True,
        )
        if not keep:
            print(f"deleted {out}; {written.summary()}", flush=True)
    return rows


def _run_stages(trainer: Trainer, cfg: DictConfig, rows: list[tuple[str, float, str]], main: bool) -> None:
    """Train, evaluate, round-trip a checkpoint and check the export, one timed stage each."""
    out = cfg.train.output_dir
    with _stage(rows, f"train {STEPS} steps (every hook)", main) as note:
        trainer.train(0, STEPS)
        assert trainer.storage is not None
        note.append(f"total_loss {trainer.storage.latest()['total_loss'][0]:.4g}")
    with _stage(rows, f"evaluate {TEST_BATCHES} test batches", main) as note:
        results = flatten_results(trainer.test())
        note.append(", ".join(f"{k} {_number(v)}" for k, v in results.items()) or "no evaluator")
    with _stage(rows, "checkpoint round trip", main) as note:
        note.append(_check_round_trip(trainer, cfg))
    if cfg.get("export") is not None and main:
        with _stage(rows, "export check (onnxruntime)", main) as note:
            from ..export import export_onnx

            weights = os.path.join(out, "checkpoints", "model_final.pth")
            report = export_onnx(cfg, weights, os.path.join(out, "model.onnx"), num_batches=TEST_BATCHES)
            note.append(f"max abs diff {report['max_abs_diff']:.2e}")
    comm.synchronize()


def _number(value: Any) -> str:
    # a count stays a count ("num_samples 128"), a metric gets 4 significant digits
    return str(value) if isinstance(value, int) else f"{value:.4g}"


class _WrittenOutside(logging.Handler):
    """Collects the files and folders the run said it wrote outside its output folder (records marked
    with :func:`lazytrain.fileio.outside_run`), to name them when the output folder is deleted."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.places: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        place = getattr(record, OUTSIDE_RUN, None)
        if place is not None:
            self.places.setdefault(place[0], place[1])

    def summary(self) -> str:
        if not self.places:
            return "the run wrote nothing outside it"
        kept = "; ".join(f"{path} ({what})" for path, what in self.places.items())
        return f"kept what the run wrote outside it, which the next run reuses: {kept}"


def process_started_at() -> float:
    """When this process started, as ``time.time()``: what a user's clock measures includes Python's start and
    the imports. From ``/proc`` on Linux; elsewhere, now."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # the command name in parentheses may hold spaces
        with open("/proc/uptime", encoding="ascii") as f:
            uptime = float(f.read().split()[0])
        age = uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime, in clock ticks after boot
    except (OSError, ValueError, IndexError):
        return time.time()
    return time.time() - max(age, 0.0)


@contextmanager
def _stage(rows: list[tuple[str, float, str]], name: str, verbose: bool) -> Iterator[list[str]]:
    note: list[str] = []
    start = time.perf_counter()
    try:
        yield note
    except Exception as e:
        if verbose:
            print(f"  {name:<34} FAILED after {time.perf_counter() - start:.1f} s", flush=True)
        if isinstance(e, TrainingError):
            e.message = f"dry run, stage '{name}': {e.message}"
            e.args = (e.format(),)
        raise
    seconds = time.perf_counter() - start
    rows.append((name, seconds, " ".join(note)))
    if verbose:
        print(f"  {name:<34} {seconds:6.1f} s   {' '.join(note)}".rstrip(), flush=True)


def _first_batches(loader: Optional[Any], n: int) -> Optional[list[Any]]:
    return None if loader is None else list(itertools.islice(iter(loader), n))


def _check_round_trip(trainer: Trainer, cfg: DictConfig) -> str:
    """Resume a freshly built trainer from the checkpoint just written; its state must equal the trainer's."""
    saved = _states(trainer)
    fresh = build_trainer(cfg)
    start = resume_or_load(fresh, cfg, resume=True)
    if start != STEPS:
        raise TrainingError(f"the checkpoint resumed at iteration {start}, not {STEPS}.")
    loaded = _states(fresh)
    for name in saved:
        where = _first_difference(saved[name], loaded.get(name), name)
        if where is not None:
            raise TrainingError(
                f"the state loaded back from the checkpoint differs from the state saved, at {where}.",
                hint="A checkpointable's state_dict / load_state_dict do not round-trip (a custom optimizer, "
                "scheduler or loader?).",
            )
    tensors = sum(1 for v in saved["model"].values() if isinstance(v, torch.Tensor))
    return f"{tensors} model tensors; {', '.join(saved)} equal after resume"


def _states(trainer: Trainer) -> dict[str, Any]:
    assert trainer.checkpointer is not None
    states = {"model": trainer.checkpointer.model.state_dict()}
    states.update({k: obj.state_dict() for k, obj in trainer.checkpointer.checkpointables.items()})
    return states


def _first_difference(a: Any, b: Any, path: str) -> Optional[str]:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        ok = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
        return None if ok and torch.equal(a.cpu(), b.cpu()) else path
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for key in a.keys() | b.keys():
            where = _first_difference(a.get(key), b.get(key), f"{path}.{key}")
            if where is not None:
                return where
        return None
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return path
        for i, (x, y) in enumerate(zip(a, b)):
            where = _first_difference(x, y, f"{path}[{i}]")
            if where is not None:
                return where
        return None
    return None if a == b else path
