"""The tree reads as the architecture (docs/architecture.md): no import cycles, data flows one way.

Every import counts, at module level, inside functions and under ``TYPE_CHECKING`` alike: a cycle
that only type checkers see is still two modules that cannot be read apart. ``from pkg import
mod`` where ``pkg.mod`` is a module depends on ``pkg.mod`` only (not on ``pkg/__init__``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import ROOT

PACKAGES = ("attacks_client", "service", "benchmarks")
MAX_LINES = 400

# attacks_client: cli -> evaluation -> attacks -> oracles; data is a leaf anyone may read.
# Each layer may import itself and the layers listed; the package root and __main__ may import
# all of them (they are the public API and the entry point).
CLIENT_LAYERS: dict[str, set[str]] = {
    "data": set(),
    "oracles": set(),
    "attacks": {"oracles", "data"},
    "evaluation": {"attacks", "oracles", "data"},
    "cli": {"evaluation", "attacks", "oracles", "data"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


MODULES = modules()


def imports_of(name: str, path: Path) -> Iterator[str]:
    """The project modules ``name`` imports, resolved to modules where a name is one."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:  # `import a.b.c` of a name: its module
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target


GRAPH = {name: sorted(set(imports_of(name, path))) for name, path in MODULES.items()}


def cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, []):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def client_layer(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if parts[0] == "attacks_client" and len(parts) > 1 else None


def test_the_walker_sees_a_cycle_and_an_upward_import() -> None:
    """The checks below could fail: a made-up graph with both faults is caught."""
    graph = {"a": ["b"], "b": ["c"], "c": ["a"], "d": []}
    assert cycles(graph) == [["a", "b", "c"]]
    # real edges are seen: relative and absolute, a package and a submodule imported by name
    assert GRAPH["attacks_client.__main__"] == ["attacks_client.cli"]
    assert "attacks_client.oracles.base" in GRAPH["attacks_client.attacks.base"]
    assert "attacks_client.cli.demo" in GRAPH["attacks_client.cli.parser"]


def test_no_import_cycles() -> None:
    assert cycles(GRAPH) == []


def test_the_client_imports_only_downward() -> None:
    upward = []
    for name, deps in GRAPH.items():
        layer = client_layer(name)
        if layer not in CLIENT_LAYERS:
            continue  # the package root, __main__, or outside the client
        for dep in deps:
            target = client_layer(dep)
            if (
                dep.split(".")[0] == "attacks_client"
                and target != layer
                and (target not in CLIENT_LAYERS[layer])
            ):
                upward.append(f"{name} -> {dep}")
    assert upward == []


def test_client_and_service_never_import_each_other() -> None:
    """The client is a true black box (HTTP only); the service knows nothing of attacks."""
    crossing = [
        f"{n} -> {d}"
        for n, deps in GRAPH.items()
        for d in deps
        if {n.split(".")[0], d.split(".")[0]} == {"attacks_client", "service"}
    ]
    assert crossing == []


# service: the request path (api: routes -> one pipeline; app) on top, the codecs (protocol)
# below it, then serving (model hosts, pool, batcher), detection, accounting, and the leaves
# (defenses, models, settings, errors, metrics). Offline tools (training, clean accuracy,
# datasets) sit beside the server, which never imports them.
REQUEST_PATH = ("service.api", "service.app", "service.__main__")
BELOW_THE_REQUEST_PATH = (
    "service.protocol",
    "service.serving",
    "service.detection",
    "service.accounting",
    "service.defenses",
    "service.models",
    "service.settings",
    "service.model_settings",
    "service.errors",
    "service.metrics",
    "service.offline",
)
BELOW_THE_CODECS = tuple(p for p in BELOW_THE_REQUEST_PATH if p != "service.protocol")


def edges_from(sources: tuple[str, ...], targets: tuple[str, ...]) -> list[str]:
    return [
        f"{n} -> {d}"
        for n, deps in GRAPH.items()
        if n.startswith(sources)
        for d in deps
        if d.startswith(targets)
    ]


def closure(roots: list[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(GRAPH.get(name, []))
    return seen


def test_the_request_path_is_never_imported_from_below() -> None:
    """Serving, detection, accounting and the leaves know nothing of routes or the pipeline."""
    assert edges_from(BELOW_THE_REQUEST_PATH, REQUEST_PATH) == []


def test_only_the_request_path_and_the_proxy_use_the_codecs() -> None:
    """The codecs (``service.protocol``) are used by the routes, and by the upstream host,
    which speaks the Open Inference Protocol to its server (one OIP wire module for both)."""
    allowed = ("service.serving.upstream", "service.serving.local")
    wrong = [
        e for e in edges_from(BELOW_THE_CODECS, ("service.protocol",)) if not e.startswith(allowed)
    ]
    assert wrong == []


def test_the_server_never_imports_the_offline_tools() -> None:
    """Everything the server process can import (from its entry point and app factory)
    excludes training, clean-accuracy measurement and datasets; they do not import it either."""
    served = closure(["service.__main__", "service.app"])
    assert "service.api.pipeline" in served and "service.serving.pool" in served  # it walks
    assert sorted(m for m in served if m.startswith("service.offline")) == []
    assert edges_from(("service.offline",), REQUEST_PATH + ("service.serving",)) == []


def test_the_service_tree_has_its_floors() -> None:
    """Each concern is a package, and the service root holds only the cross-cutting pieces."""
    root = sorted(
        n for n in MODULES if n.startswith("service.") and n.count(".") == 1 and n in GRAPH
    )
    packages = {"api", "protocol", "serving", "accounting", "detection", "defenses", "models"}
    flat = [n for n in root if n.split(".")[1] not in packages | {"offline"}]
    assert flat == [
        "service.__main__",
        "service.app",
        "service.errors",
        "service.metrics",
        "service.model_settings",
        "service.settings",
    ]


SHORT = {**MODULES, **{module_name(p): p for p in sorted((ROOT / "tests").rglob("*.py"))}}


@pytest.mark.parametrize("name", sorted(SHORT))
def test_modules_stay_short(name: str) -> None:
    lines = len(SHORT[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines"
