"""The import graph of the project's own modules: no cycle, and no arrow back up a layer.

Every ``.py`` under models/, transforms/, scraping/ and pipelines/ is parsed (imports at module level and inside
functions alike, so a lazy import cannot hide a cycle); ``from package import name`` counts as importing the module
``package.name`` when that module exists, else ``package``.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "transforms", "scraping", "pipelines")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module → the modules (of the project, or external top-level packages) it imports."""
    files = {module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")}
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the importing module's package
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in node.names:
                    targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base)
        graph[name] = {target for target in targets if target != name}
    return graph


GRAPH = import_graph()
OWN = set(GRAPH)


def imports_of(prefix: str) -> set[tuple[str, str]]:
    return {(m, t) for m, targets in GRAPH.items() if m == prefix or m.startswith(prefix + ".") for t in targets}


def under(target: str, prefix: str) -> bool:
    return target == prefix or target.startswith(prefix + ".")


def test_the_graph_is_read():
    assert "models.style.checkpoint" in GRAPH and "models.common.checkpoint" in GRAPH["models.style.checkpoint"]
    assert "models.style.checkpoint" in GRAPH["models.style.registry"]


def test_no_import_cycle():
    own = {m: {t for t in targets if t in OWN} for m, targets in GRAPH.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(own[module]):
            if state.get(target) == 1:
                cycle = path[path.index(target) :] + [target]
                pytest.fail("import cycle: " + " → ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(own):
        if module not in state:
            visit(module)


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        ("models", ("apache_beam", "transforms", "pipelines", "scraping")),
        ("models.common", ("models.style", "models.embedding", "models.dream")),
        ("models.embedding", ("models.style",)),
        ("scraping", ("transforms", "pipelines")),
        ("transforms", ("pipelines",)),
    ],
)
def test_no_arrow_back_up_a_layer(layer, forbidden):
    wrong = sorted(f"{m} imports {t}" for m, t in imports_of(layer) if any(under(t, f) for f in forbidden))
    assert not wrong, "; ".join(wrong)
