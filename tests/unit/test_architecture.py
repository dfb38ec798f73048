"""The house plan of ``mlops_lib`` holds: layers, no import cycles, no Airflow.

The import graph is read from the source (every ``import`` statement, function-local ones
included, since a hidden import is still a dependency), so a new module or import that
breaks a rule fails here with the offending edges named.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "mlops_lib"

# Building blocks: what stages are made of. They never import a stage or an app.
BUILDING_BLOCKS = (
    "settings",
    "spec",
    "expressions",
    "layout",
    "versioning",
    "datasets",
    "lineage",
    "stack",
    "features",
    "profiles",
    "sources",
    "quality",
    "metrics",
    "mlflow_lakefs",
    "tracking",
    "feature_store",
)
# Stages of the life cycle, each called by its DAG tasks (the first, the use case's
# assessment, by the CLI). They never import an app.
STAGES = (
    "assessment",
    "ingest",
    "automl",
    "training",
    "registry",
    "serving",
    "monitoring",
    "labels",
    "continuous_training",
)
# What people and the scheduler use: the CLI, the demo, the UI's data, the stack with
# deployments, the Airflow REST client, traffic and demo data generators, spec drafting.
APPS = (
    "cli",
    "drafting",
    "demo",
    "demo_data",
    "overview",
    "platform_check",
    "platform_stack",
    "airflow_api",
    "traffic",
)
LAYERS = {"building block": 0, "stage": 1, "app": 2}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The innermost module of ``mlops_lib`` a dotted name refers to."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imported(module: str, node: ast.Import | ast.ImportFrom, modules: dict) -> set[str]:
    """Modules of ``mlops_lib`` one import statement depends on."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        assert not node.level, f"{module}: use absolute imports (line {node.lineno})"
        # `from pkg import sub` depends on pkg.sub when sub is a module, else on pkg.
        names = [f"{node.module}.{a.name}" for a in node.names]
    found = {_resolve(n, modules) for n in names if n.split(".")[0] == "mlops_lib"}
    return {m for m in found if m and m != module}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        graph[name] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                graph[name] |= _imported(name, node, modules)
    return graph


def _room(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def _layer(module: str) -> str | None:
    room = _room(module)
    if room in BUILDING_BLOCKS:
        return "building block"
    if room in STAGES:
        return "stage"
    if room in APPS:
        return "app"
    return None


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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

    for v in graph:
        if v not in index:
            visit(v)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return _graph()


def test_every_module_belongs_to_one_layer(graph) -> None:
    unplaced = sorted(m for m in graph if m != "mlops_lib" and _layer(m) is None)
    assert not unplaced, f"place these modules in a layer of {__name__}: {unplaced}"


def test_no_import_cycles_function_local_imports_included(graph) -> None:
    assert _cycles(graph) == []


def test_no_module_imports_a_higher_layer(graph) -> None:
    upward = sorted(
        f"{m} ({_layer(m)}) -> {d} ({_layer(d)})"
        for m, deps in graph.items()
        for d in deps
        if _layer(m) and _layer(d) and LAYERS[_layer(d)] > LAYERS[_layer(m)]
    )
    assert not upward, "\n".join(upward)


def test_the_stack_never_imports_serving(graph) -> None:
    offending = sorted(
        f"{m} -> {d}"
        for m, deps in graph.items()
        if _room(m) == "stack"
        for d in deps
        if _room(d) == "serving"
    )
    assert not offending, offending


def test_mlops_lib_never_imports_airflow() -> None:
    offending = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                roots = [(node.module or "").split(".")[0]]
            else:
                continue
            if "airflow" in roots:
                offending.append(f"{name}:{node.lineno}")
    assert not offending, offending


# Modules whose functions import siblings lazily as a rule, said in their docstring.
LAZY_BY_DESIGN = ("mlops_lib.cli",)


def test_function_local_imports_of_siblings_say_why() -> None:
    """A sibling imported inside a function must keep something heavy out of DAG parsing
    or CLI start-up, and the line says so; everything else is imported at module level."""
    silent = []
    for name, path in _modules().items():
        if name in LAZY_BY_DESIGN:
            continue
        source = path.read_text()
        lines = source.splitlines()
        for func in ast.walk(ast.parse(source)):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(func):
                is_import = isinstance(node, ast.Import | ast.ImportFrom)
                sibling = is_import and any(
                    n.startswith("mlops_lib")
                    for n in (
                        [a.name for a in node.names]
                        if isinstance(node, ast.Import)
                        else [node.module or ""]
                    )
                )
                if sibling and "#" not in lines[node.lineno - 1]:
                    silent.append(f"{name}:{node.lineno}")
    assert not silent, silent


def test_the_graph_sees_function_local_imports() -> None:
    """The reader of the graph counts an import inside a function body."""
    modules = {"mlops_lib.a": Path("a.py"), "mlops_lib.b": Path("b.py")}
    node = ast.parse("def f():\n    from mlops_lib.b import x\n").body[0].body[0]
    assert _imported("mlops_lib.a", node, modules) == {"mlops_lib.b"}
