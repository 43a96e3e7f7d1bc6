"""The documents name only tests, settings and commands that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.unit.test_deployment_files import known_variables, project_commands

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_test_a_document_names_exists(doc: Path) -> None:
    """`tests/file.py::test_name` (and the `…::name` shorthand after it) point at real tests."""
    current: Path | None = None
    for match in re.finditer(r"`(tests/[\w/]+\.py)(?:::(\w+))?`|`…::(\w+)`", doc.read_text()):
        path, name, short = match.groups()
        if path:
            current = ROOT / path
            assert current.exists(), path
        name = name or short
        if name:
            assert current is not None and f"def {name}(" in current.read_text(), (current, name)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_variable_a_document_names_is_a_setting(doc: Path) -> None:
    """Every REMINDERS_* variable in the docs is one the settings read (test variables aside)."""
    named = set(re.findall(r"\bREMINDERS_[A-Z_]+[A-Z]\b", doc.read_text()))
    named -= {"REMINDERS_TEST_POSTGRES_URL", "REMINDERS_TEST_REDIS_URL", "REMINDERS_TEST_FAULT"}
    prefixes = {v.rsplit("_", 1)[0] for v in known_variables()}  # REMINDERS_SMTP_HOST, `_PORT`
    assert not {v for v in named - known_variables() if v not in prefixes}, doc.name


def test_the_readme_names_every_setting() -> None:
    """Each REMINDERS_* variable has its row in the README's configuration table (a row may
    name a sibling by its last part, as in `REMINDERS_SMTP_HOST`, `_PORT`)."""
    readme = (ROOT / "README.md").read_text()
    missing = {
        v
        for v in known_variables()
        if v not in readme and f"`_{v.rsplit('_', 1)[1]}`" not in readme
    }
    assert not missing


def test_every_command_the_readme_names_exists() -> None:
    """The README's command table lists real `reminders` commands."""
    readme = (ROOT / "README.md").read_text()
    named = re.findall(r"\| `reminders ([a-z-]+(?: [a-z]+)?)", readme)
    assert named
    for command in named:
        assert command.split()[0] in project_commands(), command
