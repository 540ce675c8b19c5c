"""Where config values were set: records kept beside each loaded root (the files it came from, the keys that
overrides set) and, from those, the file:line of a key."""

from __future__ import annotations

import ast
import itertools
import os
import re
import weakref
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Generic, Optional, TypeVar

from omegaconf import DictConfig

from .lazy import TARGET_KEY, raw_value
from .loader import shown_path

__all__ = [
    "key_line",
    "origin",
    "overridden_keys",
    "remember_overrides",
    "remember_source_files",
    "set_on_command_line",
    "source_files",
]

_T = TypeVar("_T")


class _RootRecords(Generic[_T]):
    """One record per config root, kept outside the config (so YAML and flat_keys do not show it), found by
    the root's identity and dropped when the root is garbage collected."""

    def __init__(self) -> None:
        self._records: dict[int, tuple[weakref.ref[DictConfig], _T]] = {}

    def get(self, cfg: DictConfig) -> Optional[_T]:
        ref, record = self._records.get(id(cfg), (None, None))
        return record if ref is not None and ref() is cfg else None

    def put(self, cfg: DictConfig, record: _T) -> None:
        if id(cfg) not in self._records:
            weakref.finalize(cfg, self._records.pop, id(cfg), None)
        self._records[id(cfg)] = (weakref.ref(cfg), record)


_SOURCE_FILES: _RootRecords[list[str]] = _RootRecords()  # to put file:line on errors found after loading
_OVERRIDDEN: _RootRecords[set[str]] = _RootRecords()


def remember_source_files(cfg: DictConfig, files: Iterable[str]) -> None:
    """Record that ``cfg`` was loaded from ``files`` (the file loaded first, then the files it imported)."""
    _SOURCE_FILES.put(cfg, list(files))


def source_files(cfg: DictConfig) -> list[str]:
    """The config files ``cfg`` was loaded from (empty for a config built in code)."""
    return list(_SOURCE_FILES.get(cfg) or [])


def remember_overrides(cfg: DictConfig, keys: Iterable[str]) -> None:
    """Record that an override set each of ``keys`` in ``cfg``."""
    known = _OVERRIDDEN.get(cfg)
    if known is None:
        known = set()
        _OVERRIDDEN.put(cfg, known)
    known.update(keys)


def overridden_keys(cfg: DictConfig) -> frozenset[str]:
    """The keys that :meth:`LazyConfig.apply_overrides` set in ``cfg`` (a merged dict: each of its leaves)."""
    return frozenset(_OVERRIDDEN.get(cfg) or ())


def set_on_command_line(cfg: DictConfig, key: str) -> bool:
    """Whether an override set ``key`` or a node above it."""
    parts = key.split(".")
    known = overridden_keys(cfg)
    return any(".".join(parts[:i]) in known for i in range(1, len(parts) + 1))


def key_line(cfg: DictConfig, key: str) -> tuple[Optional[str], Optional[int]]:
    """``(file, line)`` where the config files ``cfg`` was loaded from set ``key`` (``model.head.width``),
    or ``(None, None)``.

    A Python file's statements are read in order, the last that sets the key winning (later lines override
    earlier ones), those inside ``if`` / ``for`` / ``with`` / ``try`` too (not inside functions); the
    importing file comes before the files it imports, since its statements run after them. A statement sets
    a key by assigning it (``model.head = ...``, ``train["seed"] = 7``), by ``update`` (``optimizer.update(
    lr=0.2)`` sets ``optimizer.lr``), by a relative import that binds its first part (``from .common.train
    import train``) or by ``LazyConfig.load_rel`` (both followed into the file they load). Inside
    a statement the key's parts are found one after another (``head=`` then ``width=``, or ``"width":``); a
    part it does not spell (a positional argument) leaves the line of the part before.
    """
    parts = _parts(key)
    for path in source_files(cfg):
        found = _file_key_line(path, parts)
        if found is not None:
            return shown_path(found[0]), found[1]
    return None, None


def _parts(key: str) -> list[str]:
    return [p for p in key.split(".") if not p.isdigit() and p != TARGET_KEY]


def _file_key_line(path: str, parts: list[str], depth: int = 0) -> Optional[tuple[str, int]]:
    try:
        with open(path, encoding="utf-8") as f:
            source = f.read()
    except OSError:
        return None
    if path.endswith((".yaml", ".yml")):
        line = _yaml_key_line(source, parts)
        return (path, line) if line is not None else None
    return _py_key_line(path, source, parts, depth)


def _py_key_line(path: str, source: str, parts: list[str], depth: int = 0) -> Optional[tuple[str, int]]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    lines = source.splitlines(keepends=True)
    found = None
    for node in _statements(tree.body):
        for file, inner_parts, binds in _config_imports(path, node, parts, depth):
            inner = _file_key_line(file, inner_parts, depth + 1)
            if inner is not None or binds:  # a name bound by the import: its key lives where the value came from
                found = inner or (path, node.lineno)
        for name, value, keys in _what_it_sets(node):
            if name != parts[: len(name)]:
                continue
            rest = parts[len(name) :]
            if keys is not None and (not rest or rest[0] not in keys):
                continue  # update(...) sets only the keys it names
            loaded = _load_rel(path, value, depth)
            if loaded is not None:
                inner = _file_key_line(loaded[0], loaded[1] + rest, depth + 1)
                if inner is not None:
                    found = inner
                    continue
            start = value.lineno if value is not None else node.lineno
            end = (value.end_lineno if value is not None else node.end_lineno) or start
            text = "".join(lines[start - 1 : end])
            found = (path, start + _parts_offset_lines(text, rest))
    return found


