"""The host application's API: nudges that reach the scan actor, sent only after a commit,
with clear exceptions and no side effects at import."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import threading
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from worker import api
from worker.broker import BrokerTimeouts, build_sending_broker
from worker.errors import BrokerNotConfigured, BrokerUnreachable, ConfigError
from worker.queues import QUEUE, SCAN_ACTOR
from worker.reminders.schema import User
from worker.settings import load_settings

pytestmark = pytest.mark.usefixtures("fresh_api")

# Imports worker.api as a host would, nudges a broker nobody listens on, and reports what
# the import and the nudge changed in the process.
IMPORT_AND_NUDGE = """
import json, logging, sys
import dramatiq.broker, structlog
root = logging.getLogger()
level = root.level
import worker.api
from worker.errors import BrokerUnreachable
try:
    worker.api.nudge()
    outcome = "sent"
except BrokerUnreachable as error:
    outcome = str(error)
print(json.dumps({
    "root_handlers": len(root.handlers),
    "root_level_changed": root.level != level,
    "global_broker": dramatiq.broker.global_broker is not None,
    "structlog_configured": structlog.is_configured(),
    "imported": sorted(m for m in sys.modules if m.startswith(("worker.actors", "worker.cli"))),
    "outcome": outcome,
}))
"""


class RefusingBroker(StubBroker):
    """A broker whose every send fails, as a Redis that went away."""

    def enqueue(self, message: Any, *, delay: int | None = None) -> Any:
        """Refuse the message."""
        raise ConnectionError("Error 111 connecting to redis:6379. Connection refused.")


def closed_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stub_broker() -> StubBroker:
    """A StubBroker the API nudges through from now on."""
    broker = StubBroker()
    api.configure(broker=broker)
    return broker


def sent(broker: StubBroker) -> list[dramatiq.Message[Any]]:
    """The messages on the stub's ``reminders`` queue, taken off it."""
    queue = broker.queues[QUEUE]
    return [dramatiq.Message.decode(queue.get_nowait()) for _ in range(queue.qsize())]


def add_user(session: Session, user_id: int) -> None:
    """A change the host makes in its own transaction."""
    session.add(User(id=user_id, email=f"user{user_id}@example.com"))


def users(engine: Engine) -> int:
    """How many users are committed."""
    with Session(engine) as session:
        return int(session.scalar(select(func.count()).select_from(User)) or 0)


def test_importing_the_api_configures_nothing_and_never_exits() -> None:
    """In a fresh interpreter the import adds no log handler, sets no global broker, imports
    no actor, and a nudge to a dead broker raises an error instead of exiting."""
    port = closed_port()
    env = {"PATH": "/usr/bin:/bin", "REMINDERS_BROKER_URL": f"redis://:s3cret@127.0.0.1:{port}/0"}
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_AND_NUDGE],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["root_handlers"] == 0 and not report["root_level_changed"]
    assert report["global_broker"] is False
    assert report["structlog_configured"] is False
    assert report["imported"] == []
    assert f"127.0.0.1:{port}" in report["outcome"] and "s3cret" not in report["outcome"]
    assert "next scheduled scan" in report["outcome"]
    assert done.stderr == ""


def test_a_nudge_puts_one_scan_message_on_the_reminders_queue() -> None:
    """Each nudge is one message, no arguments, for the scan actor on the workers' queue."""
    broker = stub_broker()
    api.nudge()
    (message,) = sent(broker)
    assert (message.queue_name, message.actor_name) == (QUEUE, SCAN_ACTOR)
    assert (message.args, message.kwargs) == ((), {})
    api.nudge()
    api.nudge()
    assert len(sent(broker)) == 2


def test_without_a_broker_a_nudge_says_it_needs_one() -> None:
    """With REMINDERS_BROKER_URL empty, nudge raises BrokerNotConfigured naming the variable."""
    with pytest.raises(BrokerNotConfigured) as caught:
        api.nudge()
    assert isinstance(caught.value, ConfigError)
    assert str(caught.value) == (
        "nudge() needs REMINDERS_BROKER_URL: with no broker, scans run only in `reminders run`."
    )


def test_a_bad_variable_raises_a_config_error_not_system_exit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bad REMINDERS_* value is a ConfigError naming it; the process carries on."""
    monkeypatch.setenv("REMINDERS_BROKER_URL", f"redis://127.0.0.1:{closed_port()}/0")
    monkeypatch.setenv("REMINDERS_LOOKAHEAD", "soon")
    with pytest.raises(ConfigError, match=r"^REMINDERS_LOOKAHEAD: "):
        api.nudge()
    monkeypatch.setenv("REMINDERS_BROKER_URL", "kafka://broker:9092")
    monkeypatch.delenv("REMINDERS_LOOKAHEAD")
    with pytest.raises(ConfigError, match=r"^REMINDERS_BROKER_URL: "):
        api.nudge()


def test_a_broker_that_refuses_gives_a_clear_error() -> None:
    """A send that fails raises BrokerUnreachable with the cause and what happens instead."""
    api.configure(broker=RefusingBroker())
    with pytest.raises(BrokerUnreachable) as caught:
        api.nudge()
    assert str(caught.value) == (
        "nudge: the configured broker did not take the message (ConnectionError: Error 111 "
        "connecting to redis:6379. Connection refused.); the next scheduled scan does its work"
    )


def test_configured_settings_are_used_instead_of_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`configure(settings)` points nudges at its broker whatever the environment says."""
    monkeypatch.setenv("REMINDERS_BROKER_URL", "")
    port = closed_port()
    api.configure(load_settings(broker_url=f"redis://127.0.0.1:{port}/0"))
    with pytest.raises(BrokerUnreachable, match=f"redis://127.0.0.1:{port}/0"):
        api.nudge()


