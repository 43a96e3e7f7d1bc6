"""Reminder rules in the worker's tables, on SQLite and PostgreSQL: stored, read back, the
one in force chosen in SQL, and a change clearing the marker of the tasks it re-plans."""

from __future__ import annotations

import warnings
from datetime import time, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, MetaData, exc, insert, select, update

from tests.support.channels import RecordingChannel
from tests.support.clock import ManualClock
from tests.support.db import add_task, add_user, make_services
from worker.bootstrap import Services
from worker.errors import UnknownUser
from worker.reminders import rule_store
from worker.reminders.rule_store import BUILTIN_RULE_ID, RuleRow, rule_sql
from worker.reminders.rules import DEFAULT_RULE, Rule, builtin_rule
from worker.reminders.schema import Task, User

H, D = timedelta(hours=1), timedelta(days=1)
THREE = Rule(before=(D, H, timedelta(0)), overdue_every=D, overdue_count=3)
TWO_HOURS = Rule(before=(2 * H,), all_day_at=time(8, 30))


@pytest.fixture
def services(engine: Engine, clock: ManualClock) -> Services:
    """Services on this test's database, users 1 to 3 in it."""
    built = make_services(engine, clock, RecordingChannel())
    for user_id in (1, 2, 3):
        add_user(built, user_id)
    return built


def set_rule(services: Services, user_id: int | None, rule: Rule) -> rule_store.RuleChange:
    """Set a rule in a transaction of its own, as of the test's clock."""
    with services.session_factory.begin() as session:
        return rule_store.set_rule(session, services.host, user_id, rule, now=services.clock.now())


def clear_rule(services: Services, user_id: int | None) -> rule_store.RuleChange:
    """Clear a rule in a transaction of its own."""
    with services.session_factory.begin() as session:
        return rule_store.clear_rule(session, services.host, user_id)


def stored(services: Services) -> dict[int | None, Rule]:
    """Every stored rule."""
    with services.session_factory() as session:
        return rule_store.rules(session)


def in_force(services: Services, user_id: int | None) -> Rule:
    """The rule in force for ``user_id``."""
    with services.session_factory() as session:
        return rule_store.effective_rule(session, user_id, services.settings)


def test_rules_are_stored_and_read_back(services: Services) -> None:
    """A default rule and a user's rule read back as set, with the time they were set."""
    assert stored(services) == {}
    assert set_rule(services, None, TWO_HOURS).changed
    assert set_rule(services, 2, THREE).changed
    assert stored(services) == {None: TWO_HOURS, 2: THREE}
    with services.session_factory() as session:
        rows = rule_store.stored_rules(session)
    assert [(row.user_id, row.updated_at) for row in rows] == [
        (None, services.clock.now()),
        (2, services.clock.now()),
    ]


def test_setting_a_rule_again_replaces_all_of_it(services: Services, clock: ManualClock) -> None:
    """A second set for the same user replaces lead times, nudges and hour; one row stays."""
    set_rule(services, 1, THREE)
    clock.advance(H)
    assert set_rule(services, 1, TWO_HOURS).changed
    with services.session_factory() as session:
        rows = rule_store.stored_rules(session)
        leads = session.execute(select(rule_store.RuleLeadRow.lead_seconds)).scalars().all()
    assert [(row.user_id, row.rule, row.updated_at) for row in rows] == [
        (1, TWO_HOURS, clock.now())
    ]
    assert leads == [7200]


def test_setting_the_rule_already_stored_changes_nothing(
    services: Services, clock: ManualClock
) -> None:
    """Nothing changed: not the row's time, not a task's marker."""
    set_rule(services, 1, THREE)
    at = clock.now()
    clock.advance(H)
    assert set_rule(
        services, 1, Rule(before=(H, timedelta(0), D), overdue_every=D, overdue_count=3)
    ) == (rule_store.RuleChange(changed=False))
    with services.session_factory() as session:
        assert [row.updated_at for row in rule_store.stored_rules(session)] == [at]


