"""Where config values were set: the keys overrides set (kept outside the config) and the file:line of a key."""

from __future__ import annotations

import ast
import itertools
import re
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, Optional

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


def origin(cfg: DictConfig, key: str, defaults: Optional[Mapping[str, Any]] = None, _seen: int = 0) -> str:
    """Where the value of ``key`` comes from, for ``lazytrain config CONFIG --where KEY``: "command line",
    "file:line", the interpolation it follows (and where that one was set), or "default of train settings"
    (``defaults``: the ``train`` schema, for keys no file sets)."""
    from .lazy_config import _raw_value

    raw = _raw_value(cfg, key)
    if set_on_command_line(cfg, key):
        return "command line"
    if isinstance(raw, str) and raw.startswith("${") and raw.endswith("}") and _seen < 10:
        target = raw[2:-1]
        file, line = key_line(cfg, key)
        here = f"{file}:{line}: " if file else ""
        return f"{here}interpolation {raw}, whose value comes from: {origin(cfg, target, defaults, _seen + 1)}"
    is_setting = defaults is not None and key.startswith("train.") and _in(defaults, key[len("train.") :].split("."))
    file, line = key_line(cfg, key)
    if file is not None and line is not None and (not is_setting or _spells(file, line, key.rsplit(".", 1)[-1])):
        return f"{file}:{line}"
    if is_setting:
        return "default of train settings (README: Run settings)"
    return "not written in any config file (set in code?)"


def _in(tree: Mapping[str, Any], parts: list[str]) -> bool:
    node: Any = tree
    for part in parts:
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def _spells(file: str, line: int, word: str) -> bool:
    """Whether the statement at ``file:line`` writes ``word`` (else the key got its value elsewhere)."""
    import re

    try:
        with open(file, encoding="utf-8") as f:
            lines = f.read().splitlines()[line - 1 :]
    except OSError:
        return True
    statement = [lines[0]] + [text for text in itertools.takewhile(lambda t: not t[:1].strip(), lines[1:])]
    return re.search(rf"\b{re.escape(word)}\b", "\n".join(statement)) is not None
