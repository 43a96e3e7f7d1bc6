"""Reminder rules from the host application's own code: the functions `worker.api` exports.

Each runs on a SQLAlchemy ``Session`` the host gives, inside its transaction (the host
commits), or on an ``Engine``, in a transaction of its own; it checks first that the database
is migrated and fits the schema mapping (``REMINDERS_SCHEMA_FILE`` of the ``settings`` given,
else of the environment). Failures are exceptions from `worker.errors`, never an exit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from worker.errors import DatabaseNotReady, UsageError
from worker.reminders import rule_store
from worker.reminders.host import HostSchema, check_host
from worker.reminders.mapping import load_mapping
from worker.reminders.rule_store import RuleChange
from worker.reminders.rules import Rule
from worker.settings import Settings, load_settings

__all__ = [
    "Rule",
    "RuleChange",
    "clear_default_rule",
    "clear_rule",
    "effective_rule",
    "rules",
    "set_default_rule",
    "set_rule",
]


def set_rule(
    bind: Session | Engine, rule: Rule, *, user: int, settings: Settings | None = None
) -> RuleChange:
    """Make ``rule`` the rule of the user whose id is ``user`` (the host's users table).

    The reminders of that user's open tasks not sent yet are planned again at the next scan
    (a reminder already sent is never sent again). Setting the rule already stored changes
    nothing. On a ``Session`` this runs in its transaction and the host commits; on an
    ``Engine``, in a transaction of its own.

    Raises:
        UnknownUser: no user has this id.
        UsageError: ``user`` is not an integer.
        DatabaseNotReady: the database is not migrated to this version's schema.
        MappingMismatch: ``REMINDERS_SCHEMA_FILE`` does not fit the database.
    """
    user_id = _user_id(user)
    return _with_host(bind, settings, lambda s, host: _set(s, host, user_id, rule))


def set_default_rule(
    bind: Session | Engine, rule: Rule, *, settings: Settings | None = None
) -> RuleChange:
    """Make ``rule`` the default rule: every user without a rule of their own follows it.

    Re-plans as `set_rule` does, for those users' tasks; raises what it raises.
    """
    return _with_host(bind, settings, lambda s, host: _set(s, host, None, rule))


def clear_rule(
    bind: Session | Engine, *, user: int, settings: Settings | None = None
) -> RuleChange:
    """Delete the user's own rule: the default rule applies to them again (re-planned as
    `set_rule` does); a user without a rule changes nothing. Raises what `set_rule` raises,
    but `UnknownUser` (a user who is gone may still have a rule)."""
    user_id = _user_id(user)
    return _with_host(bind, settings, lambda s, host: _clear(s, host, user_id))


def clear_default_rule(bind: Session | Engine, *, settings: Settings | None = None) -> RuleChange:
    """Delete the default rule: one reminder ``REMINDERS_LOOKAHEAD`` ahead applies again to
    every user without a rule of their own (re-planned as `set_rule` does)."""
    return _with_host(bind, settings, lambda s, host: _clear(s, host, None))


def rules(bind: Session | Engine, *, settings: Settings | None = None) -> dict[int | None, Rule]:
    """Every stored rule by user id; the key None is the default rule, absent when none is
    stored."""
    return _with_host(bind, settings, lambda s, _: rule_store.rules(s))


def effective_rule(bind: Session | Engine, user: int, *, settings: Settings | None = None) -> Rule:
    """The rule in force for the user: theirs, else the default rule, else one reminder
    ``REMINDERS_LOOKAHEAD`` ahead."""
    user_id = _user_id(user)
    config = settings or load_settings()
    return _with_host(bind, config, lambda s, _: rule_store.effective_rule(s, user_id, config))


_T = TypeVar("_T")


def _with_host(
    bind: Session | Engine,
    settings: Settings | None,
    work: Callable[[Session, HostSchema], _T],
) -> _T:
    """Run ``work`` on the host's session (or one of the engine's, committed) once the
    database shows it is migrated and fits the mapping."""
    from worker import migrate  # Alembic, only once a rule is read or changed

    mapping = load_mapping((settings or load_settings()).schema_file)
    with _session(bind) as session:
        connection = session.connection()
        current, head = migrate.revision(connection), migrate.head_revision()
        if current != head:
            raise DatabaseNotReady(
                f"the database is at revision {current or 'none'}, reminder rules need "
                f"{head}: run `reminders migrate`"
            )
        return work(session, check_host(connection, mapping))


@contextmanager
def _session(bind: Session | Engine) -> Iterator[Session]:
    if isinstance(bind, Session):
        yield bind
        return
    if not isinstance(bind, Engine):
        raise UsageError(f"expected a SQLAlchemy Session or Engine, got {type(bind).__name__}")
    with Session(bind) as session, session.begin():
        yield session


def _set(session: Session, host: HostSchema, user_id: int | None, rule: Rule) -> RuleChange:
    if not isinstance(rule, Rule):
        raise UsageError(f"expected a worker.api.Rule, got {type(rule).__name__}")
    return rule_store.set_rule(session, host, user_id, rule, now=datetime.now(UTC))


def _clear(session: Session, host: HostSchema, user_id: int | None) -> RuleChange:
    return rule_store.clear_rule(session, host, user_id)


def _user_id(user: object) -> int:
    # None would read as the default rule: the default has functions of its own.
    if isinstance(user, bool) or not isinstance(user, int):
        raise UsageError(f"user: expected a user id (an int), got {user!r}")
    return user
