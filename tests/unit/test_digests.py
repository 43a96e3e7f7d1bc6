"""Digests: a digest user's reminders merged into one outbox row per slot, re-checked at send.

The user of these tests lives in Europe/Berlin and has a digest at 18:00 local, 17:00 UTC on
28 November 2026 (the tests' clock starts that day at 12:00 UTC). Tasks are due after the
slot, so their 24-hour reminders are past when queued and each is claimed at once.
"""

from __future__ import annotations

import email
import io
import json
import warnings
from datetime import UTC, datetime, timedelta
from email.message import Message as EmailMessage
from typing import Any, cast
from zoneinfo import ZoneInfo

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, MetaData, Table, event, select, update
from sqlalchemy.orm import Session

from outbox.admin import follow_up
from outbox.channels.base import Message
from outbox.channels.console import ConsoleChannel
from outbox.channels.smtp import SmtpChannel
from outbox.channels.webhook import WebhookChannel
from outbox.relay import Cancel
from outbox.store import Claim, claim_due_rows
from outbox.table import OutboxRow, Status
from tests.support.channels import RecordingChannel
from tests.support.clock import T0, ManualClock
from tests.support.db import add_task, add_user, make_services
from worker.bootstrap import Services
from worker.reminders import digest_store, preference_store
from worker.reminders.digest_slots import DIGEST_KIND, DigestSchedule, digest_key
from worker.reminders.digest_store import DigestMemberRow
from worker.reminders.preferences import PreferenceEdit
from worker.reminders.recheck import NO_REMINDERS_LEFT
from worker.reminders.render import DigestItem, OwnerFacts, ReminderRenderer, TaskFacts
from worker.reminders.schema import Task

HOUR = timedelta(hours=1)
BERLIN = ZoneInfo("Europe/Berlin")
SLOT = datetime(2026, 11, 28, 17, 0, tzinfo=UTC)  # 18:00 in Berlin
NEXT_SLOT = SLOT + 24 * HOUR
KEY = digest_key(1, SLOT)
SCHEDULE = DigestSchedule(datetime(2026, 1, 1, 18, 0).time())
SECRET = "whsec_cmVtaW5kZXJzLXRlc3Qta2V5LTMyLWJ5dGVzLWxvbmc="


@pytest.fixture
def services(sqlite_engine: Engine, clock: ManualClock, channel: RecordingChannel) -> Services:
    """Services on SQLite; user 1 in Berlin with a digest at 18:00, user 2 without one."""
    built = make_services(sqlite_engine, clock, channel)
    add_user(built, 1, email="ada@example.com", timezone="Europe/Berlin")
    add_user(built, 2, email="bob@example.com", timezone="Europe/Berlin")
    with built.session_factory.begin() as session:
        preference_store.edit_preferences(
            session, built.host, 1, PreferenceEdit(digest="18:00"), now=clock.now()
        )
    return built


def queue(services: Services, owner: int, *task_ids: int, after_slot: timedelta = HOUR) -> None:
    """Tasks of ``owner`` due ``after_slot`` (plus a minute per task) after the slot; scan."""
    for n, task_id in enumerate(task_ids):
        due = SLOT + after_slot + n * timedelta(minutes=1)
        add_task(services, task_id, owner, due, title=f"task {task_id}")
    services.scan()


def rows(services: Services) -> list[tuple[str, str, str | None]]:
    """(key, status, last error) of every outbox row, by id."""
    with services.session_factory() as session:
        found = session.execute(
            select(OutboxRow.idempotency_key, OutboxRow.status, OutboxRow.last_error).order_by(
                OutboxRow.id
            )
        )
        return [tuple(row) for row in found]  # type: ignore[misc]


def digests(services: Services) -> list[OutboxRow]:
    """The digest rows, detached."""
    with Session(services.engine, expire_on_commit=False) as session:
        found = list(session.scalars(select(OutboxRow).where(OutboxRow.kind == DIGEST_KIND)))
        session.expunge_all()
    return found


def member_links(services: Services) -> list[tuple[int, int]]:
    """(member row id, digest row id) of every member link."""
    with services.session_factory() as session:
        found = session.execute(
            select(DigestMemberRow.member_id, DigestMemberRow.digest_id).order_by(
                DigestMemberRow.member_id
            )
        )
        return [tuple(row) for row in found]  # type: ignore[misc]


def claimed(services: Services, session: Session, now: datetime | None = None) -> list[Claim]:
    """Claim every due row in ``session``."""
    at = now or services.clock.now()
    return claim_due_rows(session, at, at + services.settings.lease, "test", 100)


