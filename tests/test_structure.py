"""Promises about the package's shape: the engine never imports the flagship's domain code, the CLI
starts without importing torch, and no lazytrain modules import each other in a circle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from conftest import cli_env


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env())


def test_engine_does_not_import_the_lidar_package():
    r = python(
        "import sys\n"
        "import lazytrain.engine, lazytrain.launch, lazytrain.export, lazytrain.data, lazytrain.evaluation\n"
        "import lazytrain.cli, lazytrain.checkpoint, lazytrain.events\n"
        "print(sorted(m for m in sys.modules if m.startswith('lazytrain.lidar')))"
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_lidar_modules_run_with_python_m_without_runpy_warning():
    # runpy warns when importing the package already imported the module it is about to run as __main__
    r = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-m", "lazytrain.lidar.predictions", "--help"],
        capture_output=True, text=True, env=cli_env(),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "RuntimeWarning" not in r.stderr and "usage:" in r.stdout


def test_lidar_package_names_load_on_first_use():
    r = python(
        "import sys\n"
        "import lazytrain.lidar as lidar\n"
        "before = sorted(m for m in sys.modules if m.startswith('lazytrain.lidar.'))\n"
        "from lazytrain.lidar import RangeNet, SemanticKittiSubmission\n"
        "assert RangeNet.__module__ == 'lazytrain.lidar.model', RangeNet.__module__\n"
        "assert all(hasattr(lidar, name) for name in lidar.__all__) and set(lidar.__all__) <= set(dir(lidar))\n"
        "try:\n"
        "    lidar.NoSuchName\n"
        "except AttributeError as e:\n"
        "    print(e)\n"
        "print(before)"
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["module 'lazytrain.lidar' has no attribute 'NoSuchName'", "[]"]


def test_cli_help_imports_neither_torch_nor_omegaconf():
    r = python(
        "import sys, contextlib, io\n"
        "import lazytrain.cli\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    lazytrain.cli.main(['--help'])\n"
        "print([m for m in ('torch', 'omegaconf', 'onnx', 'tensorboard') if m in sys.modules])"
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


PACKAGE = Path(__file__).resolve().parents[1] / "lazytrain"
# Import cycles accepted for now, each to be cut by its own change (none); the test fails when one is gone, so
# that its entry goes too.
KNOWN_CYCLES: list[list[str]] = []


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def lazytrain_imports(path: Path, modules: set[str]) -> dict[str, int]:
    """The lazytrain modules that ``path`` imports, each with the line of its first import statement:
    every statement, those inside functions (lazy imports) and ``if TYPE_CHECKING:`` included."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            # `from .pkg import mod` imports the module pkg.mod; `from .mod import name` imports mod
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]  # lazytrain.x.y.Name: the module lazytrain.x.y
            if target and target != name:
                found.setdefault(target, node.lineno)
    return found


def import_cycles() -> list[list[tuple[str, int]]]:
    """One cycle through each group of lazytrain modules that import each other (a strongly connected
    component of the import graph): ``[(module, line of its import of the next one), ...]``."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: lazytrain_imports(path, set(files)) for name, path in files.items()}
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        order[v] = low[v] = len(order)
        stack.append(v)
        for w in graph[v]:
            if w not in order:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], order[w])
        if low[v] == order[v]:
            group: list[str] = []
            while not group or group[-1] != v:
                group.append(stack.pop())
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in order:
            visit(v)
    return [_shortest_cycle(graph, group) for group in sorted(groups)]


def _shortest_cycle(graph: dict[str, dict[str, int]], group: list[str]) -> list[tuple[str, int]]:
    """The shortest way from ``group[0]`` back to itself inside ``group`` (breadth first)."""
    start, inside = group[0], set(group)
    paths: dict[str, list[tuple[str, int]]] = {start: []}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w, line in sorted(graph[v].items()):
                path = [*paths[v], (v, line)]
                if w == start:
                    return path
                if w in inside and w not in paths:
                    paths[w] = path
                    following.append(w)
        frontier = following
    raise AssertionError(f"no cycle through {group}")


def shown(cycle: list[tuple[str, int]]) -> str:
    """``lazytrain/a.py:3 -> lazytrain/b.py:9 -> lazytrain/a.py``: each file at the line of its import."""
    steps = [f"{module.replace('.', '/')}.py:{line}" for module, line in cycle]
    return " -> ".join([*steps, cycle[0][0].replace(".", "/") + ".py"])


def test_no_import_cycle_among_lazytrain_modules():
    cycles = {frozenset(module for module, _ in cycle): cycle for cycle in import_cycles()}
    known = [frozenset(group) for group in KNOWN_CYCLES]
    unknown = [shown(cycle) for group, cycle in cycles.items() if group not in known]
    assert not unknown, "import cycles among lazytrain modules (lazy imports count):\n" + "\n".join(unknown)
    gone = [sorted(group) for group in known if group not in cycles]
    assert not gone, f"these import cycles are gone: remove them from KNOWN_CYCLES: {gone}"
