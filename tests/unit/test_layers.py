"""The import rules of the layered package tree (docs/architecture.md), checked by walking
every module's imports: a layer imports only the layers below it, pure DICOM code does no I/O,
storage never talks networking, and the CLI sees only the services."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import stgcmt

PACKAGE = Path(stgcmt.__file__).parent

# What each part of stgcmt may import from stgcmt (prefixes). Parts not listed import nothing.
ALLOWED: dict[str, tuple[str, ...]] = {
    "stgcmt.dicom": ("stgcmt.dicom",),
    "stgcmt.config": ("stgcmt.config",),
    "stgcmt.faults": (),
    "stgcmt.logs": (),
    "stgcmt.events": (),
    "stgcmt.lazy": (),
    "stgcmt.ul": ("stgcmt.ul", "stgcmt.dicom", "stgcmt.config"),
    "stgcmt.storage": ("stgcmt.storage", "stgcmt.dicom", "stgcmt.config", "stgcmt.faults"),
    "stgcmt.scp": (
        "stgcmt.scp",
        "stgcmt.lazy",
        "stgcmt.ul",
        "stgcmt.storage",
        "stgcmt.dicom",
        "stgcmt.config",
        "stgcmt.faults",
        "stgcmt.events",
    ),
    "stgcmt.scu": (
        "stgcmt.scu",
        "stgcmt.lazy",
        "stgcmt.ul",
        "stgcmt.storage",
        "stgcmt.dicom",
        "stgcmt.config",
        "stgcmt.faults",
        "stgcmt.events",
    ),
    "stgcmt.audit": ("stgcmt.audit", "stgcmt.events", "stgcmt.config", "stgcmt.dicom"),
    "stgcmt.http": (
        "stgcmt.http",
        "stgcmt.scp",
        "stgcmt.scu",
        "stgcmt.storage",
        "stgcmt.events",
        "stgcmt.config",
        "stgcmt.dicom",
        "stgcmt.__version__",
    ),
    "stgcmt.cli": (
        "stgcmt.cli",
        "stgcmt.http",
        "stgcmt.audit",
        "stgcmt.events",
        "stgcmt.scp",
        "stgcmt.scu",
        "stgcmt.config",
        "stgcmt.logs",
        "stgcmt.dicom.status",
        "stgcmt.__version__",
    ),
    "stgcmt.__main__": ("stgcmt.cli",),
    "stgcmt": (),
}

NO_IO = {"asyncio", "socket", "ssl", "sqlite3", "threading", "subprocess", "selectors", "shutil"}
"""Standard library modules pure DICOM code must not import."""
NETWORKING = {"asyncio", "socket", "ssl", "selectors", "pynetdicom"}
DATABASES = {"sqlite3", "psycopg"}
"""Database drivers: only storage may import them."""


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join(parts), path


def imports_of(name: str, path: Path) -> Iterator[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                assert node.module is not None
                module = node.module
            # ``from stgcmt import ul`` imports stgcmt.ul: name what was imported
            yield from (f"{module}.{alias.name}" for alias in node.names)


def layer_of(name: str) -> str:
    """The longest key of ALLOWED that ``name`` falls under."""
    return max((k for k in ALLOWED if name == k or name.startswith(k + ".")), key=len)


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


MODULES = list(modules())


@pytest.mark.parametrize(("name", "path"), MODULES, ids=[n for n, _ in MODULES])
def test_imports_only_downwards(name: str, path: Path) -> None:
    allowed = ALLOWED[layer_of(name)]
    wrong = [
        imported
        for imported in imports_of(name, path)
        if imported.split(".")[0] == "stgcmt"
        and imported != name
        and not _within(imported, allowed)
    ]
    assert not wrong, f"{name} ({layer_of(name)}) may not import {wrong}"


@pytest.mark.parametrize(("name", "path"), MODULES, ids=[n for n, _ in MODULES])
def test_pure_and_storage_code_do_no_networking(name: str, path: Path) -> None:
    roots = {imported.split(".")[0] for imported in imports_of(name, path)}
    if _within(name, ("stgcmt.dicom",)):
        assert not roots & NO_IO, f"pure DICOM code {name} imports {roots & NO_IO}"
    if _within(name, ("stgcmt.storage",)):
        assert not roots & NETWORKING, f"storage code {name} imports {roots & NETWORKING}"
    else:
        assert not roots & DATABASES, f"{name} imports {roots & DATABASES}: only storage may"


def test_nothing_in_src_imports_pynetdicom() -> None:
    users = [n for n, p in MODULES if "pynetdicom" in {i.split(".")[0] for i in imports_of(n, p)}]
    assert not users, f"pynetdicom is a test peer only, imported by {users}"


def test_the_rules_catch_a_wrong_import(tmp_path: Path) -> None:
    """The walker itself: a storage module importing the upper layer is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("from stgcmt.ul import engine\nimport socket\n")
    found = list(imports_of("stgcmt.storage.bad", bad))
    assert found == ["stgcmt.ul.engine", "socket"]
    assert not _within("stgcmt.ul", ALLOWED[layer_of("stgcmt.storage.bad")])
