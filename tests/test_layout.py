"""The layout's one rule, checked: layers only look down. In the Rust core a module names only modules of
its own layer or below; in the Python package no module imports (even lazily) one that imports it back."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# From the bottom up (README, Layout).
LAYERS = [
    {"error", "event", "stage"},
    {"validate", "generate", "contract"},
    {"options"},
    {"config"},
    {"kafka"},
    {"resume"},
    {"pg", "dead_letter"},
    {"sink"},
    {"metrics", "dlq", "contract_check"},
    {"produce", "process", "load"},
    {"py"},
]
LAYER = {module: i for i, layer in enumerate(LAYERS) for module in layer}


def _module_of(path: Path) -> str:
    rel = path.relative_to(ROOT / "src")
    return rel.parts[0].removesuffix(".rs")


def test_every_rust_module_has_a_layer() -> None:
    modules = {_module_of(p) for p in (ROOT / "src").rglob("*.rs")} - {"lib"}
    assert modules <= set(LAYER), sorted(modules - set(LAYER))


def test_rust_modules_only_look_down() -> None:
    upward = []
    for path in (ROOT / "src").rglob("*.rs"):
        own = _module_of(path)
        if own == "lib":
            continue
        for used in set(re.findall(r"crate::([a-z_]+)", path.read_text())):
            if used in LAYER and LAYER[used] > LAYER[own]:
                upward.append(f"{path.relative_to(ROOT)} uses crate::{used}")
    assert not upward, upward


def _imports(path: Path) -> set[str]:
    """The ecomlogs modules a file imports, at any depth of the file (lazy imports included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ecomlogs"):
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("ecomlogs"))
    return out


def test_python_modules_have_no_import_cycle() -> None:
    package = ROOT / "python"
    modules = {}
    for path in package.rglob("*.py"):
        name = ".".join(path.relative_to(package).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    graph = {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}
    # A package's __init__ importing its own submodules is how packages work, not a cycle.
    for name in graph:
        graph[name] = {m for m in graph[name] if not m.startswith(name + ".")}

    def cycle_from(start: str) -> list[str]:
        stack = [(start, [start])]
        seen = set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    return path + [start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
        return []

    cycles = [c for c in (cycle_from(m) for m in graph) if c]
    assert not cycles, cycles[0]