def test_the_rule_in_force_is_the_users_then_the_default_then_the_lookahead(
    services: Services,
) -> None:
    """A user without a rule follows the default; with none stored, REMINDERS_LOOKAHEAD."""
    assert in_force(services, 1) == DEFAULT_RULE == in_force(services, None)
    set_rule(services, None, TWO_HOURS)
    set_rule(services, 1, THREE)
    assert (in_force(services, 1), in_force(services, 2)) == (THREE, TWO_HOURS)
    clear_rule(services, None)
    assert (in_force(services, 1), in_force(services, 2)) == (THREE, DEFAULT_RULE)
    clear_rule(services, 1)
    assert in_force(services, 1) == DEFAULT_RULE


def test_the_builtin_rule_follows_the_lookahead_setting(engine: Engine, clock: ManualClock) -> None:
    """With REMINDERS_LOOKAHEAD=2h and no rule, the rule in force is one reminder 2 h ahead."""
    services = make_services(engine, clock, RecordingChannel(), lookahead="2h")
    assert in_force(services, 1) == Rule(before=(2 * H,))


def test_a_rule_for_an_unknown_user_is_refused_and_nothing_is_stored(services: Services) -> None:
    """No user 99 in the users table: UnknownUser, and the transaction stores nothing."""
    with pytest.raises(UnknownUser, match="user 99 is not in table users"):
        set_rule(services, 99, THREE)
    assert stored(services) == {}


def test_clearing_a_rule_that_is_not_there_changes_nothing(services: Services) -> None:
    """Clearing is idempotent, for a user and for the default."""
    assert clear_rule(services, 1) == rule_store.RuleChange(changed=False)
    assert clear_rule(services, None) == rule_store.RuleChange(changed=False)
    set_rule(services, 1, THREE)
    assert clear_rule(services, 1).changed
    assert stored(services) == {}
    with services.session_factory() as session:
        assert session.execute(select(rule_store.RuleLeadRow)).all() == []


def test_the_database_keeps_one_default_rule_at_most(services: Services) -> None:
    """A second row with no user is refused by the database itself, whoever writes it."""
    set_rule(services, None, TWO_HOURS)
    now = services.clock.now()
    row = {"user_id": None, "overdue_count": 0, "all_day_at": time(9), "updated_at": now}
    with pytest.raises(exc.IntegrityError), services.session_factory.begin() as session:
        session.execute(insert(RuleRow).values(row))


def test_the_database_refuses_nudges_without_an_interval(services: Services) -> None:
    """The overdue check holds for rows written by hand too."""
    now = services.clock.now()
    row = {"user_id": 1, "overdue_count": 3, "all_day_at": time(9), "updated_at": now}
    with pytest.raises(exc.IntegrityError), services.session_factory.begin() as session:
        session.execute(insert(RuleRow).values(row))


def leads_in_force(services: Services, builtin: Rule) -> dict[int, list[int]]:
    """The lead seconds `rule_sql` joins to each user, longest first."""
    sql = rule_sql(builtin)
    query = (
        select(User.id, sql.leads.c.lead_seconds)
        .select_from(User)
        .outerjoin(sql.own, sql.own.c.user_id == User.id)
        .join(sql.leads, sql.leads.c.rule_id == sql.rule_id)
        .order_by(User.id, sql.leads.c.lead_seconds.desc())
    )
    found: dict[int, list[int]] = {}
    with services.session_factory() as session:
        for user_id, seconds in session.execute(query):
            found.setdefault(user_id, []).append(seconds)
    return found


def settings_in_force(services: Services, builtin: Rule) -> dict[int, tuple[object, ...]]:
    """The overdue nudges and all-day time `rule_sql` joins to each user."""
    sql = rule_sql(builtin)
    s = sql.settings.c
    query = (
        select(User.id, s.rule_id, s.overdue_every_seconds, s.overdue_count, s.all_day_at)
        .select_from(User)
        .outerjoin(sql.own, sql.own.c.user_id == User.id)
        .join(sql.settings, s.rule_id == sql.rule_id)
    )
    with services.session_factory() as session:
        return {row[0]: tuple(row[1:]) for row in session.execute(query)}


