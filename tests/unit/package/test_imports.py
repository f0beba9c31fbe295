"""The package's module-level imports form no cycle, and every module imports alone in a fresh interpreter.

A cycle works or breaks depending on which module happens to be imported first (and `isort: skip`
comments are how such cycles hide). Imports inside functions are deliberate, late and allowed:
only the top-level `import` / `from … import` statements of each module are edges here.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import rlhfkit

ROOT = Path(rlhfkit.__file__).parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _edges(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """rlhfkit modules `name` imports at its top level (a package's __init__ counts as importing it)."""
    out: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            if target in modules and target != name:
                out.add(target)
                # importing a.b.c runs the __init__ of a and a.b first
                parts = target.split(".")
                out.update(".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in modules)
    out.discard(name)
    return {m for m in out if not name.startswith(m + ".")}  # a module's own parent package is already importing


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycles():
    modules = _modules()
    graph = {name: _edges(name, path, modules) for name, path in modules.items()}
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_a_deliberate_cycle_is_found():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_every_module_imports_alone_in_a_fresh_interpreter():
    """One interpreter per module (two at a time: the machine has two cores)."""
    from concurrent.futures import ThreadPoolExecutor

    def import_alone(name: str) -> str | None:
        done = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        return None if done.returncode == 0 else f"{name}: {(done.stderr.strip().splitlines() or ['?'])[-1]}"

    names = [n for n in _modules() if not n.endswith("__main__")]
    with ThreadPoolExecutor(max_workers=2) as pool:
        failures = [f for f in pool.map(import_alone, names) if f is not None]
    assert not failures, "\n".join(failures)