# --- end to end ------------------------------------------------------------------------------


def test_a_digest_user_gets_one_message_at_the_slot_and_none_alone(
    services: Services, clock: ManualClock, channel: RecordingChannel
) -> None:
    """Three reminders due now are merged, not sent; at 18:00 Berlin one digest lists all
    three; another user's reminder goes out alone as before."""
    queue(services, 1, 11, 12, 13)
    queue(services, 2, 21)
    report = services.relay().relay_until_idle()
    assert report.counts == {"cancelled": 3, "delivered": 1}
    assert [m.recipient for m in channel.sent] == ["bob@example.com"]
    (digest,) = digests(services)
    assert (digest.idempotency_key, digest.status) == (KEY, Status.PENDING)
    assert (digest.available_at, digest.expires_at, digest.subject_id) == (SLOT, None, 1)
    in_digest = [r for r in rows(services) if r[2] == f"in digest {KEY}"]
    assert len(in_digest) == 3 and all(r[1] == Status.CANCELLED for r in in_digest)

    clock.set(SLOT - timedelta(seconds=1))
    assert services.relay().relay_until_idle().counts == {}
    clock.set(SLOT)
    assert services.relay().relay_until_idle().counts == {"delivered": 1}
    clock.advance(2 * HOUR)
    services.scan()
    assert services.relay().relay_until_idle().counts == {}
    (_alone, sent) = channel.sent
    assert (sent.key, sent.recipient) == (KEY, "ada@example.com")
    assert [line["title"] for line in sent.document["reminders"]] == [
        "task 11",
        "task 12",
        "task 13",
    ]
    assert "task 13" in sent.text and "18:00" not in sent.subject
    assert digests(services)[0].status == Status.DELIVERED


def test_a_reminder_of_a_digest_user_is_cancelled_for_its_own_reasons_first(
    services: Services, channel: RecordingChannel
) -> None:
    """A completed task's reminder is cancelled as such and joins no digest."""
    queue(services, 1, 11)
    with services.session_factory.begin() as session:
        session.execute(update(Task).values(completed_at=T0))
    assert services.relay().relay_until_idle().counts == {"cancelled": 1}
    assert rows(services) == [(rows(services)[0][0], Status.CANCELLED, "task completed")]
    assert digests(services) == [] and member_links(services) == []


# --- merge -----------------------------------------------------------------------------------


def test_merging_is_idempotent_and_one_slot_is_one_digest_row(services: Services) -> None:
    """Two reminders of one slot make one digest row; merging one again changes nothing."""
    queue(services, 1, 11, 12)
    with services.session_factory.begin() as session:
        first, second = claimed(services, session)
        answers = [
            digest_store.merge_into_digest(
                session, claim, 1, SLOT, schedule=SCHEDULE, zone=BERLIN, now=T0
            )
            for claim in (first, second, first)
        ]
    assert answers == [Cancel(f"in digest {KEY}")] * 3
    (digest,) = digests(services)
    assert member_links(services) == [(first.id, digest.id), (second.id, digest.id)]


def statements_merging(services: Services, owners: dict[int, int]) -> int:
    """How many statements one `merge_all` of every due reminder sends; ``owners``: the
    owner of each task."""
    for task_id, owner in owners.items():
        add_task(services, task_id, owner, SLOT + HOUR, title=f"task {task_id}")
    services.scan()
    sent: list[str] = []

    def count(*args: Any) -> None:
        sent.append(args[2])

    with services.session_factory.begin() as session:
        found = claimed(services, session)
        requests = [
            digest_store.Request(c, owners[c.subject_id], SLOT, SCHEDULE, BERLIN) for c in found
        ]
        event.listen(services.engine, "before_cursor_execute", count)
        try:
            merged = digest_store.merge_all(session, requests, now=T0)
        finally:
            event.remove(services.engine, "before_cursor_execute", count)
    assert {m.key for m in merged.values()} == {digest_key(o, SLOT) for o in owners.values()}
    assert set(merged) == {c.id for c in found}
    return len(sent)


def test_a_batch_is_merged_with_the_same_statements_whatever_its_size(
    services: Services,
) -> None:
    """Merging is set-based: twenty reminders of two users cost the statements of one, not
    a round trip each (a slot may gather every user's reminders at once)."""
    with services.session_factory.begin() as session:
        edit = PreferenceEdit(digest="18:00")
        preference_store.edit_preferences(session, services.host, 2, edit, now=T0)
    one = statements_merging(services, {11: 1})
    many = statements_merging(services, {20 + n: 1 + n % 2 for n in range(20)})
    assert one > 0
    assert many == one
    assert len(member_links(services)) == 21


