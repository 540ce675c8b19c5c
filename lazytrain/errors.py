"""The errors lazytrain shows users: one paragraph naming where (file:line / config key) and what to do.

Errors are raised once, where the facts are known; the CLI prints them without a traceback.
"""

from __future__ import annotations

import difflib
import traceback
from collections.abc import Iterable
from typing import Optional

__all__ = [
    "ConfigError",
    "ConfigImportError",
    "DataError",
    "Interrupted",
    "LazytrainError",
    "RankFailedError",
    "TrainingError",
    "UserCodeError",
    "did_you_mean",
    "from_worker",
]


class LazytrainError(Exception):
    """Base class of errors that the CLI prints as one paragraph. ``exit_code`` is what the CLI returns."""

    exit_code = 1
    show_details = False  # print ``details`` (a traceback) even without --traceback
    speaks_for_the_job = False  # in a process group, the message says what happened to every rank

    def __init__(
        self,
        message: str,
        *,
        file: Optional[str] = None,
        line: Optional[int] = None,
        key: Optional[str] = None,
        hint: Optional[str] = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.key = key
        self.hint = hint
        self.details: Optional[str] = None  # e.g. a worker's traceback, shown with --traceback
        super().__init__(self.format())

    def with_key(self, key: str) -> LazytrainError:
        """The same error, naming ``key`` if it names no key yet (an error from deep inside a build)."""
        if self.key is None:
            self.key = key
            self.args = (self.format(),)
        return self

    def __str__(self) -> str:
        return self.format()

    def format(self) -> str:
        parts = []
        if self.file:
            parts.append(f"{self.file}:{self.line}" if self.line else self.file)
        if self.key:
            parts.append(self.key)
        text = ": ".join([*parts, self.message])
        if self.hint:
            if not text.rstrip().endswith((".", "?", "!", ":")):
                text += "."
            text = f"{text} {self.hint}"
        return text


class Interrupted(KeyboardInterrupt):
    """A second Ctrl-C: stopped at once. Its message says what is on disk; the CLI prints ``interrupted:
    <message>`` and exits 130, as for any KeyboardInterrupt."""


class ConfigError(LazytrainError):
    """A config file, an override or a config value is wrong; the user fixes the config (exit code 2)."""

    exit_code = 2


class ConfigImportError(ConfigError, ImportError):
    """An import in a config file failed: a missing module or name, a missing config file, an import cycle.
    An ``ImportError`` too, as detectron2's loader raises, so code that catches ImportError keeps working."""


class TrainingError(LazytrainError):
    """Training cannot go on: a bad model output, a non-finite loss, a broken dataset file (exit code 1)."""


class DataError(LazytrainError):
    """A dataset file is missing or corrupt; the message names the file (exit code 1)."""


class RankFailedError(LazytrainError):
    """One process of a distributed run failed; the others were stopped (exit code 1)."""


class UserCodeError(LazytrainError):
    """User code (the model, the loss, a dataset, a hook) raised during training. The CLI shows the original
    traceback (its frames are the user's) and then this one closing line (exit code 1)."""

    show_details = True

    @classmethod
    def wrap(cls, iteration: int, who: str, error: BaseException, batch: Optional[str] = None) -> UserCodeError:
        """``iteration``: the iteration being run, as users count them (1 for the first)."""
        return cls.raised_in(f"iteration {iteration}", who, error, batch)

    @classmethod
    def raised_in(cls, where: str, who: str, error: BaseException, batch: Optional[str] = None) -> UserCodeError:
        """``"<where>: <who> raised <Type>: <message> (batch: ...)"``, with ``error``'s traceback as details;
        ``where`` is the step users can find (``"iteration 4"``, ``"evaluation at iteration 20, batch 3"``)."""
        message = str(error).strip()
        if "Original Traceback" in message:  # raised in a DataLoader worker: torch put its traceback inside
            message = message.splitlines()[-1].split(": ", 1)[-1]
        text = f"{where}: {who} raised {type(error).__name__}: {message}"
        if batch is not None:
            text += f" (batch: {batch})"
        wrapped = cls(text)
        wrapped.details = "".join(traceback.format_exception(type(error), error, error.__traceback__)).rstrip()
        return wrapped


def from_worker(error: LazytrainError) -> LazytrainError:
    """The error a DataLoader worker raised, without the traceback text torch wraps around its message
    (``Caught DataError in DataLoader worker process 0. Original Traceback ...``)."""
    if "Original Traceback" not in error.message:
        return error
    last = error.message.strip().splitlines()[-1]
    clean = type(error)(last.split(": ", 1)[1] if ": " in last else last)
    clean.details = error.message  # the worker's traceback, for --traceback
    return clean


def did_you_mean(word: str, candidates: Iterable[str], n: int = 3) -> str:
    """`` Did you mean 'x'?`` for the closest candidates, or an empty string when none is close."""
    candidates = list(candidates)
    matches = difflib.get_close_matches(word, candidates, n=n, cutoff=0.6)
    if not matches:
        return ""
    # keep only the matches about as close as the best one: a clear winner is named alone
    scores = {m: difflib.SequenceMatcher(None, word, m).ratio() for m in matches}
    best = max(scores.values())
    matches = [m for m in matches if scores[m] >= best - 0.08]
    if len(matches) == 1:
        return f"Did you mean '{matches[0]}'?"
    return "Did you mean one of " + ", ".join(f"'{m}'" for m in matches) + "?"
