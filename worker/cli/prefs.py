"""``reminders prefs set``, ``show`` and ``clear``: one user's reminder preferences.

Opt-outs, quiet hours, a digest time, a pause and the user's own channel URL (for
``REMINDERS_CHANNEL=apprise``), times local to the user's zone. The channel URL is a secret:
every output shows only its scheme. Bad input is refused with one line on stderr and
exit 2, and changes nothing.
"""

from __future__ import annotations

from datetime import date, time
from typing import Annotated
from zoneinfo import ZoneInfo

import typer

from worker.cli import common
from worker.cli.common import JsonOption
from worker.errors import UsageError
from worker.reminders import preference_store
from worker.reminders.local_time import first_instant, next_skip, reading
from worker.reminders.preferences import ALL_KINDS, PreferenceEdit, Preferences
from worker.reminders.send_time import zone_of

prefs_app = typer.Typer(
    help="A user's preferences: opt-out, quiet hours, digest, pause, channel. "
    "Reads REMINDERS_DATABASE_URL.",
    no_args_is_help=True,
)
UserOption = Annotated[
    str, typer.Option("--user", metavar="ID", help="The user (the users table's id).")
]


def register(app: typer.Typer) -> None:
    """Add the ``prefs`` group to the ``reminders`` app."""
    app.add_typer(prefs_app, name="prefs")


@prefs_app.command("set")
def set_prefs(
    *,
    user: UserOption,
    quiet: Annotated[
        str | None,
        typer.Option(metavar="HH:MM-HH:MM", help="Quiet hours, local (22:00-07:00); off for none."),
    ] = None,
    quiet_days: Annotated[
        str | None,
        typer.Option(metavar="DAYS", help="The weekdays quiet hours hold on (mon-fri); off: all."),
    ] = None,
    digest: Annotated[
        str | None,
        typer.Option(metavar="HH:MM", help="One digest a day at this local time; off for none."),
    ] = None,
    digest_workdays: Annotated[
        bool | None,
        typer.Option(
            "--digest-workdays/--digest-every-day", help="Digests on workdays only, or every day."
        ),
    ] = None,
    pause_until: Annotated[
        str | None,
        typer.Option(
            metavar="DATE", help="Nothing is sent before this local date (YYYY-MM-DD); off."
        ),
    ] = None,
    channel: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="The user's Apprise URL for REMINDERS_CHANNEL=apprise (a secret); off.",
        ),
    ] = None,
    unsubscribe: Annotated[
        bool | None,
        typer.Option("--unsubscribe/--resubscribe", help="Opt out of reminders, or back in."),
    ] = None,
    kinds: Annotated[
        str | None,
        typer.Option(
            metavar="LIST", help="The kinds --unsubscribe/--resubscribe apply to (all by default)."
        ),
    ] = None,
) -> None:
    """Set a user's preferences; an option left out keeps its value.

    Reads REMINDERS_DATABASE_URL.

    Exit 0 when set (also when unchanged), 1 when the database fails, 2 for bad input: then
    nothing changes.
    """
    user_id = common.user_id(user)
    edit = PreferenceEdit(
        quiet=quiet,
        quiet_days=quiet_days,
        digest=digest,
        digest_workdays=digest_workdays,
        pause_until=pause_until,
        channel=channel,
        unsubscribe=unsubscribe,
        kinds=kinds,
    )
    if edit == PreferenceEdit():
        raise UsageError("prefs set: give at least one preference to set (see --help)")
    services = common.ready_services()
    now = services.clock.now()
    with services.session_factory.begin() as session:
        chosen, changed = preference_store.edit_preferences(
            session, services.host, user_id, edit, now=now
        )
        found = preference_store.recipient(session, services.host, user_id)
    suffix = "" if changed else " (unchanged)"
    common.out.print(common.plain(f"preferences of user {user_id}{suffix}: {describe(chosen)}"))
    if edit.digest is not None and chosen.digest_at is not None:
        zone = zone_of(None if found is None else found.timezone)
        today = now.astimezone(zone).date()
        note = digest_skip_note(chosen.digest_at, chosen.digest_workdays, zone, today)
        if note is not None:
            common.out.print(common.plain(note))


@prefs_app.command("show")
def show_prefs(user: UserOption, as_json: JsonOption = False) -> None:
    """A user's preferences (the defaults when none are set), the channel URL masked.

    Reads REMINDERS_DATABASE_URL.

    Exit 0 when done, 1 when the database fails, 2 for bad usage.
    """
    user_id = common.user_id(user)
    services = common.ready_services()
    with services.session_factory() as session:
        found = preference_store.preferences(session, user_id)
    if as_json:
        common.print_json(found.document())
        return
    common.out.print(common.plain(f"preferences of user {user_id}: {describe(found)}"))


@prefs_app.command("clear")
def clear_prefs(user: UserOption) -> None:
    """Delete a user's preferences: every reminder, at its moment, on the configured channel.

    Reads REMINDERS_DATABASE_URL.

    Exit 0 when cleared (also when there were none), 1 when the database fails, 2 for bad
    usage.
    """
    user_id = common.user_id(user)
    services = common.ready_services()
    with services.session_factory.begin() as session:
        cleared = preference_store.clear_preferences(session, user_id)
    what = "cleared, the defaults apply" if cleared else "none set, nothing cleared"
    common.out.print(common.plain(f"preferences of user {user_id}: {what}"))


def describe(chosen: Preferences) -> str:
    """The preferences on one line, the channel URL masked."""
    if ALL_KINDS in chosen.opted_out:
        reminders = "unsubscribed"
    elif chosen.opted_out:
        reminders = "unsubscribed from " + ",".join(sorted(chosen.opted_out))
    else:
        reminders = "subscribed"
    parts = [reminders]
    parts.append("quiet " + ("none" if chosen.quiet is None else chosen.quiet.describe()))
    digest = "none" if chosen.digest_at is None else f"{chosen.digest_at:%H:%M}"
    if chosen.digest_at is not None and chosen.digest_workdays:
        digest += " on workdays"
    parts.append(f"digest {digest}")
    pause = "none" if chosen.pause_until is None else f"until {chosen.pause_until.isoformat()}"
    parts.append(f"pause {pause}")
    parts.append(f"channel {chosen.masked_channel or 'none'}")
    return "; ".join(parts)


def digest_skip_note(at: time, workdays: bool, zone: ZoneInfo, today: date) -> str | None:
    """The line that says on which digest day within a year from ``today`` the clock in
    ``zone`` skips ``at``, and when that day's digest goes out (None: on no such day)."""
    day = next_skip(at, zone, today, on=(lambda d: d.weekday() < 5) if workdays else None)
    if day is None:
        return None
    instead = reading(first_instant(day, at, zone), zone)
    return (
        f"note: {at:%H:%M} does not exist in {zone.key} on {day:%Y-%m-%d} (DST): "
        f"that day's digest goes out at {instead:%H:%M}"
    )
