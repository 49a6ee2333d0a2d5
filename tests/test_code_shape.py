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
    assert _importers("boto3") | _importers("botocore") == {"dynamodb", "wire"}
    assert _importers("sqlite_utils") == {"schema"}


def test_no_module_defines_its_own_logger_name() -> None:
    for p in PACKAGE.glob("*.py"):
        for name in re.findall(r"getLogger\(([^)]*)\)", p.read_text()):
            assert name in ("__name__", "", "name"), f"{p.name} uses getLogger({name})"
