"""The Python API for a host application: ask the workers for a scan now; set reminder rules.

The host changes a task in its own transaction; once that has committed, a nudge puts one
message for the scan actor on the workers' broker, so the change is seen within seconds
instead of at the next scheduled tick::

    from worker.api import nudge_after_commit

    with Session(engine) as session, session.begin():
        session.add(task)
        nudge_after_commit(session)  # sent after the commit, not at all on rollback

Reminder rules (`set_rule`, `set_default_rule`, `clear_rule`, `clear_default_rule`, `rules`,
`effective_rule`) run on a SQLAlchemy ``Session`` the host gives, inside its transaction (the
host commits), or on an ``Engine``, in a transaction of their own::

    from worker.api import Rule, set_rule

    set_rule(engine, Rule(before=(timedelta(hours=24), timedelta(hours=1))), user=42)

Users' preferences (`set_preferences`, `preferences`, `clear_preferences`) run the same way,
in the forms of ``reminders prefs set``::

    set_preferences(engine, user=42, quiet="22:00-07:00", channel="ntfy://my-topic")

Importing this module configures no logging, sets no global Dramatiq broker, connects to
nothing and never exits the process: failures are exceptions from `worker.errors`. The
broker connection is built from the ``REMINDERS_*`` environment on the first nudge (or from
what `configure` was given) and is shared by every thread of the process.
"""

from __future__ import annotations

import logging
import threading

import dramatiq
from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

from worker.api_preferences import (
    PreferenceEdit,
    Preferences,
    clear_preferences,
    preferences,
    set_preferences,
)
from worker.api_rules import (
    Rule,
    RuleChange,
    clear_default_rule,
    clear_rule,
    effective_rule,
    rules,
    set_default_rule,
    set_rule,
)
from worker.broker import build_sending_broker
from worker.errors import BrokerNotConfigured, BrokerUnreachable, ReminderError
from worker.queues import QUEUE, SCAN_ACTOR
from worker.settings import Settings, hide_password, load_settings

__all__ = [
    "PreferenceEdit",
    "Preferences",
    "Rule",
    "RuleChange",
    "clear_default_rule",
    "clear_preferences",
    "clear_rule",
    "close",
    "configure",
    "effective_rule",
    "nudge",
    "nudge_after_commit",
    "preferences",
    "rules",
    "set_default_rule",
    "set_preferences",
    "set_rule",
]

#: Keys of ``Session.info``: a nudge is wanted at this transaction's commit; listeners are on.
_WANTED = "reminders.nudge_wanted"
_LISTENING = "reminders.nudge_listening"

log = logging.getLogger("worker.api")


class _Sender:
    """The broker this process nudges through, built once on first use, safe across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._settings: Settings | None = None
        self._broker: dramatiq.Broker | None = None
        self._built = False  # a broker the host handed in is the host's to close
        self._where = ""

    def configure(self, settings: Settings | None, broker: dramatiq.Broker | None) -> None:
        """Forget the broker in use (closing it if built here); use these from now on."""
        with self._lock:
            self._close()
            self._settings = settings
            if broker is not None:
                self._use(broker, "the configured broker", built=False)

    def send(self) -> None:
        """Put one scan message on the queue, building the broker first if need be."""
        broker, where = self._broker_and_where()
        message: dramatiq.Message[None] = dramatiq.Message(
            queue_name=QUEUE, actor_name=SCAN_ACTOR, args=(), kwargs={}, options={}
        )
        try:
            broker.enqueue(message)
        except Exception as error:  # whatever the client raises, the answer is the same
            raise BrokerUnreachable(
                f"nudge: {where} did not take the message ({_one_line(error)}); "
                "the next scheduled scan does its work"
            ) from error

    def close(self) -> None:
        """Close the broker if it was built here; the next send builds a new one."""
        with self._lock:
            self._close()

    def _broker_and_where(self) -> tuple[dramatiq.Broker, str]:
        with self._lock:
            if self._broker is None:
                settings = self._settings if self._settings is not None else load_settings()
                if settings.broker_url is None:
                    raise BrokerNotConfigured()
                broker = build_sending_broker(settings.broker_url)
                where = f"the broker at {hide_password(settings.broker_url)}"
                self._use(broker, where, built=True)
            assert self._broker is not None
            return self._broker, self._where

    def _use(self, broker: dramatiq.Broker, where: str, *, built: bool) -> None:
        broker.declare_queue(QUEUE)  # no round trip; the stub broker refuses unknown queues
        self._broker, self._where, self._built = broker, where, built

    def _close(self) -> None:
        if self._broker is not None and self._built:
            self._broker.close()  # RabbitMQ's connections; Redis's broker leaves its pool open
            client = getattr(self._broker, "client", None)
            if client is not None:
                client.close()
        self._broker = None


_sender = _Sender()


def nudge() -> None:
    """Ask the workers for a scan now; return as soon as the broker has the message.

    Call it after the host's transaction that created, moved or completed a task has
    committed (`nudge_after_commit` does that for a SQLAlchemy session). Each call sends one
    message to the scan actor of ``dramatiq worker.actors``; the scan itself runs there.

    The scheduled scan is the safety net: a nudge that is lost or never sent only delays a
    reminder until the next tick, so the host may log a failure and carry on.

    Raises:
        BrokerNotConfigured: ``REMINDERS_BROKER_URL`` is empty (an in-process broker cannot
            be reached from another process).
        ConfigError: a ``REMINDERS_*`` variable has a bad value (the message names it).
        BrokerUnreachable: the broker did not take the message within its timeouts
            (the workers' bounds, `worker.broker.BrokerTimeouts`).
    """
    _sender.send()


def nudge_after_commit(session: Session) -> None:
    """Nudge once the session's current transaction commits, and not at all on rollback.

    Call it anywhere inside the transaction that changed a task, as often as you like: the
    commit sends one nudge. A savepoint's commit sends none; the outermost commit does. For
    an ``AsyncSession``, pass its ``sync_session``.

    The host's commit has already happened when the nudge goes out, so a failure to send is
    not raised from ``commit()``: it is logged as one warning on the ``worker.api`` logger
    (the next scheduled scan does the work).
    """
    if not session.info.get(_LISTENING):
        event.listen(session, "after_commit", _nudge_if_wanted)
        event.listen(session, "after_transaction_end", _forget_at_the_end)
        session.info[_LISTENING] = True
    session.info[_WANTED] = True


def configure(settings: Settings | None = None, *, broker: dramatiq.Broker | None = None) -> None:
    """Nudge with these settings, or through this broker, from now on.

    ``settings=None`` reads the ``REMINDERS_*`` environment again at the next nudge. A
    host's tests may pass a ``StubBroker`` and look at its ``reminders`` queue. The broker
    built before, if any, is closed. Nothing connects here.
    """
    _sender.configure(settings, broker)


def close() -> None:
    """Close the broker connection, at the host's shutdown; the next nudge opens a new one."""
    _sender.close()


def _nudge_if_wanted(session: Session) -> None:
    # A savepoint's commit also fires after_commit, inside the transaction that is still open.
    if session.in_nested_transaction() or not session.info.pop(_WANTED, False):
        return
    try:
        nudge()
    except ReminderError as error:
        log.warning("reminders: nudge after commit not sent: %s", error)


def _forget_at_the_end(session: Session, transaction: SessionTransaction) -> None:
    # A rolled-back (or closed) transaction must not leave its wish to the next commit.
    if transaction.parent is None:
        session.info.pop(_WANTED, None)


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