def _config_imports(path: str, node: ast.stmt, parts: list[str], depth: int) -> Iterator[tuple[str, list[str], bool]]:
    """For ``from .common.train import train`` (a relative import of a config file's values) when the key
    starts with a name it binds: ``(the imported file, the key's parts in it, True)``; for ``import *``:
    ``(file, parts, False)``, as it may not bind the name. Later imports and statements win, as in Python."""
    if not isinstance(node, ast.ImportFrom) or not node.level or not node.module or depth > 10:
        return
    base = os.path.dirname(path)
    for _ in range(node.level - 1):
        base = os.path.dirname(base)
    file = os.path.join(base, *node.module.split(".")) + ".py"
    if not os.path.isfile(file):
        return  # `from .common import data`: the names are config files, not values
    for alias in node.names:
        if alias.name == "*":
            yield file, parts, False
        elif (alias.asname or alias.name) == parts[0]:
            yield file, [alias.name, *parts[1:]], True


def _statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The statements of ``body`` in source order, those inside if / for / while / with / try / match too
    (they run when the file runs), not those inside functions and classes."""
    for node in body:
        yield node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt):
                yield from _statements([child])
            elif isinstance(child, (ast.ExceptHandler, ast.match_case)):
                yield from _statements(child.body)


def _what_it_sets(node: ast.stmt) -> Iterator[tuple[list[str], Optional[ast.expr], Optional[set[str]]]]:
    """``(key parts, value expression, keys)`` for each key a statement sets; ``keys``: the only keys under
    it that it sets (``update``), or None (all of them)."""
    if isinstance(node, ast.Assign):
        for target in node.targets:
            if isinstance(target, ast.Tuple) and _is_load_rel(node.value):
                for i, element in enumerate(target.elts):  # a, b = LazyConfig.load_rel(path, ("a", "b"))
                    name = _target_parts(element)
                    if name is not None:
                        yield name, _nth_key_call(node.value, i), None  # type: ignore[arg-type]
                continue
            name = _target_parts(target)
            if name is not None:
                yield name, node.value, None
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        name = _target_parts(node.target)
        if name is not None:
            yield name, node.value, None
    elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        call = node.value
        if isinstance(call.func, ast.Attribute) and call.func.attr == "update":
            name = _target_parts(call.func.value)
            keys = {k.arg for k in call.keywords if k.arg}
            for arg in call.args:
                if isinstance(arg, ast.Dict):
                    keys.update(str(k.value) for k in arg.keys if isinstance(k, ast.Constant))
            if name is not None:
                yield name, call, keys


def _target_parts(node: ast.expr) -> Optional[list[str]]:
    """``["train", "seed"]`` for ``train.seed`` or ``train["seed"]`` (list indexes are left out, as in keys)."""
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        base = _target_parts(node.value)
        return None if base is None else [*base, node.attr]
    if isinstance(node, ast.Subscript):
        base = _target_parts(node.value)
        index = node.slice
        if base is None or not isinstance(index, ast.Constant):
            return None
        if isinstance(index.value, int) and not isinstance(index.value, bool):
            return base
        return [*base, str(index.value)] if isinstance(index.value, str) else None
    return None


def _is_load_rel(value: Optional[ast.expr]) -> bool:
    return (
        isinstance(value, ast.Call)
        and isinstance(value.func, (ast.Attribute, ast.Name))
        and (value.func.attr if isinstance(value.func, ast.Attribute) else value.func.id) == "load_rel"
        and bool(value.args)
        and isinstance(value.args[0], ast.Constant)
        and isinstance(value.args[0].value, str)
    )


def _load_rel_keys(call: ast.Call) -> Optional[ast.expr]:
    if len(call.args) > 1:
        return call.args[1]
    return next((k.value for k in call.keywords if k.arg == "keys"), None)


def _nth_key_call(call: ast.Call, i: int) -> ast.Call:
    """``load_rel(path, ("a", "b"))`` as if it were ``load_rel(path, "a")`` for its ``i``-th target."""
    keys = _load_rel_keys(call)
    one = keys.elts[i] if isinstance(keys, (ast.Tuple, ast.List)) and i < len(keys.elts) else None
    copy = ast.Call(func=call.func, args=[call.args[0], *([one] if one is not None else [])], keywords=[])
    return ast.copy_location(copy, call)


def _load_rel(path: str, value: Optional[ast.expr], depth: int) -> Optional[tuple[str, list[str]]]:
    """For ``LazyConfig.load_rel("base.py", "model")``: the file it loads and the key parts in it."""
    if depth > 10 or not _is_load_rel(value):
        return None
    assert isinstance(value, ast.Call)
    target = os.path.join(os.path.dirname(path), value.args[0].value)  # type: ignore[attr-defined]
    keys = _load_rel_keys(value)
    if keys is None or (isinstance(keys, ast.Constant) and keys.value is None):
        return target, []
    if isinstance(keys, ast.Constant) and isinstance(keys.value, str):
        return target, _parts(keys.value)
    return None  # a tuple of keys not unpacked into names


def _parts_offset_lines(text: str, parts: list[str]) -> int:
    position = 0
    for part in parts:
        name = re.escape(part)
        match = re.compile(rf"\b{name}\s*=(?!=)|['\"]{name}['\"]\s*:").search(text, position)
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
    raw = raw_value(cfg, key)
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
