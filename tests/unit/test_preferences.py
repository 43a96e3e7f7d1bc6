"""Users' preferences: the command line's forms parsed and refused, stored and read back on
SQLite and PostgreSQL, and the send-time verdict of an opt-out."""

from __future__ import annotations

import warnings
from dataclasses import replace
from datetime import date, time, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, MetaData, func, select

from outbox.masking import mask_url
from outbox.table import OutboxRow, Status
from tests.support.channels import RecordingChannel
from tests.support.clock import T0, ManualClock
from tests.support.db import add_task, add_user, make_services
from worker.bootstrap import Services
from worker.errors import InvalidPreference, UnknownUser
from worker.reminders import preference_store
from worker.reminders.preference_store import OPTED_OUT, PreferencesRow
from worker.reminders.preferences import (
    ALL_KINDS,
    PreferenceEdit,
    Preferences,
    QuietHours,
    days_mask,
    format_days,
    mask_days,
    parse_days,
    parse_quiet,
)

SECRET_URL = "json://someone:hunter2@127.0.0.1:9/hook?token=t0psecret"


@pytest.fixture
def services(engine: Engine, clock: ManualClock) -> Services:
    """Services on this test's database, user 1 (Paris) and 2 (Auckland) in it."""
    built = make_services(engine, clock, RecordingChannel())
    add_user(built, 1, timezone="Europe/Paris")
    add_user(built, 2, timezone="Pacific/Auckland")
    return built


def edit(services: Services, user_id: int, change: PreferenceEdit) -> tuple[Preferences, bool]:
    """Make a change in a transaction of its own."""
    with services.session_factory.begin() as session:
        return preference_store.edit_preferences(
            session, services.host, user_id, change, now=services.clock.now()
        )


def stored(services: Services, user_id: int) -> Preferences:
    """The user's preferences as stored now."""
    with services.session_factory() as session:
        return preference_store.preferences(session, user_id)


def row_count(services: Services) -> int:
    """How many users have a preferences row."""
    with services.session_factory() as session:
        return int(session.execute(select(func.count()).select_from(PreferencesRow)).scalar_one())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("22:00-07:00", (time(22), time(7))),
        ("9:30-17:45", (time(9, 30), time(17, 45))),
        ("00:00-23:59", (time(0), time(23, 59))),
    ],
)
def test_quiet_windows_parse(text: str, expected: tuple[time, time]) -> None:
    """A window is two local HH:MM times, across midnight allowed."""
    assert parse_quiet(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("25:00-07:00", "'25:00' is not a time of day"),
        ("22:00-07:60", "'07:60' is not a time of day"),
        ("07:00-07:00", "zero length"),
        ("22:00", "not a window"),
        ("ten-eleven", "not a time HH:MM"),
    ],
)
def test_bad_quiet_windows_are_refused(text: str, message: str) -> None:
    """A time out of range, a zero-length window or another form is refused in one line."""
    with pytest.raises(InvalidPreference, match=message) as refused:
        parse_quiet(text)
    assert str(refused.value).startswith("--quiet: ")
    assert "\n" not in str(refused.value)


def test_weekdays_parse_and_print_back() -> None:
    """Day lists and ranges read as weekday numbers, stored as a mask, printed back short."""
    days = parse_days("mon,wed-fri")
    assert days == {0, 2, 3, 4}
    assert mask_days(days_mask(days)) == days
    assert format_days(days) == "mon,wed-fri"
    assert format_days(parse_days("sat,sun,mon-fri")) == "mon-sun"
    for bad in ("fri-mon", "monday", "", "mon-"):
        with pytest.raises(InvalidPreference, match="--quiet-days"):
            parse_days(bad)


def test_every_preference_is_stored_and_read_back(services: Services) -> None:
    """Each field set through an edit is what is read back, the time of the change with it."""
    chosen, changed = edit(
        services,
        1,
        PreferenceEdit(
            quiet="22:00-07:00",
            quiet_days="mon-fri",
            digest="08:30",
            digest_workdays=True,
            pause_until="2026-12-24",
            channel=SECRET_URL,
            unsubscribe=True,
            kinds="due_soon",
        ),
    )
    assert changed
    expected = Preferences(
        1,
        frozenset({"due_soon"}),
        QuietHours(time(22), time(7), frozenset(range(5))),
        time(8, 30),
        True,
        date(2026, 12, 24),
        SECRET_URL,
        T0,
    )
    assert stored(services, 1) == expected == chosen


