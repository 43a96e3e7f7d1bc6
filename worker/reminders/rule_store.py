"""The worker's tables of reminder rules, how a rule is stored and read, and what a change re-plans.

Two tables of the worker's own (revision 0004):

- ``reminder_rules``: one row per rule. ``user_id`` NULL is the default rule (at most one
  such row: a unique index on ``user_id IS NULL``), otherwise the id of a user in the host's
  users table (no foreign key: that table is the host's). ``overdue_every_seconds`` NULL means
  no overdue nudges (``overdue_count`` is then 0); ``all_day_at`` is a local time of day;
- ``reminder_rule_leads``: the lead times of each rule, one row per (``rule_id``,
  ``lead_seconds``).

A user's rule is theirs alone; a user without one follows the default rule; with no default
rule stored, the built-in one holds (`worker.reminders.rules.builtin_rule`: one reminder
``REMINDERS_LOOKAHEAD`` ahead). `rule_sql` gives the planner that choice as SQL to join.

Changing a rule clears the worker's marker (``reminder_due_at``) on the open tasks it covers,
so that the next scan plans them again; the reminders' keys make that harmless.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ColumnElement,
    ForeignKey,
    FromClause,
    Index,
    Integer,
    Select,
    Subquery,
    Table,
    Time,
    delete,
    exists,
    false,
    func,
    literal,
    null,
    or_,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Mapped, Session, mapped_column

from outbox.types import UTCDateTime
from worker.errors import UnknownUser
from worker.reminders.host import HostSchema
from worker.reminders.rules import Rule, builtin_rule
from worker.reminders.schema import Base
from worker.settings import Settings

#: The ``rule_id`` that `rule_sql` gives the built-in rule: stored ids are 1 or more.
BUILTIN_RULE_ID = 0


class RuleRow(Base):
    """One reminder rule: the default one (``user_id`` NULL) or one user's."""

    __tablename__ = "reminder_rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    overdue_every_seconds: Mapped[int | None] = mapped_column(Integer)
    overdue_count: Mapped[int] = mapped_column(Integer)
    all_day_at: Mapped[time] = mapped_column(Time)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint("id > 0", name="id"),
        # CASE, not OR: a NULL interval must not make the check NULL, which would pass.
        CheckConstraint(
            "CASE WHEN overdue_every_seconds IS NULL THEN overdue_count = 0 "
            "ELSE overdue_every_seconds > 0 AND overdue_count > 0 END",
            name="overdue",
        ),
    )


class RuleLeadRow(Base):
    """One lead time of a rule, in whole seconds before the due time."""

    __tablename__ = "reminder_rule_leads"

    rule_id: Mapped[int] = mapped_column(
        ForeignKey("reminder_rules.id", ondelete="CASCADE"), primary_key=True
    )
    lead_seconds: Mapped[int] = mapped_column(Integer, primary_key=True)

    __table_args__ = (CheckConstraint("lead_seconds >= 0", name="lead_seconds"),)


_rules = cast(Table, RuleRow.__table__)
_leads = cast(Table, RuleLeadRow.__table__)
_DEFAULT = "user_id IS NULL"
#: At most one default rule.
ONE_DEFAULT = Index(
    "ix_reminder_rules_one_default",
    _rules.c.user_id.is_(None),
    unique=True,
    postgresql_where=text(_DEFAULT),
    sqlite_where=text(_DEFAULT),
)


@dataclass(frozen=True)
class StoredRule:
    """A rule as stored: whose it is (None: the default rule), and when it was last set."""

    user_id: int | None
    rule: Rule
    updated_at: datetime


@dataclass(frozen=True)
class RuleChange:
    """What `set_rule` or `clear_rule` did: whether the stored rule changed, and on how many
    open tasks the marker was cleared for the scan to plan again."""

    changed: bool
    replanned: int = 0


def rules(session: Session) -> dict[int | None, Rule]:
    """Every stored rule by user id; the key None is the default rule, absent when none is
    stored."""
    return {stored.user_id: stored.rule for stored in stored_rules(session)}


def stored_rules(
    session: Session,
    *,
    user_id: int | None = None,
    users_only: bool = False,
    limit: int | None = None,
) -> list[StoredRule]:
    """The stored rules, the default first, then by user id: only ``user_id``'s when given,
    only the users' with ``users_only``; at most ``limit``."""
    chosen = select(_rules)
    if user_id is not None:
        chosen = chosen.where(_rules.c.user_id == user_id)
    elif users_only:
        chosen = chosen.where(_rules.c.user_id.is_not(None))
    chosen = chosen.order_by(_rules.c.user_id.is_not(None), _rules.c.user_id).limit(limit)
    rows = session.execute(chosen).all()
    leads: dict[int, list[int]] = {row.id: [] for row in rows}
    if leads:
        found = select(_leads.c.rule_id, _leads.c.lead_seconds).where(
            _leads.c.rule_id.in_(list(leads))
        )
        for rule_id, seconds in session.execute(found):
            leads[rule_id].append(seconds)
    return [
        StoredRule(
            row.user_id,
            _rule(leads[row.id], row.overdue_every_seconds, row.overdue_count, row.all_day_at),
            row.updated_at,
        )
        for row in rows
    ]


