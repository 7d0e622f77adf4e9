"""The package's layering, read from the source: no import circles between modules
(imports inside functions count), and the rooms keep to their floors."""

from __future__ import annotations

import ast
from pathlib import Path

import ssamba

ROOT = Path(ssamba.__file__).parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The ssamba modules ``name`` imports anywhere in its source (``TYPE_CHECKING``
    blocks included), each resolved to the module file it loads."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                full = f"{module}.{alias.name}"
                found.add(full if full in modules else module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules it imports, without the edges between a package and the
    modules inside it (a package's ``__init__`` gathering its own parts is no circle)."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        graph[name] = {m for m in _imports(name, path, modules)
                       if not (name.startswith(m + ".") or m.startswith(name + "."))}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 50 and "ssamba.models.serialization" in graph
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(
        " <-> ".join(c) + "\n    " + "\n    ".join(f"{m} -> {sorted(graph[m] & set(c))}" for m in c) for c in found)


def test_rooms_keep_to_their_floors():
    # data never imports models; encoders and layers never import objectives or training;
    # the front end and the ops import nothing above them; only the CPU kernels (and the
    # scan benchmark's roofline, built against the kernel's SIMD header) use the build module.
    graph = import_graph()
    below = {
        "ssamba.data": ("ssamba.models", "ssamba.training", "ssamba.objectives"),
        "ssamba.frontend": ("ssamba.models", "ssamba.layers", "ssamba.data", "ssamba.training"),
        "ssamba.ops": ("ssamba.layers", "ssamba.models", "ssamba.training"),
        # layers reach the ops through their dispatch, never a backend or the kernels' build
        "ssamba.layers": ("ssamba.models", "ssamba.objectives", "ssamba.training", "ssamba.ops.scan_",
                          "ssamba.ops.conv_cpu", "ssamba.ops.build"),
        "ssamba.models": ("ssamba.objectives", "ssamba.training", "ssamba.data"),
        "ssamba.interfaces": ("ssamba.benchmarks",),  # the benchmarks measure the interfaces, not the other way
    }
    for room, forbidden in below.items():
        for module, targets in graph.items():
            if module == room or module.startswith(room + "."):
                bad = sorted(t for t in targets if t.startswith(forbidden))
                assert not bad, f"{module} imports {bad}"
    builders = {m for m, targets in graph.items() if "ssamba.ops.build" in targets}
    assert builders == {"ssamba.ops.scan_cpu", "ssamba.ops.conv_cpu", "ssamba.benchmarks.scan"}, builders


def test_no_function_in_the_package_is_over_80_lines():
    # a function that long does several jobs: split it where they part
    long = []
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} "
                            f"({node.end_lineno - node.lineno + 1} lines)")
    assert not long, long