def test_an_edit_keeps_what_it_does_not_name(services: Services) -> None:
    """Options left out keep their values; ``off`` clears one; the same edit again is no
    change."""
    edit(services, 1, PreferenceEdit(quiet="22:00-07:00", quiet_days="sat,sun", digest="08:00"))
    edit(services, 1, PreferenceEdit(quiet="23:00-06:00"))
    after = stored(services, 1)
    assert after.quiet == QuietHours(time(23), time(6), frozenset({5, 6}))
    assert after.digest_at == time(8)
    assert not edit(services, 1, PreferenceEdit(quiet="23:00-06:00"))[1]
    edit(services, 1, PreferenceEdit(digest="off", quiet="off"))
    assert (stored(services, 1).quiet, stored(services, 1).digest_at) == (None, None)


def test_unsubscribe_and_resubscribe(services: Services) -> None:
    """An opt-out of every kind covers any kind; resubscribing removes every opt-out."""
    edit(services, 1, PreferenceEdit(unsubscribe=True))
    assert stored(services, 1).opted_out == {ALL_KINDS}
    assert stored(services, 1).opted_out_of("overdue")
    edit(services, 1, PreferenceEdit(unsubscribe=False))
    assert not stored(services, 1).opted_out_of("due_soon")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (PreferenceEdit(quiet="25:00-07:00"), "--quiet"),
        (PreferenceEdit(quiet="07:00-07:00"), "zero length"),
        (PreferenceEdit(pause_until="2026-11-27"), "in the past"),
        (PreferenceEdit(pause_until="24/12/2026"), "not a date"),
        (PreferenceEdit(channel="nonsense://x"), "--channel"),
        (PreferenceEdit(channel="json://a b"), "--channel"),
        (PreferenceEdit(quiet_days="mon-fri"), "give a window too"),
        (PreferenceEdit(kinds="due_soon"), "--kinds"),
    ],
)
def test_a_refused_edit_changes_nothing(
    services: Services, change: PreferenceEdit, message: str
) -> None:
    """A refused value raises one line naming its option, and nothing is stored."""
    edit(services, 1, PreferenceEdit(digest="08:00"))
    before = stored(services, 1)
    with pytest.raises(InvalidPreference, match=message) as refused:
        edit(services, 1, replace(change, digest="09:00"))
    assert "\n" not in str(refused.value)
    assert stored(services, 1) == before


def test_the_pause_date_is_checked_in_the_users_zone(services: Services) -> None:
    """At 12:00 UTC on Nov 28 it is already Nov 29 in Auckland: Nov 28 is past there only."""
    edit(services, 1, PreferenceEdit(pause_until="2026-11-28"))
    with pytest.raises(InvalidPreference, match=r"today is 2026-11-29"):
        edit(services, 2, PreferenceEdit(pause_until="2026-11-28"))


def test_an_unknown_user_is_refused(services: Services) -> None:
    """Preferences are only set for a user of the host's users table."""
    with pytest.raises(UnknownUser, match="user 99"):
        edit(services, 99, PreferenceEdit(digest="08:00"))
    assert row_count(services) == 0


def test_the_channel_url_is_masked_wherever_it_is_shown(services: Services) -> None:
    """The JSON document, the repr and the mask keep the scheme, nothing of the secret."""
    chosen, _ = edit(services, 1, PreferenceEdit(channel=SECRET_URL))
    shown = [str(chosen.document()), repr(chosen), mask_url(SECRET_URL)]
    for text in shown:
        for secret in ("hunter2", "someone", "t0psecret", "127.0.0.1"):
            assert secret not in text
    assert chosen.document()["channel"] == "json://***"


def test_clear_deletes_the_row(services: Services) -> None:
    """Clearing leaves the defaults; clearing again finds nothing."""
    edit(services, 1, PreferenceEdit(digest="08:00"))
    with services.session_factory.begin() as session:
        assert preference_store.clear_preferences(session, 1)
    with services.session_factory.begin() as session:
        assert not preference_store.clear_preferences(session, 1)
    assert stored(services, 1) == Preferences(1)


