"""Reminder rules from the host's own code: on its session (its transaction) or its engine,
with exceptions from `worker.errors` and never an exit."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session

from worker import api
from worker.db import make_engine
from worker.errors import DatabaseNotReady, InvalidRule, UnknownUser, UsageError
from worker.reminders.rule_store import RuleRow
from worker.reminders.schema import Task, User
from worker.settings import Settings

H, D = timedelta(hours=1), timedelta(days=1)
TWO = api.Rule(before=(D, H))


@pytest.fixture
def host(engine: Engine) -> Engine:
    """The host's engine on a migrated database holding users 1 and 2 and a task of user 1."""
    with engine.begin() as connection:
        connection.execute(insert(User), [{"id": 1, "email": "a@x"}, {"id": 2, "email": "b@x"}])
        connection.execute(insert(Task).values(id=10, owner_id=1, title="t"))
    return engine


def test_rules_set_on_an_engine_are_committed(host: Engine) -> None:
    """On an engine, each call is a transaction of its own: another session sees the rule."""
    change = api.set_rule(host, TWO, user=1)
    assert change == api.RuleChange(changed=True, replanned=0)
    api.set_default_rule(host, api.Rule(before=(2 * H,)))
    assert api.rules(host) == {1: TWO, None: api.Rule(before=(2 * H,))}
    assert api.effective_rule(host, 1) == TWO
    assert api.effective_rule(host, 2) == api.Rule(before=(2 * H,))
    assert api.clear_rule(host, user=1).changed
    assert api.clear_default_rule(host).changed
    assert api.rules(host) == {}
    assert api.effective_rule(host, 1) == api.Rule(before=(D,))


def test_rules_set_on_a_session_follow_the_hosts_transaction(host: Engine) -> None:
    """On the host's session nothing is committed for it: a rollback leaves no rule."""
    with Session(host) as session:
        api.set_rule(session, TWO, user=1)
        assert api.rules(session) == {1: TWO}
        session.rollback()
    assert api.rules(host) == {}
    with Session(host) as session, session.begin():
        api.set_rule(session, TWO, user=2)
    assert api.rules(host) == {2: TWO}


def test_the_settings_given_are_used(host: Engine) -> None:
    """``settings`` chooses the lookahead of the built-in rule, instead of the environment."""
    settings = Settings(database_url=str(host.url), lookahead="3h")
    assert api.effective_rule(host, 1, settings=settings) == api.Rule(before=(3 * H,))


def test_a_rule_for_an_unknown_user_raises_and_stores_nothing(host: Engine) -> None:
    """UnknownUser names the id and the users table; the engine's transaction rolls back."""
    with pytest.raises(UnknownUser, match="user 3 is not in table users"):
        api.set_rule(host, TWO, user=3)
    with Session(host) as session:
        assert session.execute(select(RuleRow)).all() == []


@pytest.mark.parametrize("user", [None, "1", 1.0, True])
def test_a_user_that_is_not_an_id_is_refused(host: Engine, user: object) -> None:
    """None never means the default rule: that has functions of its own."""
    with pytest.raises(UsageError, match="expected a user id"):
        api.set_rule(host, TWO, user=user)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="expected a user id"):
        api.clear_rule(host, user=user)  # type: ignore[arg-type]


def test_what_is_not_a_rule_or_a_database_is_refused(host: Engine) -> None:
    """A rule must be a Rule, the bind a Session or an Engine: a UsageError says which."""
    with pytest.raises(UsageError, match=r"expected a worker\.api\.Rule"):
        api.set_rule(host, {"before": "1h"}, user=1)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="Session or Engine"):
        api.rules("sqlite:///x.db")  # type: ignore[arg-type]


def test_an_invalid_rule_cannot_be_built() -> None:
    """The bounds hold in the host's code as on the command line."""
    with pytest.raises(InvalidRule, match="negative"):
        api.Rule(before=(-H,))
    with pytest.raises(InvalidRule, match="at most 20"):
        api.Rule(before=tuple(timedelta(minutes=n) for n in range(1000)))


def test_an_unmigrated_database_raises_database_not_ready(tmp_path: Path) -> None:
    """Before ``reminders migrate``: DatabaseNotReady saying so, not an SQL error."""
    engine = make_engine(f"sqlite:///{tmp_path}/empty.db")
    try:
        with pytest.raises(DatabaseNotReady, match="run `reminders migrate`"):
            api.rules(engine)
    finally:
        engine.dispose()
