"""The task app's HTTP API: accounts and tasks, each task change nudging the reminder workers.

Run it with ``uvicorn --factory examples.taskapp.app:create_app`` from the repository's root
(``README.md`` beside this file). Each request is one transaction of the app's own; when it
creates a task, moves its deadline or changes its status, `worker.api.nudge_after_commit`
has the workers scan right after the commit, so a reminder due now goes out within seconds
instead of at the next scheduled scan. A request that fails rolls back and nudges nobody.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, HTTPException, Request, status
from pydantic import AwareDatetime, BaseModel, Field
from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from examples.taskapp.models import Account, TodoItem
from examples.taskapp.settings import database_url
from worker import api as reminders

Status = Literal["open", "done"]
#: What FastAPI answers to a body it cannot validate, for the checks only the database can make.
UNPROCESSABLE = 422


class NewAccount(BaseModel):
    """An account to create."""

    email_address: str = Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    tz: str | None = Field(default=None, max_length=64, examples=["Europe/Paris"])
    wants_reminders: bool = True
    lang: str | None = Field(default=None, max_length=35, examples=["fr"])


class AccountView(NewAccount):
    """An account as the API shows it."""

    id: int


class NewTask(BaseModel):
    """A task to create; ``due`` is ISO 8601 with its offset (``2026-12-01T18:00:00+01:00``)."""

    title: str = Field(min_length=1, max_length=500)
    assignee_id: int
    due: AwareDatetime | None = None


class TaskChange(BaseModel):
    """What a PATCH may change: the deadline (``null`` removes it) and the status."""

    due: AwareDatetime | None = None
    status: Status | None = None


class TaskView(BaseModel):
    """A task as the API shows it; ``due`` in UTC."""

    id: int
    title: str
    assignee_id: int | None
    due: datetime | None
    status: str


def to_column(due: datetime | None) -> datetime | None:
    """The value of ``todo_items.deadline``: UTC without a zone."""
    return None if due is None else due.astimezone(UTC).replace(tzinfo=None)


def task_view(todo: TodoItem) -> TaskView:
    """The API's view of a row of ``todo_items``."""
    due = None if todo.deadline is None else todo.deadline.replace(tzinfo=UTC)
    return TaskView(
        id=todo.id, title=todo.name, assignee_id=todo.assignee_id, due=due, status=todo.status
    )


def create_app(engine: Engine | None = None) -> FastAPI:
    """The app on ``engine`` (by default one on ``TASKAPP_DATABASE_URL``).

    The reminder workers' broker is read from ``REMINDERS_BROKER_URL`` at the first nudge
    (or given to `worker.api.configure` beforehand, as the tests do).
    """
    owned = engine is None
    bound = create_engine(database_url(), pool_pre_ping=True) if engine is None else engine
    sessions = sessionmaker(bound, expire_on_commit=False)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        reminders.close()
        if owned:
            bound.dispose()

    app = FastAPI(title="taskapp", lifespan=lifespan)
    app.state.sessions = sessions
    _routes(app)
    return app


def _session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


DbSession = Annotated[Session, Depends(_session)]


def _routes(app: FastAPI) -> None:
    @app.post("/accounts", status_code=status.HTTP_201_CREATED)
    def create_account(body: NewAccount, session: DbSession) -> AccountView:
        """Create an account."""
        with session.begin():
            account = Account(**body.model_dump())
            session.add(account)
            session.flush()
        return AccountView(id=account.id, **body.model_dump())

    @app.post("/tasks", status_code=status.HTTP_201_CREATED)
    def create_task(body: NewTask, session: DbSession) -> TaskView:
        """Create a task and nudge the reminder workers once it has committed."""
        try:
            with session.begin():
                todo = TodoItem(
                    name=body.title, assignee_id=body.assignee_id, deadline=to_column(body.due)
                )
                session.add(todo)
                reminders.nudge_after_commit(session)
                session.flush()  # the new id; an unknown assignee fails here, and rolls back
        except IntegrityError:
            raise HTTPException(UNPROCESSABLE, "assignee_id: no such account") from None
        return task_view(todo)

    @app.patch("/tasks/{task_id}")
    def change_task(task_id: int, body: TaskChange, session: DbSession) -> TaskView:
        """Move a task's deadline or change its status; nudge when either changed."""
        with session.begin():
            todo = session.get(TodoItem, task_id, with_for_update=True)
            if todo is None:
                raise HTTPException(status.HTTP_404_NOT_FOUND, "no such task")
            changed = False
            if "due" in body.model_fields_set and to_column(body.due) != todo.deadline:
                todo.deadline = to_column(body.due)
                changed = True
            if body.status is not None and body.status != todo.status:
                todo.status = body.status
                changed = True
            if changed:
                reminders.nudge_after_commit(session)
        return task_view(todo)

    @app.get("/tasks/{task_id}")
    def show_task(task_id: int, session: DbSession) -> TaskView:
        """One task."""
        todo = session.get(TodoItem, task_id)
        if todo is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such task")
        return task_view(todo)
