"""The soak's verdict on a duplicate: which copy had no journaled acceptance, and why."""

from __future__ import annotations

from tests.chaos.soak import Event, Faults, explain

KEY = "due_soon-20261129T080000Z-7"


def test_an_unjournaled_first_copy_is_explained_by_the_kill_right_after_it() -> None:
    """The first sender died inside its send (no acceptance journaled); the row came back when
    its lease expired and the second sender journaled its acceptance and recorded it."""
    events = [Event(2, "accepted", KEY, "", 161.0), Event(2, "recorded", KEY, "held", 161.1)]
    faults = Faults(kills=[(100.5, 1)])
    why = explain(KEY, events, faults, arrivals=[100.0, 160.9])
    assert why == "its sender was killed while the receiver was accepting it"


def test_an_unjournaled_copy_with_no_kill_near_it_stays_unexplained() -> None:
    """The same two copies, but nothing was killed when the first one arrived."""
    events = [Event(2, "accepted", KEY, "", 161.0), Event(2, "recorded", KEY, "held", 161.1)]
    faults = Faults(kills=[(150.0, 1)])
    assert explain(KEY, events, faults, arrivals=[100.0, 160.9]) is None


def test_an_acceptance_never_recorded_is_explained_by_its_senders_death() -> None:
    """Both copies journaled; the first sender was killed before its round was recorded."""
    events = [
        Event(1, "accepted", KEY, "", 100.1),
        Event(2, "accepted", KEY, "", 161.0),
        Event(2, "recorded", KEY, "held", 161.1),
    ]
    faults = Faults(kills=[(100.3, 1)])
    why = explain(KEY, events, faults, arrivals=[100.0, 160.9])
    assert why == "its sender was killed after the receiver accepted it"
