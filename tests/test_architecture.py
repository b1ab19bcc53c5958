"""The house by stages: imports run downwards only, with no circle, and the UI and the CLI call
the application layer (``backend.service``) and nothing under it.

Every import counts: at module level, inside functions and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BACKEND = ROOT / "backend"

#: Each top-level part of ``backend`` and its stage; a module may import its own part and
#: parts of a lower stage, never a higher one nor a peer of the same stage.
STAGES: dict[str, int] = {
    "errors": 0,
    "settings": 0,
    "imagery": 1,
    "models": 2,
    "store": 3,
    "embedding": 4,
    "landcover": 5,
    "search": 6,
    "classes": 6,
    "analysis": 6,
    "training": 6,
    "outputs": 7,
    "service": 8,
    "client": 9,
    "server": 9,
    "cli": 9,
}
#: The front doors (the ``softmap`` CLI, the HTTP service, its client) may use each other: the
#: CLI starts the service and talks to a running one through the client.
_DOORS = ("cli", "server", "client")
ALLOWED_PEERS: set[tuple[str, str]] = {(a, b) for a in _DOORS for b in _DOORS if a != b}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every ``backend…`` module a file imports (``from backend import x`` counts as backend.x)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "backend"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                mod = ".".join([*base, *([node.module] if node.module else [])])
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "backend":
                continue
            if mod == "backend":
                found |= {f"backend.{a.name}" for a in node.names}
            else:
                found.add(mod)
    return found


def backend_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(BACKEND.rglob("*.py"))}


def part(module: str) -> str | None:
    """``backend.store.cache`` → ``store``; ``backend`` itself → None."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else None


def test_every_backend_part_has_a_stage() -> None:
    parts = {part(m) for m in backend_modules()} - {None, "__version__"}
    assert parts <= set(STAGES), f"no stage for {sorted(parts - set(STAGES))}"


def test_lower_stages_never_import_higher_ones() -> None:
    wrong = []
    for name, path in backend_modules().items():
        here = part(name)
        if here is None:
            continue
        for target in imports_of(path):
            there = part(target)
            if there is None or there == here or there == "__version__":
                continue
            if STAGES[there] > STAGES[here] or (
                STAGES[there] == STAGES[here] and (here, there) not in ALLOWED_PEERS
            ):
                wrong.append(f"{name} ({here}, stage {STAGES[here]}) imports {target}")
    assert not wrong, "\n".join(wrong)


def test_no_import_circles() -> None:
    modules = backend_modules()
    graph = {
        name: {t for t in imports_of(path) if t in modules and t != name}
        for name, path in modules.items()
    }
    # A package imports its own submodules to re-export them: that edge is not a dependency
    # of the package on a higher layer, and would make every package a circle with its parts.
    for name in graph:
        if modules[name].name == "__init__.py":
            graph[name] = {t for t in graph[name] if not t.startswith(name + ".")}
        else:
            graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    cycles = _cycles(graph)
    assert not cycles, "import circles: " + "; ".join(" → ".join(c) for c in cycles)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


#: What pages and CLI commands may import: the application layer, and the front doors beside
#: them (``softmap serve`` starts the HTTP service; the CLI may go through its client).
FRONT_DOORS = ("backend.service.", "backend.cli", "backend.server", "backend.client")


@pytest.mark.parametrize(
    "folder", [ROOT / "pages", BACKEND / "cli" / "commands"], ids=["pages", "cli-commands"]
)
def test_ui_and_cli_call_only_the_application_layer(folder: Path) -> None:
    wrong = []
    for path in sorted(folder.glob("*.py")):
        for target in imports_of(path):
            if target == "backend.service" or target.startswith(FRONT_DOORS):
                continue
            wrong.append(f"{path.relative_to(ROOT)} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_the_backend_never_imports_streamlit() -> None:
    for path in BACKEND.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not any(n.split(".")[0] == "streamlit" for n in names), path
