"""Run a Python config file into a DictConfig.

Relative imports load other config files; every error names the file and line, and a failed import is a
ConfigImportError (an ImportError too).
"""

from __future__ import annotations

import ast
import builtins
import os
import re
import sys
import traceback
import types
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..errors import ConfigError, ConfigImportError, LazytrainError, did_you_mean
from .lazy import SEQUENCE_CONFIGS, TUPLE_CONFIG

__all__ = ["load_python_config", "load_within_config", "shown_path"]

_LITERALS = (int, float, str, bool, type(None), bytes)
_CONFIG_TYPES = (DictConfig, *SEQUENCE_CONFIGS, dict, list, tuple, *_LITERALS)


def load_python_config(path: str) -> tuple[DictConfig, list[str]]:
    """Execute the config file at ``path``; return its config values as one DictConfig root and the
    config files that were executed (itself first, then what it imported)."""
    loader = _ConfigFileLoader()
    values = loader.load(os.path.abspath(path), importer=None)
    return OmegaConf.create(values, flags={"allow_objects": True}), loader.loaded


def load_within_config(caller_globals: Mapping[str, Any], path: str, line: int) -> Optional[DictConfig]:
    """Load the config file ``path`` with the loader that is running the calling config file (so that
    its files are recorded and import cycles named), or return None when no config file is calling."""
    imported = caller_globals.get("__builtins__")
    loader = getattr(imported.get("__import__") if isinstance(imported, dict) else None, "__self__", None)
    if not isinstance(loader, _ConfigFileLoader):
        return None
    caller = str(caller_globals["__file__"])
    if not os.path.isfile(path):
        raise ConfigError(f"config file '{shown_path(path)}' does not exist.", file=shown_path(caller), line=line)
    values = loader.load(os.path.abspath(path), importer=(caller, line))
    return OmegaConf.create(values, flags={"allow_objects": True})


def config_value_names(namespace: Mapping[str, Any]) -> list[str]:
    """Top-level names that form a config: dicts, lists, configs and literals.

    Modules, classes and functions are not part of a config."""
    return [k for k, v in namespace.items() if not k.startswith("_") and isinstance(v, _CONFIG_TYPES)]


