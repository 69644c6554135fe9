"""The import rules of ARCHITECTURE.md, read from the source with `ast` (nothing is imported):

- a stage (`jobs/`) never imports another stage; `daily` may call the stages it orchestrates
  through their public `run`;
- library packages never import a stage;
- `common/` imports nothing of the project above it;
- no two project modules import each other, directly or through others;
- no module of the code packages is over MAX_LINES lines.
"""
from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
STAGES = "jobs"
LIBRARIES = ("features", "evaluation", "serving", "dcn", "synthetic")
COMMON = "common"
PROJECT = (STAGES, COMMON, *LIBRARIES)
# stage -> the stages it may call (through their `run`)
ORCHESTRATES = {"jobs.daily": {"jobs.score"}}
MAX_LINES = 500


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, pathlib.Path]:
    return {module_name(path): path for package in PROJECT
            for path in sorted((ROOT / package).rglob("*.py"))}


def executed_nodes(tree: ast.AST):
    """Every node of `tree` except what sits under `if TYPE_CHECKING:` (never run)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            yield from (n for orelse in node.orelse for n in [orelse, *executed_nodes(orelse)])
            continue
        yield node
        yield from executed_nodes(node)


def imports_of(path: pathlib.Path, modules: dict[str, pathlib.Path]) -> set[str]:
    """The project modules `path` imports, anywhere in the file (function-local imports
    count: they run too; imports for type checkers only do not)."""
    found = set()
    for node in executed_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from package import module` imports the module; `from module import name`
            # imports the module
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(path, modules) - {name} for name, path in modules.items()}


def top(module: str) -> str:
    return module.partition(".")[0]


def test_the_graph_is_read(graph):
    """The rules below mean something only if the graph holds the project's imports."""
    assert {"jobs.build_features", "common.config", "features.user_state"} <= set(graph)
    assert "common.config" in graph["jobs.build_features"]


def test_no_stage_imports_another_stage(graph):
    offences = [f"{module} imports {target}" for module, targets in graph.items()
                if top(module) == STAGES for target in sorted(targets)
                if top(target) == STAGES and target != STAGES
                and target not in ORCHESTRATES.get(module, set())]
    assert offences == []


def test_no_library_imports_a_stage(graph):
    offences = [f"{module} imports {target}" for module, targets in graph.items()
                if top(module) in LIBRARIES for target in sorted(targets) if top(target) == STAGES]
    assert offences == []


def test_common_imports_nothing_above_it(graph):
    offences = [f"{module} imports {target}" for module, targets in graph.items()
                if top(module) == COMMON for target in sorted(targets) if top(target) != COMMON]
    assert offences == []


def import_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a path that ends where it starts, or None."""
    state: dict[str, int] = {}   # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], _ = 1, path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node], _ = 2, path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_import_cycle_finder_finds_one():
    assert import_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert import_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles(graph):
    # a package's __init__ re-exporting nothing, edges into packages are not cycles
    modules = {name: {t for t in targets if not (name.startswith(t + "."))}
               for name, targets in graph.items()}
    assert import_cycle(modules) is None


def test_no_module_is_over_the_size_limit():
    sizes = {module: len(path.read_text(encoding="utf-8").splitlines())
             for module, path in project_modules().items()}
    assert {module: n for module, n in sizes.items() if n > MAX_LINES} == {}


def test_imports_for_type_checkers_only_are_not_edges(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from typing import TYPE_CHECKING\nimport common.config\n"
                      "if TYPE_CHECKING:\n    import common.dates\n"
                      "def f():\n    import common.names\n")
    modules = {name: ROOT for name in ("common.config", "common.dates", "common.names")}
    assert imports_of(module, modules) == {"common.config", "common.names"}