def test_screen_refuses_an_opted_out_kind_and_gives_the_channel(services: Services) -> None:
    """The send-time verdict: refused for a kind opted out of, else the user's channel URL."""
    edit(services, 1, PreferenceEdit(channel=SECRET_URL, unsubscribe=True, kinds="overdue"))
    with services.session_factory() as session:
        assert preference_store.screen(session, 1, "overdue").refusal == OPTED_OUT
        kept = preference_store.screen(session, 1, "due_soon")
        assert (kept.refusal, kept.channel_url) == (None, SECRET_URL)
        assert preference_store.screen(session, 2, "due_soon") == preference_store.Screen()


def test_the_preferences_table_is_the_migration(engine: Engine) -> None:
    """Alembic finds no difference between the model and the migrated table."""
    name = PreferencesRow.__tablename__
    models = MetaData()
    for table in PreferencesRow.metadata.sorted_tables:
        if table.name == name:
            table.to_metadata(models)
    with engine.connect() as connection, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        context = MigrationContext.configure(
            connection,
            opts={
                "compare_type": True,
                "include_name": lambda n, kind, _: kind != "table" or n == name,
            },
        )
        assert compare_metadata(context, models) == []


def test_the_recheck_cancels_the_reminder_of_a_user_who_unsubscribed(
    engine: Engine, clock: ManualClock
) -> None:
    """Queued before the opt-out, cancelled at send with the reason; others still go out."""
    channel = RecordingChannel()
    services = make_services(engine, clock, channel)
    add_user(services, 1)
    add_user(services, 2)
    add_task(services, 10, 1, T0 + timedelta(hours=2))
    add_task(services, 20, 2, T0 + timedelta(hours=2))
    assert services.scan().queued == 2
    edit(services, 1, PreferenceEdit(unsubscribe=True))
    assert services.relay().relay_until_idle().counts == {"delivered": 1, "cancelled": 1}
    assert [message.recipient for message in channel.sent] == ["user2@example.com"]
    with services.session_factory() as session:
        cancelled = session.execute(
            select(OutboxRow.status, OutboxRow.last_error).where(OutboxRow.subject_id == 10)
        ).one()
    assert tuple(cancelled) == (Status.CANCELLED, OPTED_OUT)


def test_the_recheck_hands_the_users_channel_url_to_the_channel(
    engine: Engine, clock: ManualClock
) -> None:
    """The message of a user with a channel URL carries it; another user's carries none."""
    channel = RecordingChannel()
    services = make_services(engine, clock, channel)
    add_user(services, 1)
    add_user(services, 2)
    add_task(services, 10, 1, T0 + timedelta(hours=2))
    add_task(services, 20, 2, T0 + timedelta(hours=2))
    edit(services, 1, PreferenceEdit(channel=SECRET_URL))
    services.scan()
    services.relay().relay_until_idle()
    urls = {message.recipient: message.channel_url for message in channel.sent}
    assert urls == {"user1@example.com": SECRET_URL, "user2@example.com": None}
    assert SECRET_URL not in repr(channel.sent)


def test_a_reminder_cancelled_by_an_opt_out_is_not_armed_again(
    engine: Engine, clock: ManualClock
) -> None:
    """The scan does not read the opt-out, so the re-check must not hand it the task back:
    re-planned, the reminder would be armed and cancelled again at every tick until it
    expired. A later reminder of the user still goes out once they opt back in."""
    channel = RecordingChannel()
    services = make_services(engine, clock, channel)
    add_user(services, 1)
    add_task(services, 10, 1, T0 + timedelta(hours=2))
    add_task(services, 11, 1, T0 + timedelta(hours=30))
    edit(services, 1, PreferenceEdit(unsubscribe=True))
    assert services.scan().queued == 1
    assert services.relay().relay_until_idle().counts == {"cancelled": 1}
    for _ in range(3):
        clock.advance(timedelta(minutes=1))
        assert services.scan().queued == 0
        assert services.relay().relay_until_idle().counts == {}
    edit(services, 1, PreferenceEdit(unsubscribe=False))
    clock.advance(timedelta(hours=6))
    assert services.scan().queued == 1
    assert services.relay().relay_until_idle().counts == {"delivered": 1}
    assert [message.key.rsplit("-", 1)[-1] for message in channel.sent] == ["11"]
