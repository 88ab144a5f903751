"""The import layering of `agent/`, checked from the source (docs/architecture.md, "Layers").

One rule: a module imports only from its own layer or the layers below it, components of
the middle layer never import one another, and no import circle exists anywhere. Imports
inside functions count (they still tie two modules together); imports under
`if TYPE_CHECKING:` do not (they never run).

The layers, lowest first (the first pattern that matches a module decides its layer):

- core: the `Event`, the alert record, config types and the composed `Config`, state
  interfaces, self-metrics, logging set-up;
- parse: normalizing and enriching (`agent.parse`, `agent.enrich`, `agent.pipeline`);
- components: sources, sinks (with `agent.otel`), rules, alerts, state backends, quotas;
  each one a component that never imports another;
- features: the feature list and each feature's `install` (which fills the app's slots;
  the app's type only under TYPE_CHECKING), the console, hot reload;
- app: `GatewatchApp`, which installs the features;
- cli: the command line, which builds the app.
"""

from __future__ import annotations

import ast
import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "agent"

CORE, PARSE, COMPONENT, FEATURE, APP, CLI = range(6)

# (pattern, layer, component): the first match wins, so leaves inside a component's folder
# (its config section, its storage interface) are listed before the folder.
LAYERS: list[tuple[str, int, str]] = [
    ("agent", CORE, ""),
    ("agent.events", CORE, ""),
    ("agent.alert", CORE, ""),
    ("agent.config", CORE, ""),
    ("agent.configtypes", CORE, ""),
    ("agent.matchers", CORE, ""),
    ("agent.*.config", CORE, ""),
    ("agent.sources.tail.config", CORE, ""),
    ("agent.alerts.timeintervals", CORE, ""),  # a config type of the alerts section
    ("agent.state.base", CORE, ""),
    # the rule window interface and its in-memory rows, which the shared (Redis) one reuses
    ("agent.state.windows", CORE, ""),
    ("agent.selfmetrics", CORE, ""),
    ("agent.exposition", CORE, ""),
    ("agent.sqlitedb", CORE, ""),
    ("agent.logformat", CORE, ""),
    ("agent.logsetup", CORE, ""),
    ("agent.redact", CORE, ""),
    ("agent.s3", CORE, ""),
    ("agent.parse.safejson", CORE, ""),
    ("agent.parse", PARSE, ""),
    ("agent.parse.**", PARSE, ""),
    ("agent.enrich", PARSE, ""),
    ("agent.labelcap", PARSE, ""),
    ("agent.pipeline", PARSE, ""),
    ("agent.replay", PARSE, ""),
    # the top, in three steps: features (install hooks, the console, hot reload) <- the app
    # (which installs them) <- the command line (which builds the app)
    ("agent.host", FEATURE, ""),  # the face of the app that features see
    ("agent.features", FEATURE, ""),
    ("agent.*.feature", FEATURE, ""),
    ("agent.console", FEATURE, ""),
    ("agent.console.**", FEATURE, ""),
    ("agent.refresh", FEATURE, ""),
    ("agent.refresh.**", FEATURE, ""),
    ("agent.app", APP, ""),
    ("agent.cli", CLI, ""),
    ("agent.*.cli", CLI, ""),
    ("agent.*_cli", CLI, ""),
    ("agent.*.*_cli", CLI, ""),
    # components
    ("agent.sources", COMPONENT, "sources"),
    ("agent.sources.**", COMPONENT, "sources"),
    ("agent.sinks", COMPONENT, "sinks"),
    ("agent.sinks.**", COMPONENT, "sinks"),
    ("agent.otel", COMPONENT, "sinks"),
    ("agent.otel.**", COMPONENT, "sinks"),
    ("agent.rules", COMPONENT, "rules"),
    ("agent.rules.**", COMPONENT, "rules"),
    ("agent.alerts", COMPONENT, "alerts"),
    ("agent.alerts.**", COMPONENT, "alerts"),
    ("agent.state", COMPONENT, "state"),
    ("agent.state.**", COMPONENT, "state"),
    ("agent.quotas", COMPONENT, "quotas"),
    ("agent.quotas.**", COMPONENT, "quotas"),
]

NAMES = {CORE: "core", PARSE: "parse", COMPONENT: "component", FEATURE: "feature", APP: "app", CLI: "cli"}


def modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(name: str, path: Path, known: dict[str, Path]) -> set[tuple[str, int]]:
    """(imported agent module, line) for every import that runs, at any depth."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def resolve(target: str) -> str:
        while target and target not in known:
            target = target.rpartition(".")[0]
        return target

    found: set[tuple[str, int]] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for other in child.orelse:
                    visit_node(other)
                continue
            visit_node(child)

    def visit_node(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "agent":
                    found.add((resolve(alias.name), node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] == "agent":
                for alias in node.names:
                    full = f"{module}.{alias.name}"
                    found.add((full if full in known else resolve(module), node.lineno))
        visit(node)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
    return {(target, line) for target, line in found if target and target != name}


def _matches(parts: list[str], pattern: list[str]) -> bool:
    """`*` is one dotted part (shell-style inside it), a final `**` any number of them."""
    if pattern and pattern[-1] == "**":
        return len(parts) > len(pattern) - 1 and _matches(parts[: len(pattern) - 1], pattern[:-1])
    return len(parts) == len(pattern) and all(
        fnmatch.fnmatchcase(part, glob) for part, glob in zip(parts, pattern, strict=True)
    )


def layer_of(module: str) -> tuple[int, str]:
    for pattern, layer, component in LAYERS:
        if _matches(module.split("."), pattern.split(".")):
            return layer, component
    raise AssertionError(f"{module} matches no layer: add it to LAYERS in {__file__}")


def graph() -> dict[str, dict[str, int]]:
    known = modules()
    edges: dict[str, dict[str, int]] = {}
    for name, path in sorted(known.items()):
        edges[name] = {}
        for target, line in sorted(imports(name, path, known)):
            edges[name].setdefault(target, line)
    return edges


def circles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(edges[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges.get(child, {}))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def wrong_directions(edges: dict[str, dict[str, int]]) -> list[str]:
    wrong = []
    for source, targets in edges.items():
        source_layer, source_component = layer_of(source)
        for target, line in targets.items():
            target_layer, target_component = layer_of(target)
            if target_layer > source_layer:
                wrong.append(
                    f"{source} ({NAMES[source_layer]}) imports {target} ({NAMES[target_layer]}) at line {line}"
                )
            elif (
                source_layer == target_layer == COMPONENT and source_component != target_component
            ):
                wrong.append(
                    f"{source} ({source_component}) imports {target} ({target_component}) at line {line}"
                )
    return sorted(wrong)


def test_every_module_has_a_layer() -> None:
    for module in modules():
        layer_of(module)


# What is still being untangled (issue 17): each entry must go, none may be added. An entry
# that no longer occurs fails the test too, so the lists only shrink.
KNOWN_CIRCLES: list[list[str]] = []
KNOWN_WRONG: list[str] = []


def test_no_import_circle() -> None:
    edges = graph()
    found = circles(edges)
    ties = [" -> ".join(f"{m} imports {sorted(t for t in edges[m] if t in c)}" for m in c) for c in found]
    assert found == KNOWN_CIRCLES, "import circles:\n" + "\n".join(ties)


def test_imports_run_one_way() -> None:
    wrong = wrong_directions(graph())
    assert [w.rpartition(" at line ")[0] for w in wrong] == KNOWN_WRONG, "\n".join(wrong)


def test_only_the_top_knows_the_app() -> None:
    """Components and the core never take the app, not even as a type: a feature's
    `install(app)` hands them what they need."""
    knowing = []
    for name, path in modules().items():
        if layer_of(name)[0] >= FEATURE:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "agent.app":
                knowing.append(f"{name} line {node.lineno}")
    assert knowing == []


MAX_LINES = 600
# modules allowed past MAX_LINES: declared data tables, and what is still to be split
LONG_MODULES: dict[str, str] = {}


def test_no_module_over_600_lines() -> None:
    long = {name for name, path in modules().items()
            if len(path.read_text(encoding="utf-8").splitlines()) > MAX_LINES}
    assert long == set(LONG_MODULES)


def test_the_checker_sees_a_function_level_circle(tmp_path: Path) -> None:
    """The checker itself: a circle through a function-level import is found, one under
    TYPE_CHECKING is not."""
    pkg = tmp_path / "agent"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from agent import b\n")
    (pkg / "b.py").write_text("def f():\n    from agent.a import x\n")
    (pkg / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from agent import a\n"
    )
    known = {
        "agent": pkg / "__init__.py",
        "agent.a": pkg / "a.py",
        "agent.b": pkg / "b.py",
        "agent.c": pkg / "c.py",
    }
    edges = {name: dict(imports(name, path, known)) for name, path in known.items()}
    assert circles(edges) == [["agent.a", "agent.b"]]
    assert edges["agent.c"] == {}
