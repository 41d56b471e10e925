"""The import structure of ``src/maw``: no import cycle, and no module imports a higher layer.

Imports are read with ``ast`` from the source (nothing is imported): module-level and
function-level ones alike (also those under ``if TYPE_CHECKING``), relative ones resolved. ``from
maw.pkg import name`` counts as an import of the submodule ``maw.pkg.name`` when there is one, of
the module a package's lazy ``_EXPORTS`` table maps ``name`` to (``maw.training``), else of
``maw.pkg`` itself; a package with such a table imports every module in it.

The layers, lowest first (a module may import its own layer and the ones below, never above):

=================  ===============================================================================
``maw``            the package root: ``__version__`` (its lazy facade over ``maw.api`` is the one
                   exception: PEP 562 ``__getattr__``, nothing is imported with ``import maw``)
``maw.config``     the option dataclasses, validated once
``maw.utils``      I/O, portable paths, precision
``maw.plan``       ``resolve``: the one validated plan (layer lists parsed, D checked)
``maw.data``       collections, splits
``maw.attention``  the MAW block and routers (shipped inside exports: config + attention only)
``maw.models``     the encoder, families, MAW injection
``maw.retrieval``  BM25, embedding stores, FAISS
``maw.evaluation`` metrics (the metric names), ``maw evaluate``
``maw.training``   methods, checkpoints, the trainer
``maw.benchmark``  cells, the scheduler, reports
``maw.sweep``      the sweep and its study (on the benchmark's scheduler)
``maw.export``     sentence-transformers folders, model cards
``maw.api``        the Python API
``maw.cli``        the ``maw`` command
=================  ===============================================================================
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
LAYERS = (
    "maw",
    "maw.config",
    "maw.utils",
    "maw.plan",
    "maw.data",
    "maw.attention",
    "maw.models",
    "maw.retrieval",
    "maw.evaluation",
    "maw.training",
    "maw.benchmark",
    "maw.sweep",
    "maw.export",
    "maw.api",
    "maw.cli",
)
ALLOWED_UPWARD = {("maw", "maw.api")}  # the root's lazy facade (module docstring)


def modules(src: Path = SRC) -> dict[str, Path]:
    """Dotted name -> file of every module of the ``maw`` package under ``src``."""
    out = {}
    for path in sorted((src / "maw").rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _lazy_exports(tree: ast.Module) -> dict[str, str]:
    """A package's ``_EXPORTS = {name: module}`` table (lazy ``__getattr__``), or {}."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in node.targets
        ):
            return ast.literal_eval(node.value)
    return {}


def _owner(dotted: str, mods: dict[str, Path]) -> str | None:
    """The module ``dotted`` names, or the closest package above it (None outside maw)."""
    while dotted and dotted not in mods:
        dotted = dotted.rpartition(".")[0]
    return dotted or None


def _imports(name: str, tree: ast.Module, mods: dict[str, Path], lazy: dict[str, dict]) -> dict[str, int]:
    """{imported maw module: line of its first import} of one module (line 0: a lazy _EXPORTS entry)."""
    package = name if mods[name].name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str | None, int]] = [(_owner(t, mods), 0) for t in lazy[name].values()]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [
                (_owner(a.name, mods), node.lineno) for a in node.names if a.name.split(".")[0] == "maw"
            ]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                module = ".".join(
                    [*parts[: len(parts) - node.level + 1], *([node.module] if node.module else [])]
                )
            else:
                module = node.module or ""
            if module.split(".")[0] != "maw":
                continue
            for alias in node.names:
                full = f"{module}.{alias.name}"
                if full in mods:
                    found.append((full, node.lineno))
                elif alias.name in lazy.get(module, {}):
                    found.append((_owner(lazy[module][alias.name], mods), node.lineno))
                else:
                    found.append((_owner(module, mods), node.lineno))
    edges: dict[str, int] = {}
    for target, line in sorted(found, key=lambda e: e[1]):
        if target is not None and target != name:
            edges.setdefault(target, line)
    return edges


def import_graph(src: Path = SRC) -> dict[str, dict[str, int]]:
    """module -> {imported maw module: line of the first such import}, every import in the file."""
    mods = modules(src)
    trees = {name: ast.parse(path.read_text(encoding="utf-8"), str(path)) for name, path in mods.items()}
    lazy = {name: _lazy_exports(tree) for name, tree in trees.items()}
    return {name: _imports(name, tree, mods, lazy) for name, tree in trees.items()}


def layer_of(module: str) -> int:
    """Index in :data:`LAYERS` of the longest layer name that is ``module`` or a package above it."""
    best = max((n for n in LAYERS if module == n or module.startswith(n + ".")), key=len)
    return LAYERS.index(best)


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
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
    return sorted(found)


def upward_imports(graph: dict[str, dict[str, int]]) -> list[str]:
    """``a:line -> b`` for every import of a higher layer (outside :data:`ALLOWED_UPWARD`)."""
    return [
        f"{a}:{line} -> {b} ({LAYERS[layer_of(a)]} imports {LAYERS[layer_of(b)]})"
        for a, edges in sorted(graph.items())
        for b, line in sorted(edges.items())
        if layer_of(b) > layer_of(a) and (a, b) not in ALLOWED_UPWARD
    ]


@pytest.fixture(scope="module")
def graph() -> dict[str, dict[str, int]]:
    return import_graph()


def test_the_graph_sees_module_and_function_level_imports(graph):
    assert graph["maw.plan"].keys() >= {"maw.config"}  # module level
    assert "maw.training.methods" in graph["maw.api"]  # inside functions only
    assert "maw.training.methods" in graph["maw.training"]  # a lazy _EXPORTS table
    assert "maw.training.methods" in graph["maw.export.sentence_transformers"]


def test_no_import_cycle(graph):
    assert cycles(graph) == []


def test_no_module_imports_a_higher_layer(graph):
    assert upward_imports(graph) == []


def test_every_layer_exists_and_the_root_stays_light(graph):
    mods = set(graph)
    assert all(layer in mods for layer in LAYERS), sorted(set(LAYERS) - mods)
    assert set(graph["maw"]) == {"maw.api"}  # the lazy facade only
