"""The example task app (examples/taskapp) on SQLite, nudging through a StubBroker: one nudge
per commit that creates, moves or completes a task, none for anything else or on rollback."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from dramatiq.brokers.stub import StubBroker
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, event, inspect, text

from examples.taskapp.app import create_app
from worker import api
from worker.queues import QUEUE, SCAN_ACTOR

pytestmark = pytest.mark.usefixtures("fresh_api")

ROOT = Path(__file__).resolve().parents[2]
ALEMBIC_INI = ROOT / "examples" / "taskapp" / "alembic.ini"


class RefusingBroker(StubBroker):
    """A broker whose every send fails, as a Redis that went away."""

    def enqueue(self, message: Any, *, delay: int | None = None) -> Any:
        """Refuse the message."""
        raise ConnectionError("Error 111 connecting to redis:6379. Connection refused.")


def migrate_the_app(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the app's own Alembic history to its head, as `alembic upgrade head` would."""
    monkeypatch.setenv("TASKAPP_DATABASE_URL", url)
    config = Config(str(ALEMBIC_INI))
    config.attributes["configure_logger"] = False  # leave pytest's logging alone
    command.upgrade(config, "head")


@pytest.fixture
def app_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    """The app's database on SQLite, migrated by its own history, foreign keys enforced."""
    url = f"sqlite:///{tmp_path}/taskapp.db"
    migrate_the_app(url, monkeypatch)
    engine = create_engine(url)

    @event.listens_for(engine, "connect")
    def _foreign_keys(connection: Any, record: Any) -> None:
        connection.execute("PRAGMA foreign_keys = ON")

    yield engine
    engine.dispose()


@pytest.fixture
def broker() -> StubBroker:
    """The StubBroker the app's nudges go to."""
    stub = StubBroker()
    api.configure(broker=stub)
    return stub


@pytest.fixture
def client(app_engine: Engine, broker: StubBroker) -> Iterator[TestClient]:
    """The app over HTTP, in process."""
    with TestClient(create_app(app_engine)) as http:
        yield http


def nudges(broker: StubBroker) -> int:
    """How many scan messages the app sent since the last call (taken off the queue)."""
    queue = broker.queues[QUEUE]
    taken = [dramatiq.Message.decode(queue.get_nowait()) for _ in range(queue.qsize())]
    assert all(message.actor_name == SCAN_ACTOR for message in taken)
    return len(taken)


def new_account(client: TestClient, **fields: Any) -> int:
    """Create an account over HTTP; its id."""
    answer = client.post("/accounts", json={"email_address": "ada@example.com", **fields})
    assert answer.status_code == 201, answer.text
    return int(answer.json()["id"])


def new_task(client: TestClient, assignee: int, due: str | None) -> dict[str, Any]:
    """Create a task over HTTP; the app's view of it."""
    answer = client.post(
        "/tasks", json={"title": "File taxes", "assignee_id": assignee, "due": due}
    )
    assert answer.status_code == 201, answer.text
    view: dict[str, Any] = answer.json()
    return view


def test_the_apps_history_is_its_own(app_engine: Engine) -> None:
    """The app's migrations create its tables and record their head in ``alembic_version``."""
    head = ScriptDirectory.from_config(Config(str(ALEMBIC_INI))).get_current_head()
    with app_engine.connect() as connection:
        version = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    assert version == head
    assert set(inspect(app_engine).get_table_names()) == {
        "alembic_version",
        "accounts",
        "todo_items",
    }


def test_creating_a_task_nudges_once_and_stores_its_deadline_in_utc(
    client: TestClient, broker: StubBroker, app_engine: Engine
) -> None:
    """A created task is one nudge; its deadline, given with an offset, is stored as UTC
    without a zone and shown back in UTC. Creating an account nudges nobody."""
    account = new_account(client, tz="Europe/Paris", lang="fr")
    assert nudges(broker) == 0

    task = new_task(client, account, "2026-12-01T18:30:00+01:00")
    assert nudges(broker) == 1
    assert task["due"] == "2026-12-01T17:30:00Z"
    with app_engine.connect() as connection:
        stored = connection.execute(
            text("SELECT deadline, status FROM todo_items WHERE id = :id"), {"id": task["id"]}
        ).one()
    assert (str(stored[0]), stored[1]) == ("2026-12-01 17:30:00.000000", "open")
    assert client.get(f"/tasks/{task['id']}").json() == task


def test_moving_or_completing_a_task_nudges_once_and_a_patch_that_changes_nothing_does_not(
    client: TestClient, broker: StubBroker
) -> None:
    """Each PATCH that moves the deadline or changes the status is one nudge; repeating it,
    or giving the same instant in another offset, changes nothing and sends nothing."""
    task = new_task(client, new_account(client), "2026-12-01T17:30:00Z")
    nudges(broker)
    path = f"/tasks/{task['id']}"

    patches: list[tuple[dict[str, Any], int]] = [
        ({"due": "2026-12-02T17:30:00Z"}, 1),
        ({"due": "2026-12-02T18:30:00+01:00"}, 0),
        ({"status": "done"}, 1),
        ({"status": "done"}, 0),
        ({}, 0),
        ({"status": "open", "due": None}, 1),
    ]
    for body, expected in patches:
        answer = client.patch(path, json=body)
        assert answer.status_code == 200, answer.text
        assert nudges(broker) == expected, body
    assert client.get(path).json() | {"id": 0} == {
        "id": 0,
        "title": "File taxes",
        "assignee_id": task["assignee_id"],
        "due": None,
        "status": "open",
    }


def test_a_request_that_rolls_back_nudges_nobody(
    client: TestClient, broker: StubBroker, app_engine: Engine
) -> None:
    """A task for an unknown account fails at its flush after the nudge was asked for: the
    transaction rolls back, the answer is 422, and no nudge goes out then or at the next
    commit."""
    answer = client.post(
        "/tasks", json={"title": "orphan", "assignee_id": 999, "due": "2026-12-01T17:30:00Z"}
    )
    assert answer.status_code == 422, answer.text
    assert nudges(broker) == 0
    with app_engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM todo_items")).scalar() == 0

    new_account(client)
    assert nudges(broker) == 0


def test_an_unknown_task_or_status_is_refused_and_nudges_nobody(
    client: TestClient, broker: StubBroker
) -> None:
    """A PATCH of a missing task is 404, a status the app does not know 422; neither nudges."""
    task = new_task(client, new_account(client), None)
    nudges(broker)
    assert client.patch("/tasks/999", json={"status": "done"}).status_code == 404
    assert client.patch(f"/tasks/{task['id']}", json={"status": "later"}).status_code == 422
    assert client.get("/tasks/999").status_code == 404
    assert nudges(broker) == 0


def test_a_nudge_that_cannot_be_sent_does_not_fail_the_request(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    """With the broker gone the task is still created (201) and the failure is one warning:
    the next scheduled scan does the work."""
    api.configure(broker=RefusingBroker())
    with caplog.at_level(logging.WARNING, logger="worker.api"):
        task = new_task(client, new_account(client), "2026-12-01T17:30:00Z")
    assert client.get(f"/tasks/{task['id']}").status_code == 200
    warnings = [r for r in caplog.records if r.name == "worker.api"]
    assert len(warnings) == 1
    assert "nudge after commit not sent" in warnings[0].getMessage()
