"""Warnings about data go through logging, so they reach log.txt with the WARNING level and the module's
short name (``lt.lidar.dataset WARNING``); :func:`warn_once` keeps one that recurs (a scan read every epoch)
to one line per process."""

from __future__ import annotations

import logging

__all__ = ["warn_once"]

_SEEN: set[tuple[str, str]] = set()


def warn_once(logger: logging.Logger, message: str) -> None:
    """``logger.warning(message)`` the first time this process sees that message from that logger."""
    key = (logger.name, message)
    if key in _SEEN:
        return
    _SEEN.add(key)
    logger.warning("%s", message)
