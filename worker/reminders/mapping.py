"""Where the host application keeps its tasks and users: the schema file, read and checked.

``REMINDERS_SCHEMA_FILE`` names a TOML file whose values are the host's own table and column
names (`SchemaMapping`). Without one, `REFERENCE` maps the reference schema: it is a mapping
like any other, not a second code path. This module only reads the file; `worker.reminders.host`
checks it against the live database and builds the statements from it.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

from worker.errors import ConfigError

SETTING = "REMINDERS_SCHEMA_FILE"

#: A table or column name as the file may give it: an SQL identifier, unquoted.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}")
#: A quoted literal or identifier inside a condition.
_LITERAL = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"")


class MappingError(ConfigError):
    """The schema mapping is invalid."""


@dataclass(frozen=True)
class TasksMapping:
    """The host's tasks table: the values are its column names."""

    table: str
    id: str
    owner: str
    title: str
    due: str
    schema: str | None = None
    #: The zone of a ``timestamp without time zone`` due column.
    due_timezone: str | None = None
    #: Completed when this column is not NULL ...
    completed_at: str | None = None
    #: ... or when this SQL condition on the task row holds.
    done: str | None = None


@dataclass(frozen=True)
class UsersMapping:
    """The host's users table (the recipients of reminders)."""

    table: str
    id: str
    email: str
    schema: str | None = None
    timezone: str | None = None
    enabled: str | None = None
    locale: str | None = None


@dataclass(frozen=True)
class RecipientsMapping:
    """A table of more recipients per task (assignees, watchers): pairs of task and user."""

    table: str
    task: str
    user: str
    schema: str | None = None


@dataclass(frozen=True)
class SchemaMapping:
    """The host's tables as the worker reads them; `REFERENCE` unless a file says otherwise."""

    tasks: TasksMapping
    users: UsersMapping
    recipients: RecipientsMapping | None = None
    #: Where it was read from, for messages (``None``: the reference schema).
    source: str | None = None

    @property
    def where(self) -> str:
        """How messages name this mapping."""
        return f"{SETTING} {self.source}" if self.source else "the reference schema"


REFERENCE = SchemaMapping(
    tasks=TasksMapping(
        table="tasks",
        id="id",
        owner="owner_id",
        title="title",
        due="due_date",
        completed_at="completed_at",
    ),
    users=UsersMapping(
        table="users",
        id="id",
        email="email",
        timezone="timezone",
        enabled="notifications_enabled",
    ),
)

#: Keys whose values are free text, not names.
_TEXT_KEYS = {"due_timezone", "done"}


def load_mapping(path: str | Path | None) -> SchemaMapping:
    """The mapping in the TOML file at ``path``, or `REFERENCE` when ``path`` is empty.

    Raises:
        MappingError: the file cannot be read, is not TOML, or a key is missing, unknown
            or has a bad value (the message names the file, the table and the key).
    """
    if path is None or not str(path).strip():
        return REFERENCE
    where = f"{SETTING} {path}"
    try:
        document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise MappingError(f"{where}: cannot be read ({error.strerror or error})") from None
    except UnicodeDecodeError:
        raise MappingError(f"{where}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as error:
        raise MappingError(f"{where}: not valid TOML ({error})") from None
    return parse_mapping(document, source=str(path))


def parse_mapping(document: Mapping[str, Any], *, source: str) -> SchemaMapping:
    """The mapping a parsed TOML document describes (see `load_mapping`)."""
    where = f"{SETTING} {source}"
    unknown = sorted(set(document) - {"tasks", "users", "recipients"})
    if unknown:
        raise MappingError(f"{where}: unknown section [{unknown[0]}]")
    tasks = _section(document, "tasks", TasksMapping, where)
    users = _section(document, "users", UsersMapping, where)
    recipients = (
        _section(document, "recipients", RecipientsMapping, where)
        if "recipients" in document
        else None
    )
    assert isinstance(tasks, TasksMapping) and isinstance(users, UsersMapping)
    assert recipients is None or isinstance(recipients, RecipientsMapping)
    if tasks.completed_at and tasks.done:
        raise MappingError(f"{where}: [tasks] give completed_at or done, not both")
    if not tasks.completed_at and not tasks.done:
        raise MappingError(
            f"{where}: [tasks] completed_at or done: required (how a task is completed)"
        )
    if tasks.done is not None:
        _check_condition(tasks.done, f"{where}: [tasks] done")
    return SchemaMapping(tasks, users, recipients, source=source)


def _section(
    document: Mapping[str, Any],
    name: str,
    kind: type[TasksMapping | UsersMapping | RecipientsMapping],
    where: str,
) -> TasksMapping | UsersMapping | RecipientsMapping:
    section = document.get(name)
    if not isinstance(section, dict):
        what = "required" if section is None else "must be a table"
        raise MappingError(f"{where}: [{name}] {what}")
    known = {field.name for field in fields(kind)}
    required = {field.name for field in fields(kind) if field.default is MISSING}
    for key in sorted(section):
        if key not in known:
            raise MappingError(f"{where}: [{name}] unknown key {key!r}")
    values: dict[str, str] = {}
    for key in (field.name for field in fields(kind)):
        value = section.get(key)
        if value is None:
            if key in required:
                raise MappingError(f"{where}: [{name}] {key}: required")
            continue
        if not isinstance(value, str) or not value.strip():
            raise MappingError(f"{where}: [{name}] {key}: must be a non-empty string")
        value = value.strip()
        if key not in _TEXT_KEYS and not _NAME.fullmatch(value):
            raise MappingError(
                f"{where}: [{name}] {key}: {value[:64]!r} is not a table or column name"
            )
        values[key] = value
    return kind(**values)


def _check_condition(condition: str, where: str) -> None:
    """Refuse what cannot be one boolean expression on the task row: the database checks
    the rest at start (`worker.reminders.host.check_host`)."""
    code = _LITERAL.sub("''", condition)  # what is inside quotes is data
    if ";" in code or "--" in code or "/*" in code:
        raise MappingError(f"{where}: one SQL condition, without ';' or comments")
    depth = 0
    for character in code:
        depth += {"(": 1, ")": -1}.get(character, 0)
        if depth < 0:
            break
    if depth != 0:
        raise MappingError(f"{where}: unbalanced parentheses in {condition[:80]!r}")
