"""The code's shape, as the developers' guide asks for it: short functions,
one module per concept with every module documented, and boto3 and
sqlite-utils each confined to one module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "dynasync"
MAX_FUNCTION_LINES = 60


def _functions(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text())
    return [
        (node.name, node.end_lineno - node.lineno + 1)  # type: ignore[operator]
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    ]


def test_no_function_is_longer_than_60_lines() -> None:
    files = [*PACKAGE.glob("*.py"), *(ROOT / "scripts").glob("*.py")]
    long = [f"{p.name}:{name} ({n} lines)" for p in files for name, n in _functions(p) if n > MAX_FUNCTION_LINES]
    assert not long, long


def test_readme_layout_names_every_module() -> None:
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("### Layout"):]
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    missing = sorted(m for m in modules if f"`{m}`" not in layout)
    assert not missing, f"README layout section does not name {missing}"


def _importers(module: str) -> set[str]:
    pattern = re.compile(rf"^\s*(import|from) {module}\b", re.MULTILINE)
    return {p.stem for p in PACKAGE.glob("*.py") if pattern.search(p.read_text())}


def test_boto3_and_sqlite_utils_each_stay_in_one_module() -> None:
    assert _importers("boto3") | _importers("botocore") == {"dynamodb", "wire", "s3"}
    assert _importers("sqlite_utils") == {"schema"}


def test_no_module_defines_its_own_logger_name() -> None:
    for p in PACKAGE.glob("*.py"):
        for name in re.findall(r"getLogger\(([^)]*)\)", p.read_text()):
            assert name in ("__name__", "", "name"), f"{p.name} uses getLogger({name})"


def _imports(path: Path) -> set[str]:
    """Every dynasync module a module imports: at the top, inside functions and under TYPE_CHECKING."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "dynasync":
                found.update(a.name for a in node.names)
            elif node.module.startswith("dynasync."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("dynasync."))
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    return (found & modules) - {path.stem}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph, as the modules along it, or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        if module in path:
            return [*path[path.index(module):], module]
        if module in done:
            return None
        path.append(module)
        for other in sorted(graph.get(module, ())):
            found = visit(other)
            if found:
                return found
        path.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        found = visit(module)
        if found:
            return found
    return None


def test_the_module_graph_has_no_cycle_counting_every_import() -> None:
    graph = {p.stem: _imports(p) for p in PACKAGE.glob("*.py")}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_config_imports_no_dynasync_module_above_it() -> None:
    # config reads and validates a file: it may use only the leaf modules that describe that file.
    assert _imports(PACKAGE / "config.py") <= {"exceptions", "problems", "tableconfig", "templates", "values"}