class _ConfigFileLoader:
    """Loads one top-level config and, through relative imports, the config files it imports.

    ``stack`` holds the files being executed, innermost last, to name import cycles.
    """

    def __init__(self) -> None:
        self.stack: list[str] = []
        self.loaded: list[str] = []

    def load(self, path: str, importer: Optional[tuple[str, int]]) -> dict[str, Any]:
        if path in self.stack:
            cycle = [*self.stack[self.stack.index(path) :], path]
            raise ConfigImportError(
                "config import cycle: " + " -> ".join(shown_path(p) for p in cycle) + ".",
                file=shown_path(importer[0]) if importer else None,
                line=importer[1] if importer else None,
                hint="Move what both files need into a third file that both import.",
            )
        if not os.path.isfile(path):
            raise ConfigError(f"config file '{shown_path(path)}' does not exist.")
        with open(path, encoding="utf-8") as f:
            source = f.read()
        try:
            code = compile(source, path, "exec")
        except SyntaxError as e:
            raise ConfigError(
                f"syntax error: {e.msg}" + (f" In: {e.text.strip()}" if e.text else ""),
                file=shown_path(path),
                line=e.lineno,
            ) from None

        namespace: dict[str, Any] = {
            "__file__": path,
            "__name__": _module_name(path),
            "__builtins__": self._builtins(path),
        }
        self.stack.append(path)
        self.loaded.append(path)
        try:
            exec(code, namespace)
        except LazytrainError as e:
            if e.file is None:
                raise self._locate(e, path, source) from None
            raise
        except Exception as e:
            raise self._wrap(e, path, source) from e
        finally:
            self.stack.pop()
        return {k: _as_config(namespace[k]) for k in config_value_names(namespace)}

    def _builtins(self, path: str) -> dict[str, Any]:
        patched = dict(builtins.__dict__)
        patched["__import__"] = self._import
        return patched

    def _import(
        self,
        name: str,
        globals: Optional[Mapping[str, Any]] = None,
        locals: Optional[Mapping[str, Any]] = None,
        fromlist: Sequence[str] = (),
        level: int = 0,
    ) -> Any:
        importer = globals.get("__file__") if globals else None
        if level == 0 or importer not in self.stack:
            return builtins.__import__(name, globals, locals, fromlist, level)
        line = _caller_line(importer)
        base = os.path.dirname(importer)
        for _ in range(level - 1):
            base = os.path.dirname(base)
        target = os.path.join(base, *name.split(".")) if name else base
        if os.path.isfile(target + ".py"):
            return self._namespace(target + ".py", (importer, line), fromlist)
        if os.path.isdir(target):
            return self._folder(target, (importer, line), fromlist)
        dots = "." * level
        raise ConfigImportError(
            f"relative config import '{dots}{name}' not found: there is no '{shown_path(target)}.py'.",
            file=shown_path(importer),
            line=line,
            hint="Relative imports in a config load other config files next to it; check the path.",
        )

    def _folder(self, folder: str, importer: tuple[str, int], fromlist: Sequence[str]) -> types.ModuleType:
        """``from .common import data``: each imported name is a config file (or a folder) inside ``folder``."""
        module = types.ModuleType(_module_name(folder))
        for item in fromlist:
            item_path = os.path.join(folder, item)
            if os.path.isfile(item_path + ".py"):
                setattr(module, item, self._namespace(item_path + ".py", importer, ()))
            elif os.path.isdir(item_path):
                setattr(module, item, self._folder(item_path, importer, ()))
            else:
                raise ConfigImportError(
                    f"relative config import '{item}' not found: there is no '{shown_path(item_path)}.py'.",
                    file=shown_path(importer[0]),
                    line=importer[1],
                )
        # attribute access on a folder loads the config file of that name (`common.data.dataset`)
        module.__getattr__ = lambda name: self._folder(folder, importer, [name]).__dict__[name]  # type: ignore[method-assign]
        return module

    def _namespace(self, path: str, importer: tuple[str, int], fromlist: Sequence[str]) -> types.ModuleType:
        values = self.load(path, importer)
        # one root per imported file, so interpolations inside it resolve when the importer reads values
        root = OmegaConf.create(values, flags={"allow_objects": True})
        module = types.ModuleType(_module_name(path))
        module.__file__ = path
        for k in values:
            setattr(module, k, root[k] if isinstance(root._get_node(k), (DictConfig, *SEQUENCE_CONFIGS)) else values[k])
        for item in fromlist:
            if item != "*" and not hasattr(module, item):
                raise ConfigImportError(
                    f"cannot import '{item}' from config file '{shown_path(path)}'.",
                    file=shown_path(importer[0]),
                    line=importer[1],
                    hint=did_you_mean(item, values) or f"It defines: {', '.join(values) or 'nothing'}.",
                )
        return module

    def _locate(self, error: LazytrainError, path: str, source: str) -> LazytrainError:
        """Add file:line (and the assigned key) to an error raised while the file ran, e.g. by LazyCall."""
        line = _innermost_line(sys.exc_info()[2], path)
        error.file, error.line = shown_path(path), line
        if error.key is None and line is not None:
            error.key = _assigned_name(source, line)
        error.args = (error.format(),)
        return error

    def _wrap(self, e: Exception, path: str, source: str) -> ConfigError:
        """The error a config file raised as a ConfigError at the innermost config file line (a failed import:
        a ConfigImportError, also an ImportError)."""
        tb = sys.exc_info()[2]
        # the innermost config file frame is where the user must look
        location = path
        line = None
        for frame, lineno in traceback.walk_tb(tb):
            if frame.f_code.co_filename in self.stack or frame.f_code.co_filename == path:
                location, line = frame.f_code.co_filename, lineno
        if isinstance(e, ImportError):
            no_module = isinstance(e, ModuleNotFoundError)
            error = ConfigImportError(
                f"cannot import module '{e.name}': {e}." if no_module else f"{e}.",
                file=shown_path(location),
                line=line,
                hint="Install the package, or put the folder that holds it on PYTHONPATH."
                if no_module
                else _import_name_hint(e),
            )
            error.name, error.path = e.name, e.path  # ImportError's own fields, as Python's would give them
            return error
        text = str(e)
        if isinstance(e, OmegaConfBaseException):  # its first line; the others repeat full_key and object_type
            text = str(getattr(e, "msg", None) or e).strip().splitlines()[0]
        return ConfigError(f"{type(e).__name__}: {text}", file=shown_path(location), line=line)


def _as_config(value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)):
        if isinstance(value, tuple) and TUPLE_CONFIG is None:
            value = list(value)  # omegaconf 2.3 has no config of a tuple
        return OmegaConf.create(value, flags={"allow_objects": True})
    return value


def _caller_line(path: str) -> int:
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename != path:
        frame = frame.f_back  # type: ignore[assignment]
    return frame.f_lineno if frame is not None else 0


def _innermost_line(tb: Optional[types.TracebackType], path: str) -> Optional[int]:
    line = None
    for frame, lineno in traceback.walk_tb(tb):
        if frame.f_code.co_filename == path:
            line = lineno
    return line


def _assigned_name(source: str, line: int) -> Optional[str]:
    """The target of the top-level assignment that spans ``line``.

    ``optimizer`` for ``optimizer = L(torch.optim.SGD)(lrr=0.1)``."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    for node in tree.body:
        if node.lineno <= line <= (node.end_lineno or node.lineno):
            if isinstance(node, ast.Assign):
                return ast.unparse(node.targets[0])
            if isinstance(node, (ast.AnnAssign, ast.AugAssign)):
                return ast.unparse(node.target)
    return None


def _import_name_hint(e: ImportError) -> Optional[str]:
    match = re.match(r"cannot import name '(\w+)' from '([\w.]+)'", str(e))
    if not match:
        return None
    module = sys.modules.get(match.group(2))
    return did_you_mean(match.group(1), dir(module)) if module else None


def _module_name(path: str) -> str:
    stem = os.path.splitext(os.path.basename(path))[0]
    return f"lazytrain_config.{stem}"


def shown_path(path: str) -> str:
    """Paths in messages: relative to the working directory when the file is inside it, else absolute.

    A path that climbs out of the working directory (``../x.py``) would read differently from every other
    directory, so it is shown whole.
    """
    absolute = os.path.abspath(path)
    try:
        rel = os.path.relpath(absolute)
    except ValueError:  # another drive on Windows
        return absolute
    return absolute if rel == os.pardir or rel.startswith(os.pardir + os.sep) else rel