def test_nudges_from_many_threads_each_arrive_once() -> None:
    """Threads nudging at once through one broker lose no message and raise nothing."""
    broker = stub_broker()
    errors: list[BaseException] = []

    def nudge_often() -> None:
        try:
            for _ in range(25):
                api.nudge()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=nudge_often) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(sent(broker)) == 200


def test_the_sending_broker_has_bounded_timeouts_and_nothing_else() -> None:
    """The broker a nudge uses has no middleware, the workers' bounds, one retry, and connects
    to nothing until a message is sent."""
    bounds = BrokerTimeouts(connect=2.5, socket=2.5, blocked=2.5)
    redis_broker = build_sending_broker(f"redis://127.0.0.1:{closed_port()}/0", bounds)
    assert isinstance(redis_broker, RedisBroker)
    assert redis_broker.middleware == []
    options = redis_broker.client.connection_pool.connection_kwargs
    assert (options["socket_timeout"], options["socket_connect_timeout"]) == (2.5, 2.5)
    retry = redis_broker.client.get_retry()
    assert retry is not None and retry.get_retries() == 1
    url = f"amqp://guest:guest@127.0.0.1:{closed_port()}/%2F"
    amqp_broker = build_sending_broker(url, bounds)
    assert isinstance(amqp_broker, RabbitmqBroker)
    assert amqp_broker.middleware == [] and amqp_broker.confirm_delivery is True
    parameters = amqp_broker.parameters
    assert not isinstance(parameters, list)  # one host named
    assert (parameters.socket_timeout, parameters.stack_timeout) == (2.5, 7.5)
    assert parameters.blocked_connection_timeout == 2.5


# --- after the host's commit ---------------------------------------------------------------


def test_a_commit_sends_one_nudge_however_often_it_was_asked(sqlite_engine: Engine) -> None:
    """Asked twice in a transaction, nudge_after_commit sends nothing before the commit and
    one nudge after it; the next transaction that asks sends one more."""
    broker = stub_broker()
    with Session(sqlite_engine) as session:
        with session.begin():
            add_user(session, 1)
            api.nudge_after_commit(session)
            api.nudge_after_commit(session)
            session.flush()
            assert sent(broker) == []
        assert len(sent(broker)) == 1
        with session.begin():
            add_user(session, 2)
            api.nudge_after_commit(session)
        with session.begin():
            add_user(session, 3)  # this one did not ask
    assert len(sent(broker)) == 1
    assert users(sqlite_engine) == 3


def test_a_rollback_sends_nothing_and_leaves_nothing_for_the_next_commit(
    sqlite_engine: Engine,
) -> None:
    """A rolled-back, failed or abandoned transaction sends no nudge, then or at the session's
    next commit."""
    broker = stub_broker()
    with Session(sqlite_engine) as session:
        add_user(session, 1)
        api.nudge_after_commit(session)
        session.rollback()
        with session.begin():
            add_user(session, 2)  # this one did not ask
    assert sent(broker) == []
    with pytest.raises(RuntimeError), Session(sqlite_engine) as session, session.begin():
        add_user(session, 3)
        api.nudge_after_commit(session)
        raise RuntimeError("the host's handler failed")
    assert sent(broker) == []
    session = Session(sqlite_engine)
    add_user(session, 4)
    api.nudge_after_commit(session)
    session.close()  # abandoned: closing rolls back
    with session.begin():
        add_user(session, 5)
    session.close()
    assert sent(broker) == []
    assert users(sqlite_engine) == 2


def test_a_savepoint_waits_for_the_outer_commit(sqlite_engine: Engine) -> None:
    """Asked inside a savepoint, the nudge goes out when the outermost transaction commits."""
    broker = stub_broker()
    with Session(sqlite_engine) as session:
        with session.begin():
            with session.begin_nested():
                add_user(session, 1)
                api.nudge_after_commit(session)
            assert sent(broker) == []
        assert len(sent(broker)) == 1


def test_a_nudge_that_fails_after_the_commit_is_logged_not_raised(
    sqlite_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """The host's commit stands and returns normally; the failure is one warning line."""
    api.configure(broker=RefusingBroker())
    with (
        caplog.at_level(logging.WARNING, logger="worker.api"),
        Session(sqlite_engine) as session,
        session.begin(),
    ):
        add_user(session, 1)
        api.nudge_after_commit(session)
    assert users(sqlite_engine) == 1
    (record,) = caplog.records
    assert (record.name, record.levelno) == ("worker.api", logging.WARNING)
    assert record.getMessage().startswith(
        "reminders: nudge after commit not sent: nudge: the configured broker did not take"
    )