def count_user_rules(session: Session) -> int:
    """How many users have a rule of their own."""
    counted = select(func.count()).select_from(_rules).where(_rules.c.user_id.is_not(None))
    return int(session.execute(counted).scalar_one())


def stored_rule(session: Session, user_id: int | None) -> StoredRule | None:
    """The rule stored for ``user_id`` (None: the default rule), or None."""
    chosen = select(_rules).where(_scope(user_id))
    row = session.execute(chosen).first()
    if row is None:
        return None
    found = select(_leads.c.lead_seconds).where(_leads.c.rule_id == row.id)
    seconds = list(session.execute(found).scalars())
    rule = _rule(seconds, row.overdue_every_seconds, row.overdue_count, row.all_day_at)
    return StoredRule(row.user_id, rule, row.updated_at)


def effective_rule(session: Session, user_id: int | None, settings: Settings) -> Rule:
    """The rule in force for ``user_id``: theirs, else the default rule, else the built-in
    one (one reminder ``REMINDERS_LOOKAHEAD`` ahead). None asks for the default's."""
    for scope in [user_id, None] if user_id is not None else [None]:
        found = stored_rule(session, scope)
        if found is not None:
            return found.rule
    return builtin_rule(settings.lookahead)


def set_rule(
    session: Session, host: HostSchema, user_id: int | None, rule: Rule, *, now: datetime
) -> RuleChange:
    """Store ``rule`` as ``user_id``'s (None: the default rule) and re-plan the open tasks
    it covers, in the session's transaction. Setting the rule already stored changes nothing.

    Raises:
        UnknownUser: ``user_id`` is not in the host's users table.
    """
    if user_id is not None and not user_exists(session, host, user_id):
        table = host.mapping.users.table
        raise UnknownUser(f"user {user_id} is not in table {table}: no rule set")
    values = {
        "user_id": user_id,
        "overdue_every_seconds": _seconds(rule.overdue_every),
        "overdue_count": rule.overdue_count,
        "all_day_at": rule.all_day_at,
        "updated_at": now,
    }
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    created = session.execute(
        insert(_rules).values(values).on_conflict_do_nothing().returning(_rules.c.id)
    ).scalar_one_or_none()
    if created is None:  # stored already: lock it, and change it if it differs
        row = session.execute(select(_rules).where(_scope(user_id)).with_for_update()).one()
        current = stored_rule(session, user_id)
        if current is not None and current.rule == rule:
            return RuleChange(changed=False)
        session.execute(update(_rules).where(_rules.c.id == row.id).values(values))
        session.execute(delete(_leads).where(_leads.c.rule_id == row.id))
        created = row.id
    if rule.lead_seconds:
        session.execute(
            _leads.insert(), [{"rule_id": created, "lead_seconds": s} for s in rule.lead_seconds]
        )
    return RuleChange(changed=True, replanned=replan_after_rule_change(session, host, user_id))


def clear_rule(session: Session, host: HostSchema, user_id: int | None) -> RuleChange:
    """Delete ``user_id``'s rule (None: the default rule) and re-plan the open tasks it
    covered; nothing to delete changes nothing."""
    row = session.execute(select(_rules.c.id).where(_scope(user_id)).with_for_update()).first()
    if row is None:
        return RuleChange(changed=False)
    session.execute(delete(_leads).where(_leads.c.rule_id == row.id))
    session.execute(delete(_rules).where(_rules.c.id == row.id))
    return RuleChange(changed=True, replanned=replan_after_rule_change(session, host, user_id))


def user_exists(session: Session, host: HostSchema, user_id: int) -> bool:
    """Whether the host's users table has a user with this id."""
    users = host.users
    found = select(literal(1)).select_from(users.table).where(users.id == user_id).limit(1)
    return session.execute(found).first() is not None


def replan_after_rule_change(session: Session, host: HostSchema, user_id: int | None) -> int:
    """Clear the marker on the open tasks whose reminders follow ``user_id``'s rule (None:
    the default rule, so every user without a rule of their own), so that the next scan
    plans them again; return how many. One UPDATE, whatever the number of tasks.

    A task follows a user's rule where the user is its owner or, with a ``[recipients]``
    mapping, one of its recipients. A reminder already sent keeps its key, so that a
    re-planned one is not sent twice.
    """
    tasks = host.tasks
    recipients = host.recipients
    if user_id is not None:
        covered: ColumnElement[bool] = tasks.owner_id == user_id
        if recipients is not None:
            task, user = recipients.c
            listed = select(task).where(user == user_id)
            covered = or_(covered, tasks.id.in_(listed))
    else:
        covered = ~_has_own_rule(tasks.owner_id)
        if recipients is not None:
            task, user = recipients.c
            follows_default = exists().where(task == tasks.id, ~_has_own_rule(user))
            covered = or_(covered, follows_default)
    clear = (
        update(tasks.table)
        .where(tasks.open, tasks.reminder_due_at.is_not(None), covered)
        .values({tasks.reminder_due_at: None})
    )
    # An UPDATE's result is a CursorResult, which has the rowcount; execute() is typed as
    # returning the Result base class.
    cleared = cast(
        CursorResult[Any],
        session.execute(clear, execution_options={"synchronize_session": False}),
    )
    return int(cleared.rowcount)


