"""Progress of long work in the log, as detectron2's evaluation shows it: a line every few seconds with the count,
the time per item and an ETA (``Inference done 11/500. 0.0502 s / batch. ETA 0:00:24``), and a summary at the
end of work that took that long. Work shorter than the period logs nothing, so quick runs (and tests) stay quiet.
"""

from __future__ import annotations

import datetime
import logging
import time
from typing import Any, Optional

__all__ = ["EVERY_S", "Progress"]

EVERY_S = 5.0  # seconds between two progress lines (a module setting, so tests can lower it)


class Progress:
    """Counts items of work and logs ``"<what> done <n>/<total>. <s> s / <unit>. ETA <h:mm:ss>"`` to ``logger``
    at most every ``every_s`` seconds (default :data:`EVERY_S`); :meth:`done` logs the total time when the
    work took at least that long. ``total`` may be a number, something with a length, or None (unknown: no
    ETA). ``note`` of :meth:`step` (e.g. the stage just finished) is shown in brackets."""

    def __init__(
        self,
        what: str,
        total: Any = None,
        *,
        unit: str = "item",
        logger: Optional[logging.Logger] = None,
        every_s: Optional[float] = None,
    ) -> None:
        self.what, self.unit = what, unit
        self.total = _length(total)
        self.logger = logger or logging.getLogger(__name__)
        self.every_s = EVERY_S if every_s is None else every_s
        self.start = self.last = time.perf_counter()
        self.count = 0

    def step(self, n: int = 1, note: str = "") -> None:
        self.count += n
        now = time.perf_counter()
        if now - self.last < self.every_s:
            return
        self.last = now
        per_item = (now - self.start) / max(self.count, 1)
        suffix = f" ({note})" if note else ""
        if self.total:
            eta = datetime.timedelta(seconds=int(per_item * max(self.total - self.count, 0)))
            self.logger.info(
                "%s done %d/%d%s. %.4f s / %s. ETA %s",
                self.what,
                self.count,
                self.total,
                suffix,
                per_item,
                self.unit,
                eta,
            )
        else:
            self.logger.info(
                "%s done %d %s%s. %.4f s / %s.", self.what, self.count, _plural(self.unit), suffix, per_item, self.unit
            )

    def done(self) -> None:
        seconds = time.perf_counter() - self.start
        if seconds >= self.every_s:  # short work needs no summary line
            self.logger.info(
                "%s done: %d %s in %s (%.4f s / %s)",
                self.what,
                self.count,
                _plural(self.unit),
                datetime.timedelta(seconds=int(seconds)),
                seconds / max(self.count, 1),
                self.unit,
            )


def _length(total: Any) -> Optional[int]:
    if total is None or isinstance(total, int):
        return total
    try:
        return len(total)  # type: ignore[arg-type]
    except TypeError:  # an iterable without a length
        return None


def _plural(unit: str) -> str:
    return unit + ("es" if unit.endswith(("ch", "s", "sh", "x")) else "s")
