"""Whose output folder it is: a ``train`` without ``--resume`` refuses a folder that holds an earlier run
(``--overwrite`` clears that run's files first), so one folder never mixes two runs' records."""

from __future__ import annotations

import glob
import os
import shutil

from ..errors import ConfigError

__all__ = ["clear_run", "refuse_rerun", "run_files"]

EVENTS_PATTERN = "events.out.tfevents.*"  # TensorBoard's event files, one per run
PREVIOUS_LOG = "log.txt.1"  # where --overwrite keeps the earlier run's log (logrotate's name)


def run_files(output_dir: str) -> list[str]:
    """What of a run ``output_dir`` holds, as a user reads it (``checkpoints/ (3 files)``, ``metrics.jsonl``,
    ``2 TensorBoard events files``); empty for a new or empty folder. log.txt and config.yaml alone are no
    run: eval writes a log too, and a train that failed at start-up leaves only its log."""
    found = []
    checkpoints = os.path.join(output_dir, "checkpoints")
    if os.path.isdir(checkpoints) and os.listdir(checkpoints):
        count = len(os.listdir(checkpoints))
        found.append(f"checkpoints/ ({count} file{'s' if count != 1 else ''})")
    if os.path.isfile(os.path.join(output_dir, "metrics.jsonl")):
        found.append("metrics.jsonl")
    events = glob.glob(os.path.join(glob.escape(output_dir), EVENTS_PATTERN))
    if events:
        found.append(f"{len(events)} TensorBoard events file{'s' if len(events) != 1 else ''}")
    return found


def refuse_rerun(output_dir: str) -> None:
    """Raise (exit 2) when ``output_dir`` holds a run: a new one there would replace its checkpoints, append
    to its metrics.jsonl and hide it in TensorBoard. Nothing is written before this check."""
    found = run_files(output_dir)
    if not found:
        return
    raise ConfigError(
        f"{output_dir} already holds a run ({', '.join(found)}); a new run there would replace its checkpoints "
        "and mix with its metrics.",
        key="train.output_dir",
        hint="Add --resume to continue that run, --overwrite to start over (deletes its checkpoints, metrics.jsonl, "
        f"events files and config.yaml; its log.txt becomes {PREVIOUS_LOG}), or choose a new folder with "
        "--output-dir=DIR (or train.output_dir=DIR).",
    )


def clear_run(output_dir: str) -> list[str]:
    """For ``--overwrite``: delete the earlier run's checkpoints, metrics.jsonl, events files and config.yaml,
    and rename its log.txt to :data:`PREVIOUS_LOG`; return what was removed (for the log). Other files (an
    export, predictions, eval results) stay: they are the user's, not the run's record."""
    found = run_files(output_dir)
    if os.path.isfile(os.path.join(output_dir, "config.yaml")):
        found.append("config.yaml")
    shutil.rmtree(os.path.join(output_dir, "checkpoints"), ignore_errors=True)
    paths = glob.glob(os.path.join(glob.escape(output_dir), EVENTS_PATTERN))
    paths += [os.path.join(output_dir, name) for name in ("metrics.jsonl", "config.yaml")]
    for path in paths:
        if os.path.isfile(path):
            os.remove(path)
    log = os.path.join(output_dir, "log.txt")
    if os.path.isfile(log):
        os.replace(log, os.path.join(output_dir, PREVIOUS_LOG))
        found.append(f"log.txt (kept as {PREVIOUS_LOG})")
    return found
