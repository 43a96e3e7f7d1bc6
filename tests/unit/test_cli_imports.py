"""The CLI package's imports run one way: ``__init__`` -> command modules -> ``common``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import worker.cli

PACKAGE = "worker.cli"
FOLDER = Path(worker.cli.__file__).parent
COMMAND_MODULES = sorted(
    path.stem for path in FOLDER.glob("*.py") if path.stem not in {"__init__", "common"}
)


def siblings_imported_by(source: str) -> set[str]:
    """The modules of the package that ``source`` imports, in functions too.

    A name imported from the package itself that is not one of its modules (such as
    ``from worker.cli import fail``) counts as importing the package's ``__init__``.
    """
    named: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            named |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = f"{PACKAGE}.{base}".rstrip(".")
            named |= {f"{base}.{alias.name}" for alias in node.names}
    found: set[str] = set()
    for name in named:
        if name != PACKAGE and not name.startswith(f"{PACKAGE}."):
            continue
        first = name.removeprefix(PACKAGE).lstrip(".").split(".")[0]
        found.add(first if first and (FOLDER / f"{first}.py").exists() else "__init__")
    return found


def siblings_imported(module: str) -> set[str]:
    """The modules of the package that the module file ``module`` imports."""
    return siblings_imported_by((FOLDER / f"{module}.py").read_text())


def test_the_package_has_command_modules() -> None:
    """The command modules this file checks are really there."""
    assert {"health", "outbox", "service"} <= set(COMMAND_MODULES)


def test_common_imports_no_other_module_of_the_package() -> None:
    """``common`` is a leaf: it imports neither a command module nor the package itself."""
    assert siblings_imported("common") == set()


@pytest.mark.parametrize("module", COMMAND_MODULES)
def test_a_command_module_imports_only_common(module: str) -> None:
    """A command module takes what it shares from ``common``, not from a sibling or the package."""
    assert siblings_imported(module) <= {"common"}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def ready():\n    from worker.cli import ready_services\n", {"__init__"}),
        ("from worker import cli\n", {"__init__"}),
        ("from worker.cli.health import health\n", {"health"}),
        ("from . import outbox\n", {"outbox"}),
        ("import worker.cli.service\n", {"service"}),
        ("from worker.cli import common\nfrom outbox import admin\n", {"common"}),
    ],
)
def test_the_check_sees_every_form_of_import_back_into_the_package(
    source: str, expected: set[str]
) -> None:
    """The reader catches the imports that would close a circle, function-level ones included."""
    assert siblings_imported_by(source) == expected
