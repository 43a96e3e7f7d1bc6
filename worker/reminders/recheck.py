"""The relay's re-check before each send: the task, recipient and rule as they are now.

A claimed reminder is sent only if its task still exists, is open and has the due date the
reminder is keyed by, its recipient is still one (the owner, or listed for the task), still
wants reminders and has not unsubscribed from its kind (the worker's preferences,
`worker.reminders.preference_store.screens`, read once per batch; they also give the
recipient's own channel URL), and the recipient's rule still has the reminder's offset.
"Open" and "wants reminders" are the rules the scan uses (`worker.reminders.schema`),
evaluated by the database, not rewritten here. A row queued before rules existed (no
recipient, no offset) goes to the task's owner and is not held to a rule.

A reminder that still stands then goes through the recipient's pause and quiet hours, as
they are now (`worker.reminders.send_time.decide`, at the clock's time): expired when its
moment fell in the pause or the recipient is paused, deferred to the window's end inside
a quiet window, sent otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, cast

from sqlalchemy import Select, bindparam, select
from sqlalchemy.orm import Session

from outbox.admin import original_key
from outbox.clock import Clock
from outbox.relay import Answer, Cancel, Defer, Expire, Prepare
from outbox.store import Claim
from worker.reminders import plan, preference_store, send_time
from worker.reminders.due import DEFAULT_LOOKAHEAD, forget_reminder
from worker.reminders.host import REFERENCE_SCHEMA, HostSchema
from worker.reminders.keys import reminder_key, reminder_variant
from worker.reminders.local_time import reading
from worker.reminders.render import OwnerFacts, ReminderRenderer, TaskFacts
from worker.reminders.rule_store import rule_sql
from worker.reminders.rules import builtin_rule
from worker.reminders.schema import owner_wants_reminders, task_open


class _Task(NamedTuple):
    """A claimed reminder's task as it is now."""

    id: int
    title: str
    open: bool
    owner_id: int
    due_key: datetime | None  # the due value as the key has it
    marker: Any  # the task's reminder_due_at


@dataclass(frozen=True, eq=False)
class RecheckQueries:
    """The re-check's statements for one host's tables, built once."""

    tasks: Select[Any]
    users: Select[Any]
    listed: Select[Any] | None
    offsets: Select[Any]
    legacy_offset: int

    @classmethod
    def build(cls, host: HostSchema, lookahead: timedelta) -> RecheckQueries:
        """The statements; ``lookahead`` the built-in rule's lead time."""
        tasks, users = host.tasks, host.users
        task_query = select(
            tasks.id,
            tasks.title,
            task_open(tasks).label("task_open"),
            tasks.owner_id,
            tasks.due_time.key_instant(tasks.due).label("due_key"),
            tasks.reminder_due_at,
        ).where(tasks.id.in_(bindparam("ids", expanding=True)))
        user_ids: Any = bindparam("user_ids", expanding=True)
        user_query = select(
            users.id,
            users.email,
            users.timezone,
            owner_wants_reminders(users).label("wants_reminders"),
            users.locale,
        ).where(users.id.in_(user_ids))
        listed = None
        if host.recipients is not None:
            r = host.recipients.c
            listed = select(r.task, r.user).where(
                r.task.in_(bindparam("ids", expanding=True)), r.user.in_(user_ids)
            )
        rules = rule_sql(builtin_rule(lookahead))
        every = plan.offsets(rules)
        offsets = (
            select(users.id, every.c.offset_seconds)
            .select_from(users.table)
            .outerjoin(rules.own, rules.own.c.user_id == users.id)
            .join(every, every.c.rule_id == rules.rule_id)
            .where(users.id.in_(user_ids))
        )
        return cls(
            task_query,
            cast(Select[Any], user_query),
            listed,
            offsets,
            int(lookahead.total_seconds()),
        )


@dataclass(frozen=True)
class _Now:
    """Everything the batch's re-checks read, as it is now."""

    tasks: Mapping[int, _Task]
    users: Mapping[int, OwnerFacts]
    listed: frozenset[tuple[int, int]]
    offsets: Mapping[int, frozenset[int]]
    wanted: preference_store.Screens
    at: datetime  # the clock's time of the re-check


def reminder_preparer(
    renderer: ReminderRenderer,
    host: HostSchema = REFERENCE_SCHEMA,
    *,
    clock: Clock,
    lookahead: timedelta = DEFAULT_LOOKAHEAD,
) -> Prepare:
    """The relay's re-check: cancel unless the reminder still stands; expire or defer it
    when the recipient's pause or quiet hours say so (at ``clock``'s time); else render it."""
    # Plain columns, not ORM objects: the re-check runs for every message the relay sends.
    queries = RecheckQueries.build(host, lookahead)

    def prepare(session: Session, claims: Sequence[Claim]) -> dict[int, Answer]:
        now = _read(session, queries, claims, clock.now())
        return {
            claim.id: _recheck(session, renderer, host, claim, now, queries.legacy_offset)
            for claim in claims
        }

    return prepare