def test_a_crash_before_the_commit_leaves_nothing_half_done(
    services: Services, clock: ManualClock, channel: RecordingChannel
) -> None:
    """The merge and the reminder's end are one transaction: rolled back, neither happened,
    and the next relay merges the reminder once."""
    queue(services, 1, 11)
    prepare = services.relay().prepare
    with pytest.raises(RuntimeError, match="crash"), services.session_factory.begin() as session:
        answers = prepare(session, claimed(services, session))
        assert list(answers.values()) == [Cancel(f"in digest {KEY}")]
        raise RuntimeError("crash")
    assert digests(services) == [] and member_links(services) == []
    assert [r[1] for r in rows(services)] == [Status.PENDING]
    assert services.relay().relay_until_idle().counts == {"cancelled": 1}
    assert len(member_links(services)) == 1
    clock.set(SLOT)
    assert services.relay().relay_until_idle().counts == {"delivered": 1}
    assert channel.keys == [KEY]


def test_a_slot_whose_digest_went_out_passes_its_members_to_the_next(
    services: Services, clock: ManualClock, channel: RecordingChannel
) -> None:
    """A reminder late for a slot already sent joins the next day's digest; so does one
    merged while that digest is being sent (claimed)."""
    queue(services, 1, 11)
    services.relay().relay_until_idle()
    clock.set(SLOT)
    services.relay().relay_until_idle()
    assert channel.keys == [KEY]
    add_task(services, 12, 1, SLOT + 2 * HOUR)
    services.scan()
    with services.session_factory.begin() as session:
        (claim,) = claimed(services, session)
        answer = digest_store.merge_into_digest(
            session, claim, 1, SLOT, schedule=SCHEDULE, zone=BERLIN, now=clock.now()
        )
    assert answer == Cancel(f"in digest {digest_key(1, NEXT_SLOT)}")
    with services.session_factory.begin() as session:
        (sending,) = claimed(services, session, NEXT_SLOT)  # a relay sends the next digest
    assert sending.key == digest_key(1, NEXT_SLOT)
    add_task(services, 13, 1, SLOT + 3 * HOUR)
    services.scan()
    with services.session_factory.begin() as session:
        (reminder,) = claimed(services, session)
        answer = digest_store.merge_into_digest(
            session, reminder, 1, NEXT_SLOT, schedule=SCHEDULE, zone=BERLIN, now=clock.now()
        )
    assert answer == Cancel(f"in digest {digest_key(1, NEXT_SLOT + 24 * HOUR)}")


def test_a_reminder_claimed_with_its_digest_is_in_it(
    services: Services, clock: ManualClock, channel: RecordingChannel
) -> None:
    """A reminder whose moment is the slot itself, claimed in the same batch as the digest,
    is merged before the digest is re-checked, and sent in it."""
    queue(services, 1, 11)
    services.relay().relay_until_idle()
    add_task(services, 12, 1, SLOT + 24 * HOUR, title="at the slot")  # its moment: the slot
    clock.set(SLOT - timedelta(minutes=1))
    services.scan()
    clock.set(SLOT)
    assert services.relay().relay_until_idle().counts == {"cancelled": 1, "delivered": 1}
    (sent,) = channel.sent
    assert [line["title"] for line in sent.document["reminders"]] == ["task 11", "at the slot"]


# --- the digest's re-check -------------------------------------------------------------------


def test_the_digest_leaves_out_completed_members_and_cancels_when_none_is_left(
    services: Services, clock: ManualClock, channel: RecordingChannel
) -> None:
    """Members are re-checked at send: a completed one is left out; with every member
    completed, the digest is cancelled, not sent."""
    queue(services, 1, 11, 12)
    services.relay().relay_until_idle()
    with services.session_factory.begin() as session:
        session.execute(update(Task).where(Task.id == 11).values(completed_at=T0))
    clock.set(SLOT)
    assert services.relay().relay_until_idle().counts == {"delivered": 1}
    assert [line["task_id"] for line in channel.sent[0].document["reminders"]] == [12]

    queue(services, 1, 31, after_slot=25 * HOUR)  # the next slot's
    clock.set(NEXT_SLOT - HOUR)
    services.scan()
    services.relay().relay_until_idle()
    with services.session_factory.begin() as session:
        session.execute(update(Task).where(Task.id == 31).values(completed_at=clock.now()))
    clock.set(NEXT_SLOT)
    assert services.relay().relay_until_idle().counts == {"cancelled": 1}
    assert len(channel.sent) == 1
    assert digests(services)[-1].last_error == NO_REMINDERS_LEFT


