"""Interpolation errors as users read them: the ``${...}`` that does not resolve, its key and file:line, and
omegaconf's reason in one line."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, InterpolationToMissingValueError

from ..errors import ConfigError, did_you_mean
from .lazy import flat_keys, raw_value
from .loader import shown_path
from .provenance import source_files

__all__ = ["check_interpolations", "omegaconf_reason"]

_MISSING = object()
# train's defaults are filled in by the engine, which the config layer does not import: say where
_RUN_SETTINGS_HINT = (
    "Run settings (train.*) get their defaults from lazytrain.engine.load_run_config(path, overrides), "
    "which gives the config the command line runs; LazyConfig.load alone does not add them."
)


def check_interpolations(cfg: DictConfig) -> None:
    """Raise a ConfigError for the first ``${...}`` that does not resolve, naming the key and file:line."""
    try:
        OmegaConf.to_container(cfg, resolve=True)
    except InterpolationResolutionError as e:
        key = re.sub(r"\[(\d+)\]", r".\1", str(e.full_key)) if e.full_key else None  # layers[0].w: layers.0.w
        raw = raw_value(cfg, key) if key else None
        found = _first_line(source_files(cfg), re.compile(re.escape(raw))) if isinstance(raw, str) else None
        file, line = found or (None, None)
        refs = re.findall(r"\$\{([^}:]+)\}", raw) if isinstance(raw, str) else []
        unset = _unset_reference(e)
        if unset is not None:
            raise ConfigError(
                f"{raw!r} needs '{unset}', which is required but not set ('???').",
                file=file,
                line=line,
                key=key,
                hint=f"Set it in the config or on the command line ({unset}=...).",
            ) from None
        missing = [r for r in refs if OmegaConf.select(cfg, r, default=_MISSING) is _MISSING]
        if missing:
            what = f"'{missing[0]}' is not a key of this config"
            if missing[0].startswith("train."):  # a setting, or a misspelled one: close matches among train's
                hint = did_you_mean(missing[0], [k for k in flat_keys(cfg) if k.startswith("train.")])
                hint = f"{hint} {_RUN_SETTINGS_HINT}".strip()
            else:
                hint = did_you_mean(missing[0], flat_keys(cfg))
        else:
            what, hint = omegaconf_reason(e), ""
        raise ConfigError(f"bad interpolation {raw!r}: {what}.", file=file, line=line, key=key, hint=hint) from None


def omegaconf_reason(error: Exception) -> str:
    """The first line of an omegaconf error, without its ``full_key:`` / ``object_type=`` lines and final
    period (``Value 'abc' of type 'str' could not be converted to Integer``)."""
    text = str(getattr(error, "msg", None) or error).strip()
    return (text.splitlines()[0] if text else type(error).__name__).rstrip(".")


def _unset_reference(error: InterpolationResolutionError) -> Optional[str]:
    """The key holding '???' that an interpolation needs (itself or through other interpolations), or None."""
    if not isinstance(error, InterpolationToMissingValueError):
        return None
    match = re.search(r"Missing mandatory value: (\S+)", str(getattr(error, "msg", None) or error))
    return match.group(1) if match else None


def _first_line(files: Sequence[str], pattern: re.Pattern[str]) -> Optional[tuple[str, int]]:
    """``(file, line)`` of the first line in ``files`` that ``pattern`` matches."""
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    if pattern.search(line):
                        return shown_path(path), lineno
        except OSError:
            continue
    return None
