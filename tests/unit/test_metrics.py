"""Metrics: scans, deliveries, latency from eligibility, outbox gauges."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client import CollectorRegistry

from outbox.relay import Attempt, AttemptOutcome
from tests.support.clock import T0
from worker.metrics import ServiceMetrics
from worker.reminders.scan import ScanResult
from worker.reminders.unremindable import Unremindable


def test_scan_and_delivery_metrics_count_what_happened() -> None:
    """Queued reminders, attempts by outcome and latency from eligibility are recorded."""
    registry = CollectorRegistry()
    metrics = ServiceMetrics(registry)
    metrics.observe_scan(ScanResult(3, 4, 1, 1, timedelta(milliseconds=20)))
    due = T0 + timedelta(hours=24)
    delivered = Attempt(1, "k", 1, AttemptOutcome.DELIVERED, subject_at=due, created_at=T0)
    metrics.observe_attempt("smtp", delivered, T0 + timedelta(seconds=42), timedelta(hours=24))
    retry = Attempt(2, "k2", 1, AttemptOutcome.RETRY)
    metrics.observe_attempt("smtp", retry, T0, timedelta(hours=24))
    value = registry.get_sample_value
    assert value("reminders_queued_total") == 3
    assert value("reminders_scan_tasks_marked_total") == 4
    assert value("reminders_deliveries_total", {"channel": "smtp", "outcome": "delivered"}) == 1
    assert value("reminders_deliveries_total", {"channel": "smtp", "outcome": "retry"}) == 1
    assert value("reminders_delivery_latency_seconds_sum") == 42
    assert value("reminders_delivery_latency_seconds_count") == 1


def test_latency_starts_when_the_row_was_created_if_later() -> None:
    """A task created inside the window becomes due when its row is written, not before."""
    registry = CollectorRegistry()
    metrics = ServiceMetrics(registry)
    created = T0 + timedelta(hours=5)
    due = T0 + timedelta(hours=6)
    attempt = Attempt(1, "k", 1, AttemptOutcome.DELIVERED, subject_at=due, created_at=created)
    metrics.observe_attempt("console", attempt, created + timedelta(seconds=3), timedelta(hours=24))
    assert registry.get_sample_value("reminders_delivery_latency_seconds_sum") == 3


def test_latency_of_a_planned_reminder_starts_at_its_moment() -> None:
    """A reminder 1 h before its due moment is late from that moment, whatever the lookahead."""
    registry = CollectorRegistry()
    metrics = ServiceMetrics(registry)
    due = T0 + timedelta(hours=6)
    attempt = Attempt(
        1, "k", 1, AttemptOutcome.DELIVERED, subject_at=due, created_at=T0, offset_seconds=3600
    )
    moment = due - timedelta(hours=1)
    metrics.observe_attempt("console", attempt, moment + timedelta(seconds=2), timedelta(hours=24))
    assert registry.get_sample_value("reminders_delivery_latency_seconds_sum") == 2


def test_latency_of_a_reminder_held_by_quiet_hours_starts_when_they_end() -> None:
    """A hold is the user's choice, not lateness: counted from the instant it was held to."""
    registry = CollectorRegistry()
    metrics = ServiceMetrics(registry)
    due = T0 + timedelta(hours=24)
    released = T0 + timedelta(hours=5)
    attempt = Attempt(
        1, "k", 1, AttemptOutcome.DELIVERED, subject_at=due, created_at=T0, ready_at=released
    )
    sent = released + timedelta(seconds=4)
    metrics.observe_attempt("console", attempt, sent, timedelta(hours=24))
    assert registry.get_sample_value("reminders_delivery_latency_seconds_sum") == 4


def test_outbox_gauges_follow_the_last_reading() -> None:
    """Rows by status and the oldest waiting row's age are published as gauges."""
    registry = CollectorRegistry()
    metrics = ServiceMetrics(registry)
    metrics.observe_outbox({"pending": 5, "dead": 1}, timedelta(minutes=3))
    metrics.observe_outbox({"pending": 2, "dead": 1}, None)
    value = registry.get_sample_value
    assert value("reminders_outbox_rows", {"status": "pending"}) == 2
    assert value("reminders_outbox_oldest_waiting_age_seconds") == 0


def test_a_channel_exports_every_outcome_at_zero_before_any_attempt() -> None:
    """Each delivery outcome of the configured channel is a series from the start, at 0."""
    registry = CollectorRegistry()
    ServiceMetrics(registry).publish_channel("webhook")
    for outcome in AttemptOutcome:
        labels = {"channel": "webhook", "outcome": outcome}
        assert registry.get_sample_value("reminders_deliveries_total", labels) == 0


def test_unremindable_tasks_and_failures_are_published() -> None:
    """Tasks that cannot be reminded are a gauge by reason; failed actions a counter by kind."""
    registry = CollectorRegistry()
    metrics = ServiceMetrics(registry)
    metrics.observe_unremindable(Unremindable(missing_owner=2, no_address=1))
    metrics.observe_unremindable(Unremindable(missing_owner=1, no_address=0))
    metrics.observe_failure("scan", "unreachable")
    metrics.observe_failure("scan", "unreachable")
    metrics.observe_failure("relay", "not_migrated")
    value = registry.get_sample_value
    assert value("reminders_unremindable_tasks", {"reason": "missing_owner"}) == 1
    assert value("reminders_unremindable_tasks", {"reason": "no_address"}) == 0
    assert value("reminders_failures_total", {"action": "scan", "kind": "unreachable"}) == 2
    assert value("reminders_failures_total", {"action": "relay", "kind": "not_migrated"}) == 1


def test_an_expired_row_is_counted_as_expired_and_as_its_outcome() -> None:
    """Each expired row adds one to reminders_expired and to its channel's expired outcome."""
    registry = CollectorRegistry()
    metrics = ServiceMetrics(registry)
    expired = Attempt(1, "k", 0, AttemptOutcome.EXPIRED, subject_at=T0, created_at=T0)
    metrics.observe_attempt("smtp", expired, T0, timedelta(hours=24))
    metrics.observe_attempt("smtp", expired, T0, timedelta(hours=24))
    value = registry.get_sample_value
    assert value("reminders_expired_total") == 2
    assert value("reminders_deliveries_total", {"channel": "smtp", "outcome": "expired"}) == 2
    assert value("reminders_delivery_latency_seconds_count") == 0
