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
a quiet window, sent otherwise. A digest row is held to the same pause and quiet hours at
its slot.

A digest user's reminder that still stands (and is not expired by a pause) is not rendered:
it joins the digest of the slot its moment falls in (`worker.reminders.digest_store`), in the
re-check's transaction, and its row ends cancelled ``in digest <key>``. A snoozed reminder's
follow-up goes out alone, at the time its recipient asked for. A digest row's re-check holds
each member to the same test (`_stands`), leaves out those that no longer stand and cancels a
digest left empty (`NO_REMINDERS_LEFT`); an opt-out of every kind, or of ``digest``, cancels
it too.

A reminder released by the end of a quiet window (`send_time.Send.released_at`) of a user
without a digest time goes out alone unless more than the burst threshold of that user's
reminders were held to that end, counted in the database (`worker.reminders.burst`), or the
window's burst digest already takes members: then it joins that digest (`digest_key` of the
user and the window's end), in the re-check's transaction, as a digest user's reminder joins
its slot's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, time, timedelta
from typing import Any, NamedTuple, Protocol, cast
from zoneinfo import ZoneInfo

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from outbox.admin import FOLLOW_UP_MARK, original_key
from outbox.channels.base import Message
from outbox.clock import Clock
from outbox.relay import Answer, Cancel, Defer, Expire, Prepare
from outbox.store import Claim
from worker.reminders import burst, digest_store, plan, preference_store, send_time
from worker.reminders import quiet as quiet_policy
from worker.reminders.digest_slots import (
    BURST_THRESHOLD,
    DIGEST_KIND,
    DigestSchedule,
    digest_key,
    release_as_digest,
    slot_of,
)
from worker.reminders.due import DEFAULT_LOOKAHEAD, forget_reminder
from worker.reminders.due_time import ALL_DAY_AT, all_day_moment
from worker.reminders.host import REFERENCE_SCHEMA, HostSchema
from worker.reminders.keys import reminder_key, reminder_variant
from worker.reminders.preference_store import OPTED_OUT
from worker.reminders.render import (
    DigestItem,
    OwnerFacts,
    ReminderRenderer,
    TaskFacts,
    owner_zone,
)
from worker.reminders.rule_store import rule_sql
from worker.reminders.rules import builtin_rule
from worker.reminders.schema import TaskColumns, among, owner_wants_reminders, task_open

