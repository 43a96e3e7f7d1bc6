"""Users' preferences from the host application's own code: the functions `worker.api` exports.

They take the command line's forms (``quiet="22:00-07:00"``, ``pause_until="2026-12-24"``,
``"off"`` to clear) and run as the rules' functions do (`worker.api_rules`): on the host's
``Session`` inside its transaction, or on an ``Engine`` in one of their own, after checking
that the database is migrated and fits the mapping. A refused value raises
`InvalidPreference` and changes nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from worker.api_rules import _user_id, _with_host
from worker.reminders import preference_store
from worker.reminders.preferences import PreferenceEdit, Preferences
from worker.settings import Settings

__all__ = [
    "PreferenceEdit",
    "Preferences",
    "clear_preferences",
    "preferences",
    "set_preferences",
]


def set_preferences(
    bind: Session | Engine,
    *,
    user: int,
    quiet: str | None = None,
    quiet_days: str | None = None,
    digest: str | None = None,
    digest_workdays: bool | None = None,
    pause_until: str | None = None,
    channel: str | None = None,
    unsubscribe: bool | None = None,
    kinds: str | None = None,
    settings: Settings | None = None,
) -> Preferences:
    """Change the user's preferences as ``reminders prefs set`` does; return them.

    A value left None is kept; ``"off"`` clears it. ``unsubscribe=True`` opts the user out
    of ``kinds`` (every kind when None), ``False`` back in.

    Raises:
        UnknownUser: no user has this id.
        InvalidPreference: a value is refused (a window of zero length, a past pause date,
            a URL Apprise does not know).
        UsageError: ``user`` is not an integer.
        DatabaseNotReady, MappingMismatch: as `worker.api.set_rule`.
    """
    user_id = _user_id(user)
    edit = PreferenceEdit(
        quiet, quiet_days, digest, digest_workdays, pause_until, channel, unsubscribe, kinds
    )
    now = datetime.now(UTC)
    return _with_host(
        bind,
        settings,
        lambda s, host: preference_store.edit_preferences(s, host, user_id, edit, now=now)[0],
    )


def preferences(
    bind: Session | Engine, *, user: int, settings: Settings | None = None
) -> Preferences:
    """The user's preferences (the defaults when none are stored). Its ``channel_url`` is
    the secret URL itself: show ``masked_channel`` instead."""
    user_id = _user_id(user)
    return _with_host(bind, settings, lambda s, _: preference_store.preferences(s, user_id))


def clear_preferences(
    bind: Session | Engine, *, user: int, settings: Settings | None = None
) -> bool:
    """Delete the user's preferences; return whether there were any."""
    user_id = _user_id(user)
    return _with_host(bind, settings, lambda s, _: preference_store.clear_preferences(s, user_id))
