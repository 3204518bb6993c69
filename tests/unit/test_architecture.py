"""The shape of the house, checked from the code itself (issue 12): module and function sizes,
who may import the database driver, import direction, and no status or policy spelled as a
bare string outside its enum. Pure reading of the source: no services."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: the packages of the product, from the entry points down to the library core
PACKAGES = ("deploy", "bench", "examples", "local", "scheduler", "worker", "shared")
#: what each package may import, besides itself (the library core imports nothing of ours)
MAY_IMPORT = {
    "shared": set(),
    "examples": {"shared"},
    "local": {"shared"},
    "worker": {"shared", "local", "examples"},
    "scheduler": {"shared", "local", "examples"},
    "bench": {"shared", "local", "examples", "scheduler"},
    # the stack runs the product in containers: it names statuses, nothing more
    "deploy": {"shared"},
}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
#: argument-parser tables: long, flat and read as a table
PARSER_TABLES = {"build_parser", "_parser", "add_commands"}
#: the values of the enums (shared.jobs.Status, OnError, shared.slicing.SliceBy): spelled only
#: in their enum
ENUM_VALUES = {
    "pending", "running", "completed", "failed", "cancelled",
    "fail", "skip", "park",
    "aggregate", "time",
}  # fmt: skip


def modules() -> Iterator[tuple[str, Path, ast.Module]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            yield ".".join(parts), path, ast.parse(path.read_text(), str(path))


def imported(tree: ast.Module, name: str) -> Iterator[str]:
    """Every module that ``tree`` (module ``name``) imports, at any depth of the code."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".")[: -node.level] if not name.endswith("__init__") else []
                base = ".".join([*pkg, base]) if base else ".".join(pkg)
            yield base
            yield from (f"{base}.{a.name}" for a in node.names)


def project_imports() -> dict[str, set[str]]:
    known = {name for name, _, _ in modules()}
    graph: dict[str, set[str]] = {}
    for name, _, tree in modules():
        graph[name] = {m for m in imported(tree, name) if m in known and m != name}
    return graph


def test_no_module_is_too_long() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for _, path, _ in modules()
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_no_function_is_too_long() -> None:
    long = {}
    for _, path, tree in modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > MAX_FUNCTION_LINES and node.name not in PARSER_TABLES:
                    long[f"{path.relative_to(ROOT)}:{node.name}"] = n
    assert long == {}


def test_only_the_database_layer_imports_the_driver() -> None:
    users = {
        name
        for name, _, tree in modules()
        for m in imported(tree, name)
        if m.split(".")[0] in ("psycopg", "psycopg_pool")
    }
    assert users == {"shared.db"}


def test_packages_import_only_downwards() -> None:
    wrong = {
        (name, m)
        for name, targets in project_imports().items()
        for m in targets
        if (src := name.split(".")[0]) != (dst := m.split(".")[0]) and dst not in MAY_IMPORT[src]
    }
    assert wrong == set()


def test_no_import_circles() -> None:
    graph = project_imports()
    # a package's __init__ re-exporting its modules is not a circle of theirs
    edges = {n: {m for m in ts if not n.startswith(m + ".")} for n, ts in graph.items()}
    circles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(edges.get(n, ())):
            if state.get(m) == 1:
                circles.append([*stack[stack.index(m) :], m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(edges):
        if n not in state:
            visit(n)
    assert circles == []


def _enum_bodies(tree: ast.Module) -> set[int]:
    """Line numbers inside Enum classes (where the values are spelled, once)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any(
            isinstance(b, ast.Name | ast.Attribute)
            and (b.id if isinstance(b, ast.Name) else b.attr).endswith("Enum")
            for b in node.bases
        ):
            lines.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return lines


@pytest.mark.parametrize("package", PACKAGES)
def test_no_status_or_policy_as_a_bare_string(package: str) -> None:
    bare = []
    for name, path, tree in modules():
        if name.split(".")[0] != package:
            continue
        inside = _enum_bodies(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and node.value in ENUM_VALUES
                and node.lineno not in inside
            ):
                bare.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert bare == []