#: Why a digest none of whose members still stands is not sent.
NO_REMINDERS_LEFT = "no reminders left"


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
        ).where(among(tasks.id, "ids"))
        user_query = select(
            users.id,
            users.email,
            users.timezone,
            owner_wants_reminders(users).label("wants_reminders"),
            users.locale,
        ).where(among(users.id, "user_ids"))
        listed = None
        if host.recipients is not None:
            r = host.recipients.c
            listed = select(r.task, r.user).where(among(r.task, "ids"), among(r.user, "user_ids"))
        rules = rule_sql(builtin_rule(lookahead))
        every = plan.offsets(rules)
        settings = rules.settings
        offsets = (
            select(users.id, every.c.offset_seconds, settings.c.all_day_at)
            .select_from(users.table)
            .outerjoin(rules.own, rules.own.c.user_id == users.id)
            .join(every, every.c.rule_id == rules.rule_id)
            .join(settings, settings.c.rule_id == rules.rule_id)
            .where(among(users.id, "user_ids"))
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
    all_day_at: Mapping[int, time]  # each recipient's rule's all-day time
    wanted: preference_store.Screens
    at: datetime  # the clock's time of the re-check

    def all_day_time(self, user_id: int, *, wall_clock: bool) -> time | None:
        """The all-day time of ``user_id``'s rule when moments are counted on the wall clock
        (``wall_clock``: an all-day task), else None."""
        return self.all_day_at.get(user_id, ALL_DAY_AT) if wall_clock else None


class Queued(Protocol):
    """A reminder as queued: a claimed outbox row, or a digest's member."""

    @property
    def key(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def subject_id(self) -> int: ...
    @property
    def subject_at(self) -> datetime | None: ...
    @property
    def recipient_id(self) -> int | None: ...
    @property
    def offset_seconds(self) -> int | None: ...


@dataclass(frozen=True)
class Standing:
    """A reminder that still stands: its task and recipient as they are now, and what the
    recipient's preferences say of it."""

    task: _Task
    user: OwnerFacts
    screen: preference_store.Screen

    @property
    def facts(self) -> TaskFacts:
        return TaskFacts(self.task.id, self.task.title, None, self.task.open)


def reminder_preparer(
    renderer: ReminderRenderer,
    host: HostSchema = REFERENCE_SCHEMA,
    *,
    clock: Clock,
    lookahead: timedelta = DEFAULT_LOOKAHEAD,
    digest_burst: int = BURST_THRESHOLD,
) -> Prepare:
    """The relay's re-check: cancel unless the reminder still stands; expire it when the
    recipient's pause says so (at ``clock``'s time); merge it into its digest, for a digest
    user; defer it when the recipient's quiet hours say so; merge it into the burst digest
    at the window's end when more than ``digest_burst`` of the recipient's reminders were held to
    it; else render it. A digest row: held to the same pause and quiet hours, then its
    members re-checked and those left rendered, or cancelled when none is."""
    release_as_digest(0, digest_burst)  # refuses a threshold that is not a whole number
    # Plain columns, not ORM objects: the re-check runs for every message the relay sends.
    queries = RecheckQueries.build(host, lookahead)
    wall_clock = host.tasks.due_time.per_recipient

    def prepare(session: Session, claims: Sequence[Claim]) -> dict[int, Answer]:
        digests = [claim for claim in claims if claim.kind == DIGEST_KIND]
        reminders = [claim for claim in claims if claim.kind != DIGEST_KIND]
        members = digest_store.members_of(session, [claim.id for claim in digests])
        queued: list[Queued] = [*reminders, *(m for found in members.values() for m in found)]
        now = _read(session, queries, queued, clock.now(), [c.subject_id for c in digests])
        answers: dict[int, Answer] = {}
        merges: list[_Merge] = []
        released: dict[tuple[int, datetime], list[_Released]] = {}
        for claim in reminders:
            found = _stands(claim, now, queries.legacy_offset)
            if isinstance(found, str):
                answers[claim.id] = _cancelled(session, host, claim, now, found)
                continue
            when = _send_time(claim, now, found.user, queries.legacy_offset, wall_clock=wall_clock)
            if isinstance(when, send_time.Expire):
                answers[claim.id] = Expire(when.reason)
            elif found.screen.digest is not None and FOLLOW_UP_MARK not in claim.key:
                all_day_at = now.all_day_time(found.user.id, wall_clock=wall_clock)
                moment = _moment(claim, found.user, queries.legacy_offset, all_day_at=all_day_at)
                merges.append(_Merge.of(claim, found, found.screen.digest, moment))
            elif isinstance(when, send_time.Hold):
                answers[claim.id] = Defer(when.until, when.reason)
            elif isinstance(when, send_time.Send) and (
                end := _burst_window(claim, found, when, now)
            ):
                released.setdefault((found.user.id, end), []).append(_Released(claim, found, when))
            else:
                answers[claim.id] = _rendered(renderer, claim, found, when)
        held = {claim.id: claim for claim in digests}
        context = _Context(
            now,
            queries.legacy_offset,
            wall_clock,
            held,
            frozenset(c.id for c in claims),
            host.tasks,
        )
        alone: list[_Released] = []
        for (user_id, end), group in sorted(released.items()):
            if _bursting(session, (user_id, end), group, context, threshold=digest_burst):
                merges += [_Merge.burst(r.claim, user_id, end, r) for r in group]
            else:
                alone += group
        merged, left = _merge_batch(session, merges, held, members, now.at)
        answers.update(merged)
        for one in (*alone, *left):
            answers[one.claim.id] = _rendered(renderer, one.claim, one.found, one.when)
        for claim in digests:
            answers[claim.id] = _digest(
                session, renderer, host, claim, members.get(claim.id, []), now, queries
            )
        return answers

    return prepare


class _Released(NamedTuple):
    """A reminder released by the end of a quiet window: sent alone unless it bursts."""

    claim: Claim
    found: Standing
    when: send_time.Send


@dataclass(frozen=True)
class _Context:
    """What the burst count reads besides the database."""

    now: _Now
    legacy_offset: int
    wall_clock: bool
    held: Mapping[int, Claim]  # digest rows this re-check holds
    claimed: frozenset[int]  # every row of the batch
    tasks: TaskColumns


def _burst_window(
    claim: Claim, found: Standing, when: send_time.Send, now: _Now
) -> datetime | None:
    """The end of the quiet window that released the reminder, when it may go out in a
    burst digest; None when it goes alone anyway (a follow-up, a user who refused digests)."""
    if when.released_at is None:
        return None
    if FOLLOW_UP_MARK in claim.key or now.wanted.screen(found.user.id, DIGEST_KIND).refusal:
        return None
    return when.released_at


def _bursting(
    session: Session,
    window: tuple[int, datetime],
    group: Sequence[_Released],
    context: _Context,
    *,
    threshold: int,
) -> bool:
    """Whether the reminders of ``group``, released by the window ending at ``end``, go in the
    burst digest of (user, end): more than ``threshold`` of the user's reminders were held to
    ``end``, or that digest already takes members (an earlier batch made it). ``window``:
    the user and ``end``."""
    user_id, end = window
    user = group[0].found.user
    chosen = context.now.wanted.preferences(user_id)
    quiet = send_time.quiet_hours(chosen)
    assert quiet is not None  # a window released them
    zone = send_time.zone_of(user.timezone)
    all_day_at = context.now.all_day_time(user_id, wall_clock=context.wall_clock)
    # Counted before the digest is looked for: a relay committing its burst between the two
    # reads has either left its rows live here or its digest there.
    others = [
        row
        for row in burst.live_reminders(session, context.tasks, user_id, context.claimed)
        if FOLLOW_UP_MARK not in row.key
        and row.subject_at is not None
        and quiet_policy.held_until(
            _moment(row, user, context.legacy_offset, all_day_at=all_day_at), quiet, zone
        )
        == end
    ]
    if release_as_digest(len(group) + len(others), threshold):
        return True
    key = digest_key(user_id, end)
    return digest_store.taking_digest(session, key, context.held) is not None


class _Merge(NamedTuple):
    """A reminder that still stands, bound for the digest of ``slot``: of its recipient's
    digest schedule, or the burst digest at the end of a quiet window (no ``schedule``:
    that digest or none, when ``alone`` is how it goes)."""

    claim: Claim
    user_id: int
    slot: datetime
    schedule: DigestSchedule | None
    zone: ZoneInfo
    alone: _Released | None = None

    @classmethod
    def of(
        cls, claim: Claim, found: Standing, schedule: DigestSchedule, moment: datetime
    ) -> _Merge:
        """Bound for the slot of its recipient's ``schedule`` that ``moment`` (its moment, as
        `_moment` gives it) falls in."""
        zone = slot_zone(found.user)
        # A reminder queued after its moment (its task created or moved late) counts from
        # when it was queued: its moment's slot may be long gone.
        slot = slot_of(max(moment, claim.created_at), schedule, zone)
        user_id = found.user.id
        return cls(claim, user_id, slot, schedule, zone)

    @classmethod
    def burst(cls, claim: Claim, user_id: int, end: datetime, alone: _Released) -> _Merge:
        """Bound for the burst digest of the window ending at ``end``."""
        return cls(claim, user_id, end, None, ZoneInfo("UTC"), alone)


def _merge_batch(
    session: Session,
    merges: Sequence[_Merge],
    held: Mapping[int, Claim],
    members: dict[int, list[digest_store.Member]],
    now: datetime,
) -> tuple[dict[int, Cancel], list[_Released]]:
    """Merge each reminder into its digest; a digest ``held`` by this re-check gets the
    reminder among its ``members`` too, to be re-checked with them. Returns the answers, and
    the released reminders whose burst digest went out already, to be sent alone."""
    requests = [
        digest_store.Request(m.claim, m.user_id, m.slot, m.schedule, m.zone) for m in merges
    ]
    # One batch of statements for every reminder (`digest_store.merge_all`), not a round
    # trip per reminder: a digest slot can gather every user's reminders at once.
    merged = digest_store.merge_all(session, requests, now=now, held=held)
    answers = {}
    left = []
    for merge in merges:
        claim = merge.claim
        found = merged.get(claim.id)
        if found is None:
            assert merge.alone is not None  # only a burst's digest can be gone
            left.append(merge.alone)
            continue
        answers[claim.id] = Cancel(digest_store.in_digest(found.key))
        if found.digest_id in held:
            listed = members.setdefault(found.digest_id, [])
            if claim.id not in {member.id for member in listed}:
                listed.append(digest_store.member_of(claim, found.digest_id, now))
    return answers, left


def slot_zone(user: OwnerFacts) -> ZoneInfo:
    """The zone a user's digest slots are counted in (UTC for an unknown zone)."""
    zone = owner_zone(user.timezone, user_id=user.id)
    return zone if isinstance(zone, ZoneInfo) else ZoneInfo("UTC")


def _read(
    session: Session,
    queries: RecheckQueries,
    queued: Sequence[Queued],
    at: datetime,
    more_users: Sequence[int] = (),
) -> _Now:
    connection = session.connection()
    ids = sorted({reminder.subject_id for reminder in queued})
    tasks = {row[0]: _Task(*row) for row in connection.execute(queries.tasks, {"ids": ids})}
    user_ids = sorted(
        {r.recipient_id for r in queued if r.recipient_id is not None}
        | {task.owner_id for task in tasks.values()}
        | set(more_users)
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
    all_day_at: dict[int, time] = {}
    for user, offset, all_day in connection.execute(queries.offsets, {"user_ids": user_ids}):
        offsets.setdefault(user, set()).add(offset)
        all_day_at[user] = all_day
    wanted = preference_store.screens(session, users)
    by_user = {user: frozenset(o) for user, o in offsets.items()}
    return _Now(tasks, users, listed, by_user, all_day_at, wanted, at)


def _stands(reminder: Queued, now: _Now, legacy_offset: int) -> Standing | str:
    """Whether a queued reminder still stands: its task, recipient and their preferences
    now, or the reason it does not."""
    task = now.tasks.get(reminder.subject_id)
    if task is None:
        return "task deleted"
    user_id = task.owner_id if reminder.recipient_id is None else reminder.recipient_id
    user = now.users.get(user_id)
    reason = None
    who = "owner" if user_id == task.owner_id else "recipient"
    if user is None:  # possible where the host's schema has no foreign key
        reason = f"{who} deleted"
    elif not task.open:
        reason = "task completed"
    elif not _same_due(reminder, task, user_id, legacy_offset):
        reason = "due date moved"
    elif user_id != task.owner_id and (task.id, user_id) not in now.listed:
        reason = "no longer a recipient"
    elif not user.wants_reminders:
        reason = f"{who} turned notifications off"
    elif reminder.offset_seconds is not None and reminder.offset_seconds not in now.offsets.get(
        user_id, frozenset()
    ):
        reason = "no longer in the recipient's rule"
    screen = now.wanted.screen(user_id, reminder.kind)
    if reason is None and screen.refusal is not None:
        reason = screen.refusal
    if reason is not None:
        return reason
    assert user is not None
    return Standing(task, user, screen)


def _cancelled(
    session: Session, host: HostSchema, reminder: Queued, now: _Now, reason: str
) -> Cancel:
    task = now.tasks.get(reminder.subject_id)
    # The scan may plan the task again: it plans only what still stands, so that a reminder
    # cancelled here is not armed again unless its task or recipient came back. Not after an
    # opt-out, which the scan does not read: it would arm the reminder again at every tick
    # until it expired. An opt-in before a later moment is planned by the window anyway.
    if task is not None and reason != OPTED_OUT:
        forget_reminder(session, host.tasks, task.id, task.marker)
    return Cancel(reason)


def _rendered(
    renderer: ReminderRenderer, claim: Claim, found: Standing, when: send_time.Decision
) -> Message:
    facts = found.facts._replace(due_date=claim.subject_at)
    overdue = claim.offset_seconds is not None and claim.offset_seconds < 0
    message = renderer.render(claim.key, facts, found.user, overdue=overdue)
    message = found.screen.addressed(message)
    released = when.released_at if isinstance(when, send_time.Send) else None
    return message if released is None else replace(message, ready_at=released)


def _send_time(
    claim: Claim, now: _Now, user: OwnerFacts, legacy_offset: int, *, wall_clock: bool
) -> send_time.Decision:
    """What the recipient's pause and quiet hours say of the reminder now.

    Its moment is the row's due moment less its offset, counted on the recipient's wall
    clock for an all-day task (``wall_clock``), exactly as the planner counts it. A digest user's
    reminder is decided as anyone else's (``digests=False``): the pause applies to it here,
    its quiet hours to the digest it joins.
    """
    if claim.subject_at is None:  # no due moment to place it by: as before preferences
        return send_time.Send()
    all_day_at = now.all_day_time(user.id, wall_clock=wall_clock)
    moment = _moment(claim, user, legacy_offset, all_day_at=all_day_at)
    if claim.offset_seconds is None:  # queued before rules: meant to go out once queued
        moment = min(moment, claim.created_at)
    zone = send_time.zone_of(user.timezone)
    chosen = now.wanted.preferences(user.id)
    return send_time.decide(moment, claim.subject_at, now.at, chosen, zone, digests=False)


def _moment(
    reminder: Queued, user: OwnerFacts, legacy_offset: int, *, all_day_at: time | None
) -> datetime:
    """A reminder's moment as its recipient's quiet hours see it: its due moment less its
    offset; for an all-day task (``all_day_at``, the recipient's all-day time) on the
    recipient's wall clock, the instant the planner's SQL gives (`all_day_moment`)."""
    assert reminder.subject_at is not None  # the caller's to check
    offset = timedelta(
        seconds=legacy_offset if reminder.offset_seconds is None else reminder.offset_seconds
    )
    if all_day_at is None:
        return reminder.subject_at - offset
    zone = send_time.zone_of(user.timezone)
    return all_day_moment(reminder.subject_at, all_day_at, offset, zone)


def _digest(  # noqa: PLR0917  (the batch's facts, passed on)
    session: Session,
    renderer: ReminderRenderer,
    host: HostSchema,
    claim: Claim,
    members: Sequence[digest_store.Member],
    now: _Now,
    queries: RecheckQueries,
) -> Answer:
    """A digest row's re-check: its recipient's pause and quiet hours at its slot, then each
    member as a reminder's; those left, rendered."""
    user = now.users.get(claim.subject_id)
    if user is None:
        return Cancel("recipient deleted")
    screen = now.wanted.screen(user.id, DIGEST_KIND)
    if screen.refusal is not None:
        return Cancel(screen.refusal)
    slot = claim.subject_at
    assert slot is not None  # a digest's subject_at is its slot
    chosen = now.wanted.preferences(user.id)
    zone = send_time.zone_of(user.timezone)
    when = send_time.decide(slot, slot, now.at, chosen, zone, digests=False)
    if isinstance(when, send_time.Expire):
        return Expire(when.reason)
    if isinstance(when, send_time.Hold):
        return Defer(when.until, when.reason)
    items: list[DigestItem] = []
    for member in members:
        found = _stands(member, now, queries.legacy_offset)
        if isinstance(found, str):
            _cancelled(session, host, member, now, found)
            continue
        due = member.subject_at
        assert due is not None  # every reminder row has its due moment
        # Overdue: a nudge, or a reminder whose task fell due before the digest went out.
        nudge = member.offset_seconds is not None and member.offset_seconds < 0
        facts = found.facts._replace(due_date=due)
        items.append(DigestItem(member.key, facts, overdue=nudge or due <= slot))
    if not items:
        return Cancel(NO_REMINDERS_LEFT)
    return screen.addressed(renderer.render_digest(claim.key, slot, items, user))


def _same_due(claim: Queued, task: _Task, user_id: int, legacy_offset: int) -> bool:
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
