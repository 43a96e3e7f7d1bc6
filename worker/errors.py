"""Errors of the reminder service; each docstring is the default message."""

from __future__ import annotations


class ReminderError(Exception):
    """The reminder service failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__ or self.__class__.__name__)


class ConfigError(ReminderError):
    """The configuration is invalid."""


class DatabaseNotReady(ReminderError):
    """The database is unreachable or not migrated; run `reminders migrate`."""


class UsageError(ReminderError):
    """The command was used wrongly."""


class InvalidRule(UsageError):
    """The reminder rule is invalid."""


class InvalidPreference(UsageError):
    """A user's preference (quiet hours, digest time, pause, channel) is invalid."""


class UnknownUser(UsageError):
    """No user has this id in the host's users table."""


class BrokerNotConfigured(ConfigError):
    """nudge() needs REMINDERS_BROKER_URL: with no broker, scans run only in `reminders run`."""


class BrokerUnreachable(ReminderError):
    """The broker did not take the nudge; the next scheduled scan does its work."""


class LinkRefused(ReminderError):
    """The link is not valid."""


class ForgedLink(LinkRefused):
    """The link's signature does not match: it was not made by this service, or was altered."""


class ExpiredLink(LinkRefused):
    """The link has expired."""
