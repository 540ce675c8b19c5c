"""multiprocessing's resource tracker for a launcher and the workers it spawns, started without its warning
about semaphores left by a rank that was stopped (it still removes them)."""

from __future__ import annotations

import sys
from multiprocessing import resource_tracker

__all__ = ["start_resource_tracker"]

# a -W option: the tracker is a separate Python process, started with this interpreter's -W options
_QUIET = "ignore:resource_tracker:UserWarning"


def start_resource_tracker() -> None:
    """Start the tracker that the spawned workers share. A rank that leaves by ``os._exit`` (the hang watchdog)
    or is killed (the launcher stopping the job) cannot unregister its DataLoader's queue semaphores; the
    tracker removes them at the end, and would say "There appear to be 14 leaked semaphore objects" after the
    job's closing line, about nothing the user can act on."""
    added = _QUIET not in sys.warnoptions
    if added:
        sys.warnoptions.append(_QUIET)
    try:
        resource_tracker.ensure_running()
    finally:
        if added:
            sys.warnoptions.remove(_QUIET)