def test_the_planner_joins_each_user_to_the_rule_in_force(services: Services) -> None:
    """In SQL: a user's own lead times, else the default rule's, else the built-in one's."""
    builtin = builtin_rule(services.settings.lookahead)
    assert leads_in_force(services, builtin) == {1: [86400], 2: [86400], 3: [86400]}
    assert settings_in_force(services, builtin)[1] == (BUILTIN_RULE_ID, None, 0, time(9))
    set_rule(services, 2, THREE)
    set_rule(services, 3, Rule(before=(), overdue_every=H, overdue_count=2))
    assert leads_in_force(services, builtin) == {1: [86400], 2: [86400, 3600, 0]}
    set_rule(services, None, TWO_HOURS)
    assert leads_in_force(services, builtin) == {1: [7200], 2: [86400, 3600, 0]}
    found = settings_in_force(services, builtin)
    assert {user: values[1:] for user, values in found.items()} == {
        1: (None, 0, time(8, 30)),
        2: (86400, 3, time(9)),
        3: (3600, 2, time(9)),
    }
    assert BUILTIN_RULE_ID not in {values[0] for values in found.values()}


def test_the_stored_lead_times_select_names_the_default_by_null(services: Services) -> None:
    """`rule_leads` gives (rule_id, user_id, lead_seconds), user_id NULL for the default."""
    set_rule(services, None, TWO_HOURS)
    set_rule(services, 1, THREE)
    with services.session_factory() as session:
        rows = session.execute(rule_store.rule_leads()).all()
        settings = session.execute(rule_store.rule_settings()).all()
    found = {(user, seconds) for _, user, seconds in rows}
    assert found == {(None, 7200), (1, 86400), (1, 3600), (1, 0)}
    assert sorted((row.user_id or 0, row.overdue_count) for row in settings) == [(0, 0), (1, 3)]


def marked(services: Services) -> set[int]:
    """The ids of the tasks whose marker is set."""
    with services.session_factory() as session:
        return set(
            session.execute(select(Task.id).where(Task.reminder_due_at.is_not(None))).scalars()
        )


def mark_all(services: Services) -> None:
    """Every task marked as reminded for its due date, as after a scan."""
    with services.session_factory.begin() as session:
        session.execute(update(Task).values(reminder_due_at=Task.due_date))


@pytest.fixture
def tasks(services: Services) -> Services:
    """Tasks 11, 12 (done) of user 1; 21 of user 2; 31 of user 3; all marked."""
    due = services.clock.now() + 3 * H
    add_task(services, 11, 1, due)
    add_task(services, 12, 1, due, completed=services.clock.now())
    add_task(services, 21, 2, due)
    add_task(services, 31, 3, due)
    mark_all(services)
    return services


def test_a_users_rule_change_replans_only_their_open_tasks(tasks: Services) -> None:
    """The marker is cleared on the user's open tasks: not on their done one, nor others'."""
    change = set_rule(tasks, 1, THREE)
    assert change == rule_store.RuleChange(changed=True, replanned=1)
    assert marked(tasks) == {12, 21, 31}
    mark_all(tasks)
    assert clear_rule(tasks, 1).replanned == 1
    assert marked(tasks) == {12, 21, 31}


def test_a_default_rule_change_replans_the_users_without_a_rule(tasks: Services) -> None:
    """User 2 has a rule of their own: the default's change leaves their tasks alone."""
    set_rule(tasks, 2, THREE)
    mark_all(tasks)
    assert set_rule(tasks, None, TWO_HOURS).replanned == 2
    assert marked(tasks) == {12, 21}
    mark_all(tasks)
    assert clear_rule(tasks, None).replanned == 2
    assert marked(tasks) == {12, 21}


def test_an_unchanged_rule_replans_nothing(tasks: Services) -> None:
    """Setting the same rule again clears no marker."""
    set_rule(tasks, 1, THREE)
    mark_all(tasks)
    assert set_rule(tasks, 1, THREE).replanned == 0
    assert marked(tasks) == {11, 12, 21, 31}


def test_the_rule_tables_are_the_migrations(engine: Engine) -> None:
    """Alembic finds no difference between the models and the migrated rule tables."""
    names = {RuleRow.__tablename__, rule_store.RuleLeadRow.__tablename__}
    models = MetaData()
    for table in RuleRow.metadata.sorted_tables:
        if table.name in names:
            table.to_metadata(models)
    with engine.connect() as connection, warnings.catch_warnings():
        # Neither dialect reflects the expression index; test_schema compares it.
        warnings.simplefilter("ignore")
        context = MigrationContext.configure(
            connection,
            opts={
                "compare_type": True,
                "include_name": lambda name, kind, _: kind != "table" or name in names,
            },
        )
        assert compare_metadata(context, models) == []