def test_a_moved_task_is_left_out_and_its_new_reminder_joins_a_digest(
    services: Services, clock: ManualClock, channel: RecordingChannel
) -> None:
    """A member whose task moved is left out of its digest; the reminder of the new due
    date is merged in its own turn."""
    queue(services, 1, 11)
    services.relay().relay_until_idle()
    with services.session_factory.begin() as session:
        session.execute(update(Task).values(due_date=SLOT + 2 * HOUR))
    services.scan()
    services.relay().relay_until_idle()
    assert len(member_links(services)) == 2
    clock.set(SLOT)
    services.relay().relay_until_idle()
    (sent,) = channel.sent
    (line,) = sent.document["reminders"]
    assert line["due_date"] == "2026-11-28T19:00:00Z"


def test_an_opt_out_cancels_the_digest(services: Services, clock: ManualClock) -> None:
    """A user who unsubscribed from everything after the merge gets no digest."""
    queue(services, 1, 11)
    services.relay().relay_until_idle()
    with services.session_factory.begin() as session:
        preference_store.edit_preferences(
            session, services.host, 1, PreferenceEdit(unsubscribe=True), now=clock.now()
        )
    clock.set(SLOT)
    assert services.relay().relay_until_idle().counts == {"cancelled": 1}


def test_the_batch_reads_preferences_once(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Merging a batch costs one preference read, not one per reminder."""
    queue(services, 1, 11, 12, 13)
    calls: list[int] = []
    original = preference_store.screens

    def counting(session: Session, users: Any) -> preference_store.Screens:
        calls.append(1)
        return original(session, users)

    monkeypatch.setattr(preference_store, "screens", counting)
    assert services.relay().relay_until_idle().counts == {"cancelled": 3}
    assert len(calls) == 1


# --- rendering and channels ------------------------------------------------------------------

OWNER = OwnerFacts(1, "ada@example.com", "Asia/Tokyo", True, "de")


def items() -> list[DigestItem]:
    """An overdue nudge, a reminder of a task due later, and two members of one task."""
    due = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)
    soon = TaskFacts(5, "Write <report> & send", due, True)
    late = TaskFacts(6, "Pay\r\nBcc: evil@example.com", due - 30 * HOUR, True)
    return [
        DigestItem("due_soon-a-5", soon, overdue=False),
        DigestItem("due_soon-b-6", late, overdue=True),
        DigestItem("due_soon-c-5", soon, overdue=False),
    ]


def digest_message(renderer: ReminderRenderer | None = None) -> Message:
    """The sample digest, rendered."""
    return (renderer or ReminderRenderer("example.com")).render_digest(
        "digest-1-20261128T170000Z", SLOT, items(), OWNER
    )


def test_a_digest_groups_overdue_before_due_soon_in_the_users_zone_and_language() -> None:
    """One line per task, overdue first, due times in Tokyo, words in German; the title is
    data: escaped in HTML, kept out of the headers and on one line in the text."""
    message = digest_message()
    text = message.text
    assert text.index("Überfällig") < text.index("Pay Bcc") < text.index("Bald fällig")
    assert text.index("Bald fällig") < text.index("Write <report> & send")
    assert text.count("Write <report>") == 1
    assert "29. Nov. 2026, 12:00 JST" in text and "28. Nov. 2026, 06:00 JST" in text
    html = message.html or ""
    assert "Write &lt;report&gt; &amp; send" in html
    assert "<report>" not in html
    assert message.subject == "Ihre Erinnerungen: 2 Aufgaben"
    assert all("\n" not in value and "evil" not in value for value in message.headers.values())
    assert message.headers["Message-ID"] == "<digest-1-20261128T170000Z@example.com>"


def test_the_webhook_posts_the_digest_once_with_its_list() -> None:
    """One signed POST of type ``digest``, its reminders listed with their keys and due
    times in UTC."""
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        assert request.headers["webhook-id"] == "digest-1-20261128T170000Z"
        return httpx.Response(204)

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        channel = WebhookChannel("https://hooks.test/in", [SECRET], timeout=5, client=client)
        assert channel.send(digest_message()).outcome == "delivered"
    (body,) = bodies
    assert (body["type"], body["key"], body["owner_id"]) == ("digest", KEY, 1)
    assert body["slot"] == "2026-11-28T17:00:00Z"
    assert body["reminders"] == [
        {
            "type": "task.overdue",
            "key": "due_soon-b-6",
            "keys": ["due_soon-b-6"],
            "task_id": 6,
            "title": "Pay\r\nBcc: evil@example.com",
            "due_date": "2026-11-27T21:00:00Z",
        },
        {
            "type": "task.due_soon",
            "key": "due_soon-a-5",
            "keys": ["due_soon-a-5", "due_soon-c-5"],
            "task_id": 5,
            "title": "Write <report> & send",
            "due_date": "2026-11-29T03:00:00Z",
        },
    ]


def test_the_console_prints_the_digest_as_one_line() -> None:
    """One line naming the counts and the titles, the address masked."""
    stream = io.StringIO()
    assert ConsoleChannel(stream).send(digest_message()).outcome == "delivered"
    (line,) = stream.getvalue().splitlines()
    assert line.startswith("digest to a***@example.com: 2 tasks, 1 overdue: ")
    assert line.endswith(f"(key {KEY})")


def test_smtp_sends_the_digest_as_text_and_html(clock: ManualClock) -> None:
    """A multipart/alternative mail, as a reminder is."""
    smtp = SmtpChannel("127.0.0.1", 1, mail_from="reminders@example.com", timeout=5, clock=clock)
    raw = smtp._render(digest_message(), international=False)
    mail: EmailMessage = email.message_from_bytes(raw)
    assert mail.get_content_type() == "multipart/alternative"
    parts = [part.get_content_type() for part in mail.walk()][1:]
    assert parts == ["text/plain", "text/html"]
    assert mail["Subject"] == "Ihre Erinnerungen: 2 Aufgaben"
    assert mail["X-Reminder-Count"] == "2"


def test_every_shipped_language_renders_a_digest() -> None:
    """The renderer's start-up check covers the digest templates in every language."""
    ReminderRenderer("example.com").check()
    for locale in ("en", "fr", "es"):
        message = ReminderRenderer("example.com").render_digest(
            KEY, SLOT, items(), OWNER._replace(locale=locale)
        )
        assert message.subject != digest_message().subject


def test_a_member_armed_again_after_its_digest_went_out_joins_the_next_one(
    services: Services, clock: ManualClock, channel: RecordingChannel
) -> None:
    """A member row armed again (a replay, or a scan re-arming a cancelled key) after its
    digest was sent is not held to that digest: its link moves to the next slot's."""
    queue(services, 1, 11)
    services.relay().relay_until_idle()
    clock.set(SLOT)
    services.relay().relay_until_idle()
    with services.session_factory.begin() as session:
        session.execute(
            update(OutboxRow)
            .where(OutboxRow.kind != DIGEST_KIND)
            .values(status=Status.PENDING, available_at=clock.now(), expires_at=None)
        )
    assert services.relay().relay_until_idle().counts == {"cancelled": 1}
    (member,) = [r for r in rows(services) if r[0].startswith("due_soon")]
    assert member[2] == f"in digest {digest_key(1, NEXT_SLOT)}"
    (link,) = member_links(services)
    assert link[1] == digests(services)[-1].id


def test_the_member_table_is_the_migration(engine: Engine) -> None:
    """Alembic finds no difference between the model and the migrated table."""
    name = DigestMemberRow.__tablename__
    models = MetaData()
    for model in (OutboxRow, DigestMemberRow):
        cast(Table, model.__table__).to_metadata(models)
    with engine.connect() as connection, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        context = MigrationContext.configure(
            connection,
            opts={
                "compare_type": True,
                "include_name": lambda n, kind, _: kind != "table" or n in (name, "outbox"),
                "include_object": lambda o, n, kind, *_: kind != "table" or n == name,
            },
        )
        assert compare_metadata(context, models) == []


def test_a_snoozed_reminders_follow_up_goes_out_alone_at_the_time_asked(
    services: Services, clock: ManualClock, channel: RecordingChannel
) -> None:
    """ "Remind me again in an hour" from a reminder sent before the digest was turned on is
    sent at that hour, not gathered into the next digest."""
    queue(services, 2, 21)
    services.relay().relay_until_idle()
    (sent,) = channel.keys
    with services.session_factory.begin() as session:
        preference_store.edit_preferences(
            session, services.host, 2, PreferenceEdit(digest="18:00"), now=clock.now()
        )
        follow_up(session, sent, HOUR, now=clock.now(), lifetime=24 * HOUR)
    clock.advance(HOUR)
    assert services.relay().relay_until_idle().counts == {"delivered": 1}
    assert channel.keys[1].startswith(sent) and digests(services) == []
