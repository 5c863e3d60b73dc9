"""The package's imports point down (cli -> training/evaluation -> weights/convert -> registry/models
-> layers): the graph of module-level imports has no cycle, and the modules below the command
line do not hide one behind an import inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import REPO_ROOT

PACKAGE = REPO_ROOT / "keras_attention"

#: Modules that must not import keras_attention inside functions (where a cycle would hide).
NO_FUNCTION_LEVEL_IMPORTS = ("keras_attention", "keras_attention._api", "keras_attention._errors",
                             "keras_attention._files", "keras_attention.registry", "keras_attention.weights",
                             "keras_attention.convert", "keras_attention.cli._weights",
                             "keras_attention.evaluation", "keras_attention.training", "keras_attention.data")
#: Package modules that import an optional dependency (TensorFlow) at their top: importing them
#: inside a function is how the rest of the package stays usable without it.
OPTIONAL = {"keras_attention.data.tf_pipeline", "keras_attention.data.tf_augment"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO_ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _targets(node, module: str, is_package: bool, modules) -> list[str]:
    """The package modules an import statement executes (submodules where named)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "keras_attention"]
    base = node.module or ""
    if node.level:
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        anchor = anchor[:len(anchor) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
    if base.split(".")[0] != "keras_attention":
        return []
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]


def _is_type_checking(node) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(path: Path, module: str, modules) -> tuple[set[str], set[str]]:
    """(module-level targets, function-level targets) of one file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    top, inner = set(), set()

    def visit(node, in_function: bool):
        if _is_type_checking(node):
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            (inner if in_function else top).update(t for t in _targets(node, module, is_package, modules)
                                                   if t != module)
        for child in ast.iter_child_nodes(node):
            visit(child, in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    return top, inner


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if state.get(nxt) is None:
                found = dfs(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if state.get(node) is None:
            found = dfs(node)
            if found:
                return found
    return None


def test_the_module_import_graph_is_acyclic():
    modules = _modules()
    graph = {name: _imports(path, name, modules)[0] for name, path in modules.items()}
    assert graph["keras_attention.weights._builder"] >= {"keras_attention.convert.timm"}
    assert "keras_attention.weights" not in str(graph["keras_attention.registry"])
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_import_inside_functions_below_the_command_line():
    modules = _modules()
    offenders = []
    for name, path in modules.items():
        if name in NO_FUNCTION_LEVEL_IMPORTS or name.startswith(("keras_attention.weights.",
                                                                 "keras_attention.convert.",
                                                                 "keras_attention.training.",
                                                                 "keras_attention.data.")):
            inner = _imports(path, name, modules)[1] - OPTIONAL
            offenders += [f"{name} imports {t} inside a function" for t in sorted(inner)]
    assert not offenders, offenders


def test_the_cycle_finder_finds_cycles():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