@dataclass(frozen=True)
class RuleSql:
    """The rules as SQL, for the planner to join per recipient.

    For a recipient whose id is ``user``: LEFT JOIN `own` ON ``own.c.user_id == user``; then
    `rule_id` is the id of the rule in force (theirs, the default's, or `BUILTIN_RULE_ID`),
    which `leads` (``rule_id``, ``lead_seconds``: one row per lead time) and `settings`
    (``rule_id``, ``overdue_every_seconds``, ``overdue_count``, ``all_day_at``: one row per
    rule) are joined on.
    """

    own: FromClause
    rule_id: ColumnElement[int]
    leads: Subquery
    settings: Subquery


def rule_sql(builtin: Rule) -> RuleSql:
    """The rules in force as SQL, ``builtin`` standing where no default rule is stored (for
    the settings in force: ``builtin_rule(settings.lookahead)``)."""
    own = _rules.alias("reminder_own_rule")
    default_id = select(_rules.c.id).where(_rules.c.user_id.is_(None)).scalar_subquery()
    rule_id = func.coalesce(own.c.id, default_id, BUILTIN_RULE_ID)
    builtin_leads = [
        select(literal(BUILTIN_RULE_ID).label("rule_id"), literal(s).label("lead_seconds"))
        for s in builtin.lead_seconds
    ] or [select(literal(BUILTIN_RULE_ID), literal(0)).where(false())]
    stored_leads = select(_leads.c.rule_id, _leads.c.lead_seconds)
    leads = union_all(stored_leads, *builtin_leads).subquery("reminder_rule_lead")
    every = _seconds(builtin.overdue_every)
    builtin_settings = select(
        literal(BUILTIN_RULE_ID).label("rule_id"),
        (null() if every is None else literal(every)).label("overdue_every_seconds"),
        literal(builtin.overdue_count).label("overdue_count"),
        literal(builtin.all_day_at, Time()).label("all_day_at"),
    )
    stored_settings = select(
        _rules.c.id.label("rule_id"),
        _rules.c.overdue_every_seconds,
        _rules.c.overdue_count,
        _rules.c.all_day_at,
    )
    settings = union_all(stored_settings, builtin_settings).subquery("reminder_rule_setting")
    return RuleSql(own=own, rule_id=rule_id, leads=leads, settings=settings)


def rule_leads() -> Select[int, int | None, int]:
    """The stored lead times: one row per (``rule_id``, ``user_id``, ``lead_seconds``);
    ``user_id`` NULL is the default rule's."""
    return select(_leads.c.rule_id, _rules.c.user_id, _leads.c.lead_seconds).join(
        _rules, _rules.c.id == _leads.c.rule_id
    )


def rule_settings() -> Select[int, int | None, int | None, int, time]:
    """The stored rules' other parts: one row per rule (``rule_id``, ``user_id``,
    ``overdue_every_seconds``, ``overdue_count``, ``all_day_at``); ``user_id`` NULL is the
    default rule."""
    return select(
        _rules.c.id.label("rule_id"),
        _rules.c.user_id,
        _rules.c.overdue_every_seconds,
        _rules.c.overdue_count,
        _rules.c.all_day_at,
    )


def _has_own_rule(user: ColumnElement[int]) -> ColumnElement[bool]:
    return exists().where(_rules.c.user_id == user)


def _scope(user_id: int | None) -> ColumnElement[bool]:
    return _rules.c.user_id.is_(None) if user_id is None else _rules.c.user_id == user_id


def _seconds(value: timedelta | None) -> int | None:
    return None if value is None else int(value.total_seconds())


def _rule(leads: list[int], every: int | None, count: int, all_day_at: time) -> Rule:
    return Rule(
        before=tuple(timedelta(seconds=s) for s in leads),
        overdue_every=None if every is None else timedelta(seconds=every),
        overdue_count=count,
        all_day_at=all_day_at,
    )


__all__ = [
    "BUILTIN_RULE_ID",
    "RuleChange",
    "RuleLeadRow",
    "RuleRow",
    "RuleSql",
    "StoredRule",
    "clear_rule",
    "effective_rule",
    "replan_after_rule_change",
    "rule_leads",
    "rule_settings",
    "rule_sql",
    "rules",
    "set_rule",
    "stored_rule",
    "stored_rules",
]