def _read(session: Session, queries: RecheckQueries, claims: Sequence[Claim], at: datetime) -> _Now:
    connection = session.connection()
    ids = sorted({claim.subject_id for claim in claims})
    tasks = {row[0]: _Task(*row) for row in connection.execute(queries.tasks, {"ids": ids})}
    user_ids = sorted(
        {claim.recipient_id for claim in claims if claim.recipient_id is not None}
        | {task.owner_id for task in tasks.values()}
    )
    users = {
        row[0]: OwnerFacts(*row)
        for row in connection.execute(queries.users, {"user_ids": user_ids})
    }
    listed: frozenset[tuple[int, int]] = frozenset()
    if queries.listed is not None:
        found = connection.execute(queries.listed, {"ids": ids, "user_ids": user_ids})
        listed = frozenset((task, user) for task, user in found)
    offsets: dict[int, set[int]] = {}
    for user, offset in connection.execute(queries.offsets, {"user_ids": user_ids}):
        offsets.setdefault(user, set()).add(offset)
    wanted = preference_store.screens(session, users)
    by_user = {user: frozenset(o) for user, o in offsets.items()}
    return _Now(tasks, users, listed, by_user, wanted, at)


def _recheck(  # noqa: PLR0917  (the batch's facts, passed on)
    session: Session,
    renderer: ReminderRenderer,
    host: HostSchema,
    claim: Claim,
    now: _Now,
    legacy_offset: int,
) -> Answer:
    task = now.tasks.get(claim.subject_id)
    if task is None:
        return Cancel("task deleted")
    user_id = task.owner_id if claim.recipient_id is None else claim.recipient_id
    user = now.users.get(user_id)
    reason = None
    who = "owner" if user_id == task.owner_id else "recipient"
    if user is None:  # possible where the host's schema has no foreign key
        reason = f"{who} deleted"
    elif not task.open:
        reason = "task completed"
    elif not _same_due(claim, task, user_id, legacy_offset):
        reason = "due date moved"
    elif user_id != task.owner_id and (task.id, user_id) not in now.listed:
        reason = "no longer a recipient"
    elif not user.wants_reminders:
        reason = f"{who} turned notifications off"
    elif claim.offset_seconds is not None and claim.offset_seconds not in now.offsets.get(
        user_id, frozenset()
    ):
        reason = "no longer in the recipient's rule"
    screen = now.wanted.screen(user_id, claim.kind)
    if reason is None and screen.refusal is not None:
        reason = screen.refusal
    if reason is None:
        assert user is not None
        wall_clock = host.tasks.due_time.per_recipient
        when = _send_time(claim, now, user, legacy_offset, wall_clock=wall_clock)
        if isinstance(when, send_time.Expire):
            return Expire(when.reason)
        if isinstance(when, send_time.Hold):
            return Defer(when.until, when.reason)
        facts = TaskFacts(task.id, task.title, claim.subject_at, task.open)
        overdue = claim.offset_seconds is not None and claim.offset_seconds < 0
        message = screen.addressed(renderer.render(claim.key, facts, user, overdue=overdue))
        released = when.released_at if isinstance(when, send_time.Send) else None
        return message if released is None else replace(message, ready_at=released)
    # The scan may plan the task again: it plans only what still stands, so that a
    # reminder cancelled here is not armed again unless its task or recipient came back.
    forget_reminder(session, host.tasks, task.id, task.marker)
    return Cancel(reason)


def _send_time(
    claim: Claim, now: _Now, user: OwnerFacts, legacy_offset: int, *, wall_clock: bool
) -> send_time.Decision:
    """What the recipient's pause and quiet hours say of the reminder now.

    Its moment is the row's due moment less its offset, counted on the recipient's wall
    clock for an all-day task (``wall_clock``), as the planner counts it. A digest user's
    reminder is decided as anyone else's (``digests=False``): sent alone, as long as no
    digest rows exist to carry it.
    """
    if claim.subject_at is None:  # no due moment to place it by: as before preferences
        return send_time.Send()
    offset = timedelta(
        seconds=legacy_offset if claim.offset_seconds is None else claim.offset_seconds
    )
    zone = send_time.zone_of(user.timezone)
    moment = claim.subject_at - offset
    if wall_clock:
        local = reading(claim.subject_at, zone) - offset
        moment = local.replace(tzinfo=zone).astimezone(UTC)
    chosen = now.wanted.preferences(user.id)
    return send_time.decide(moment, claim.subject_at, now.at, chosen, zone, digests=False)


def _same_due(claim: Claim, task: _Task, user_id: int, legacy_offset: int) -> bool:
    """Whether the task is still due when the claim's key says (a follow-up's: the key it
    follows)."""
    if task.due_key is None:
        return False
    key = original_key(claim.key)
    if claim.offset_seconds is None:  # queued before rules: keyed by the due moment alone
        return claim.subject_at == task.due_key or claim.key == reminder_key(task.id, task.due_key)
    variant = reminder_variant(
        claim.offset_seconds, user_id, task.owner_id, legacy_offset=legacy_offset
    )
    return key == reminder_key(task.id, task.due_key) + variant
