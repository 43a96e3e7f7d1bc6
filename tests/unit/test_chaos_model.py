"""The soak's expectation model: what a history of host changes requires, allows, forbids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.chaos.model import Model, Steps
from worker.reminders.keys import reminder_key
from worker.reminders.rules import Rule, builtin_rule

DAY = timedelta(days=1)
T0 = 1_800_000_000.0  # the run's start, a Unix time
RULE = Rule(
    before=(DAY, timedelta(minutes=2), timedelta(0)),
    overdue_every=timedelta(minutes=1),
    overdue_count=1,
)


def at(seconds: float) -> datetime:
    """T0 + ``seconds`` as an aware datetime."""
    return datetime.fromtimestamp(T0 + seconds, UTC)


def model(rule: Rule | None = RULE) -> Model:
    """Owner 1 and user 2 opted in, user 3 opted out; ``rule`` the default from the start."""
    built = Model(builtin_rule(DAY), 86_400, {1: True, 2: True, 3: False})
    if rule is not None:
        built.default_rule.set(T0 - 10, T0 - 9, rule)
    return built


def task(m: Model, due: datetime, written: float = 0.0, task_id: int = 7) -> None:
    """Task ``task_id`` of owner 1, due at ``due``, written at T0 + ``written``."""
    m.task(task_id, 1).state.set(T0 + written, T0 + written + 0.01, (due, True))


def test_a_moment_ahead_valid_throughout_is_required_and_an_early_copy_is_early() -> None:
    """Due 10 min after it is written: the 2-min and due-time reminders and the nudge are
    required once old enough; the 24 h one (past when written) is required too."""
    m = model()
    due = at(600)
    task(m, due)
    key = reminder_key(7, due)
    two = key + "-o120"
    verdict = m.judge(T0 + 2000, {two: [T0 + 480.5]})
    assert verdict.required == {key, two, key + "-o0", key + "-o-60"}
    assert not verdict.early and not verdict.unexpected
    early = m.judge(T0 + 2000, {two: [T0 + 479.9]})
    assert early.early == {two: early.early[two]} and abs(early.early[two] - 0.1) < 1e-6
    # Within the clock's granularity: not early.
    assert not m.judge(T0 + 2000, {two: [T0 + 479.97]}).early


def test_a_moment_too_recent_to_judge_is_not_required_yet() -> None:
    m = model()
    due = at(600)
    task(m, due)
    assert reminder_key(7, due) + "-o0" not in m.judge(T0 + 650, {}).required


def test_a_reminder_delivered_after_its_task_was_completed_is_unexpected() -> None:
    """Completed 30 s before the 2-min moment: that reminder is no longer valid; the due-time
    one neither; a copy arriving after the completion is unexpected."""
    m = model()
    due = at(600)
    task(m, due)
    m.tasks[7].state.set(T0 + 450, T0 + 450.01, (due, False))
    two = reminder_key(7, due) + "-o120"
    verdict = m.judge(T0 + 2000, {two: [T0 + 480.2]})
    assert two not in verdict.required and two in verdict.unexpected
    assert reminder_key(7, due) + "-o0" not in verdict.required | verdict.either_way


def test_a_completion_soon_after_the_moment_makes_it_either_way() -> None:
    m = model()
    due = at(600)
    task(m, due)
    m.tasks[7].state.set(T0 + 500, T0 + 500.01, (due, False))
    two = reminder_key(7, due) + "-o120"
    verdict = m.judge(T0 + 2000, {})
    assert two in verdict.either_way and two not in verdict.required
    assert not m.judge(T0 + 2000, {two: [T0 + 481.0]}).unexpected


def test_a_watcher_is_required_only_when_listed_a_planning_horizon_before() -> None:
    """User 2 listed 400 s before the 2-min moment: required; listed 60 s before the due-time
    moment: either way; the opted-out user 3 listed from the start: never."""
    m = model()
    due = at(900)
    task(m, due)
    m.tasks[7].watchers[2] = Steps(False, [(T0 + 380, T0 + 380.01, True)])
    m.tasks[7].watchers[3] = Steps(False, [(T0, T0 + 0.01, True)])
    key = reminder_key(7, due)
    verdict = m.judge(T0 + 3000, {key + "-o0-u3": [T0 + 900.2]})
    assert key + "-o120-u2" in verdict.required
    assert key + "-o0-u2" in verdict.required  # 520 s ahead of its moment
    assert not any(k.endswith("-u3") for k in verdict.required | verdict.either_way)
    assert key + "-o0-u3" in verdict.unexpected
    late = model()
    task(late, due)
    late.tasks[7].watchers[2] = Steps(False, [(T0 + 840, T0 + 840.01, True)])
    assert key + "-o0-u2" in late.judge(T0 + 3000, {}).either_way


def test_of_the_moments_past_when_the_date_is_set_only_the_latest_is_due() -> None:
    """Written 60 s before it is due: the 24 h and 2-min moments are past; the 2-min one is
    the latest of them but the task may be due before it goes out: either way. Written an
    hour ahead, the 24 h one is the latest past and required."""
    m = model()
    soon, later = at(60), at(3600)
    task(m, soon)
    task(m, later, task_id=8)
    verdict = m.judge(T0 + 9000, {})
    assert reminder_key(7, soon) not in verdict.required | verdict.either_way  # never sent
    assert reminder_key(7, soon) + "-o120" in verdict.either_way
    assert reminder_key(8, later) in verdict.required


def test_a_lead_time_removed_by_a_rule_edit_before_its_moment_must_not_arrive() -> None:
    """The default loses its 2-min lead 300 s before that moment: a copy is unexpected; the
    due-time reminder, in both rules, stays required."""
    m = model()
    due = at(900)
    task(m, due)
    m.default_rule.set(T0 + 480, T0 + 480.5, Rule(before=(DAY, timedelta(0))))
    key = reminder_key(7, due)
    verdict = m.judge(T0 + 3000, {key + "-o120": [T0 + 780.3]})
    assert key + "-o120" in verdict.unexpected
    assert key + "-o0" in verdict.required
    assert key + "-o-60" not in verdict.required  # the nudge went with the edit


def test_a_task_whose_write_failed_is_neither_required_nor_unexpected() -> None:
    m = model()
    due = at(900)
    task(m, due)
    m.tasks[7].uncertain = True
    key = reminder_key(7, due)
    verdict = m.judge(T0 + 3000, {key + "-o0": [T0 + 900.1]})
    assert not verdict.required and not verdict.unexpected and verdict.uncertain_arrivals == 1
