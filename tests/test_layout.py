"""The package layout as a contract: every package is installed, no import cycles, the camera side
never imports the inference side, and modules stay small."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
PACKAGE_DIR: dict[str, str] = PYPROJECT["package-dir"]

# Modules allowed over MAX_LINES because they hold one idea each (keep this list short).
MAX_LINES = 400
ONE_IDEA: dict[str, str] = {
    "fusewatch.stream.worker": "the one-camera Worker: decode -> clips -> extract -> publish, with its delivery accounting",
    "fusewatch.engines.serving.state": "the incremental per-camera graph state (ring buffer + cached cosine graphs)",
    "fusewatch.engines.evaluation.evaluate": "evaluate a model offline or streamed and report frame-level metrics",
}


def _module_files() -> dict[str, Path]:
    """``{dotted module name: file}`` for every module of every mapped package."""
    out: dict[str, Path] = {}
    for pkg, rel in PACKAGE_DIR.items():
        base = ROOT / rel
        for f in base.rglob("*.py"):
            parts = f.relative_to(base).with_suffix("").parts
            if any(p in ("__pycache__",) for p in parts):
                continue
            name = ".".join((pkg, *parts))
            if name.endswith(".__init__"):
                name = name[: -len(".__init__")]
            # a nested mapped package wins over its parent's folder (fusewatch.stream is stream/)
            if name not in out or len(pkg) > len(_owner(name, out)):
                out[name] = f
    return out


def _owner(name: str, out: dict[str, Path]) -> str:
    return max((p for p in PACKAGE_DIR if name == p or name.startswith(p + ".")), key=len)


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules ``name`` imports anywhere in its file (function bodies included)."""
    is_pkg = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base if is_pkg else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def _graph_here() -> dict[str, set[str]]:
    modules = _module_files()
    return {m: _imports(m, f, modules) for m, f in modules.items()}


def _graph() -> dict[str, set[str]]:
    """The import graph, parsed in a fresh interpreter: CPython 3.11's ``ast.parse`` can raise
    "AST constructor recursion depth mismatch" in a process where other tests hit deep recursion."""
    code = "import json, tests.test_layout as L; print(json.dumps({m: sorted(d) for m, d in L._graph_here().items()}))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return {m: set(d) for m, d in json.loads(out.stdout).items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_package_is_listed_in_pyproject():
    listed = set(PYPROJECT["packages"])
    on_disk = {m for m, f in _module_files().items() if f.name == "__init__.py"}
    assert on_disk == listed, f"missing: {sorted(on_disk - listed)}, stale: {sorted(listed - on_disk)}"


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_cycle_detector_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_stream_never_imports_engines():
    bad = {
        m: sorted(d for d in deps if d.startswith("fusewatch.engines"))
        for m, deps in _graph().items()
        if m.startswith("fusewatch.stream")
    }
    assert {m: d for m, d in bad.items() if d} == {}


def test_modules_stay_small():
    big = {
        m: n
        for m, f in _module_files().items()
        if (n := len(f.read_text().splitlines())) > MAX_LINES and m not in ONE_IDEA
    }
    assert big == {}, f"split these modules (or justify them in ONE_IDEA): {big}"
