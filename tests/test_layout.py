"""The layout shows the architecture: no import cycles, the domain library free of
Kedro and of the accelerator."""

from __future__ import annotations

import ast
from pathlib import Path

SOURCE = Path(__file__).parents[1] / "src"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(path: Path, modules: set[str]) -> set[str]:
    """Every module ``path`` imports anywhere (functions and ``TYPE_CHECKING``
    blocks included: a cycle through them is still a cycle in the design);
    ``from package import module`` counts as the module only."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in modules else base)
    return found - {name}


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The project's modules that ``path`` imports."""
    return {module for module in _imported(path, modules) if module in modules}


def _graph() -> dict[str, set[str]]:
    paths = list(SOURCE.rglob("*.py"))
    modules = {_module_name(path) for path in paths}
    return {_module_name(path): _imports(path, modules) for path in paths}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in graph[module]:
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                other = stack.pop()
                component.append(other)
                if other == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in graph:
        if module not in index:
            visit(module)
    return cycles


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_one():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_the_domain_library_needs_neither_kedro_nor_the_accelerator():
    modules = {_module_name(path) for path in SOURCE.rglob("*.py")}
    for path in (SOURCE / "pvg_pipeline" / "pvg").rglob("*.py"):
        for module in _imported(path, modules):
            assert not module.startswith(("kedro", "pvg_pipeline.accelerate")), (
                path,
                module,
            )


def _environment_keys(tree: ast.AST) -> list[object]:
    """The key of every ``os.environ`` / ``os.getenv`` access: a string, or the
    expression's text when it is not a literal."""
    keys: list[object] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = ast.unparse(node.func.value)
            reads = owner.endswith("environ") or node.func.attr == "getenv"
            if reads and node.args:
                key = node.args[0]
                literal = isinstance(key, ast.Constant)
                keys.append(key.value if literal else ast.unparse(key))
        elif isinstance(node, ast.Subscript) and ast.unparse(node.value).endswith(
            "environ"
        ):
            key = node.slice
            literal = isinstance(key, ast.Constant)
            keys.append(key.value if literal else ast.unparse(key))
    return keys


def test_the_environment_overrides_are_read_in_one_module():
    """How a run computes is set by parameters; the environment variables that
    override it for benchmarks (``PVG_*``) are read in ``pvg/overrides.py`` only.
    Elsewhere every environment access names a literal non-``PVG_`` variable."""
    overrides = SOURCE / "pvg_pipeline" / "pvg" / "overrides.py"
    for path in SOURCE.rglob("*.py"):
        if path == overrides:
            continue
        for key in _environment_keys(ast.parse(path.read_text())):
            assert isinstance(key, str) and not key.startswith("PVG_"), (path, key)
    assert _environment_keys(ast.parse(overrides.read_text()))


def test_the_override_check_sees_a_variable_key():
    tree = ast.parse("import os\nos.environ.get(SWITCH, '1')\nos.environ['PATH']")
    assert _environment_keys(tree) == ["SWITCH", "PATH"]


def test_modules_stay_short():
    """One concept per module: none over 400 lines."""
    long = {
        path.relative_to(SOURCE).as_posix(): lines
        for path in SOURCE.rglob("*.py")
        if (lines := len(path.read_text().splitlines())) > 400
    }
    assert long == {}
