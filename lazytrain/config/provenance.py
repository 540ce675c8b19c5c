"""Where config values were set: the keys overrides set (kept outside the config) and the file:line of a key."""

from __future__ import annotations

import ast
import re
import weakref
from collections.abc import Sequence
from typing import Optional

from omegaconf import DictConfig

from .lazy import TARGET_KEY
from .loader import _rel

__all__ = ["key_line", "overridden_keys", "remember_overrides", "set_on_command_line"]

# the keys that overrides set in each root: kept out of the config so YAML and flat_keys do not show them
_OVERRIDDEN: dict[int, tuple[weakref.ref, set[str]]] = {}


def remember_overrides(cfg: DictConfig, keys: Sequence[str]) -> None:
    """Record that an override set each of ``keys`` in ``cfg``."""
    ref, known = _OVERRIDDEN.get(id(cfg), (None, set()))
    if ref is None or ref() is not cfg:
        known = set()
        _OVERRIDDEN[id(cfg)] = (weakref.ref(cfg), known)
        weakref.finalize(cfg, _OVERRIDDEN.pop, id(cfg), None)
    known.update(keys)


def overridden_keys(cfg: DictConfig) -> frozenset[str]:
    """The keys that :meth:`LazyConfig.apply_overrides` set in ``cfg`` (a merged dict: each of its leaves)."""
    ref, known = _OVERRIDDEN.get(id(cfg), (None, set()))
    return frozenset(known) if ref is not None and ref() is cfg else frozenset()


def set_on_command_line(cfg: DictConfig, key: str) -> bool:
    """Whether an override set ``key`` or a node above it."""
    parts = key.split(".")
    known = overridden_keys(cfg)
    return any(".".join(parts[:i]) in known for i in range(1, len(parts) + 1))


def key_line(cfg: DictConfig, key: str) -> tuple[Optional[str], Optional[int]]:
    """``(file, line)`` where the config files ``cfg`` was loaded from set ``key`` (``model.head.width``),
    or ``(None, None)``.

    A Python file's top-level statements are read in order, the last that sets the key winning (later
    lines override earlier ones); the importing file comes before the files it imports, since its
    statements run after them. Inside a statement the key's parts are found one after another
    (``head=`` then ``width=``); a part it does not spell (a positional argument) leaves the line of the
    part before.
    """
    parts = [p for p in key.split(".") if not p.isdigit() and p != TARGET_KEY]
    from .lazy_config import _source_files  # the files each loaded root came from

    for path in _source_files(cfg):
        try:
            with open(path, encoding="utf-8") as f:
                source = f.read()
        except OSError:
            continue
        line = _yaml_key_line(source, parts) if path.endswith((".yaml", ".yml")) else _py_key_line(source, parts)
        if line is not None:
            return _rel(path), line
    return None, None


def _py_key_line(source: str, parts: list[str]) -> Optional[int]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    lines = source.splitlines(keepends=True)
    found = None
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if targets is None or not isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            continue
        for target in targets if isinstance(targets, list) else [targets]:
            name = ast.unparse(target).split(".")
            if name != parts[: len(name)]:
                continue
            start = node.value.lineno if node.value is not None else node.lineno
            end = node.end_lineno or start
            text = "".join(lines[start - 1 : end])
            found = start + _parts_offset_lines(text, parts[len(name) :])
    return found


def _parts_offset_lines(text: str, parts: list[str]) -> int:
    position = 0
    for part in parts:
        match = re.compile(rf"\b{re.escape(part)}\s*=(?!=)").search(text, position)
        if match is None:
            break
        position = match.start()
    return text.count("\n", 0, position)


def _yaml_key_line(source: str, parts: list[str]) -> Optional[int]:
    position, found = 0, False
    for part in parts:
        match = re.compile(rf"^\s*{re.escape(part)}\s*:", re.MULTILINE).search(source, position)
        if match is None:
            break
        position, found = match.end(), True
    return source.count("\n", 0, position) + 1 if found else None
