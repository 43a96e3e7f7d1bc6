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


def test_an_unjournaled_first_copy_is_explained_by_a_kill_before_the_receiver_read_it() -> None:
    """SIGKILL landed after the sender's last write: the receiver still read the message and
    accepted it 2 ms after its sender died (seen in a soak run)."""
    events = [Event(2, "accepted", KEY, "", 142.7), Event(2, "recorded", KEY, "held", 142.8)]
    faults = Faults(kills=[(99.998, 1)])
    why = explain(KEY, events, faults, arrivals=[100.0, 142.7])
    assert why == "its sender was killed while the receiver was accepting it"


def test_an_unjournaled_copy_long_after_a_kill_stays_unexplained() -> None:
    """A kill a second before the copy arrived did not stop a send that was on the wire."""
    events = [Event(2, "accepted", KEY, "", 142.7), Event(2, "recorded", KEY, "held", 142.8)]
    faults = Faults(kills=[(99.0, 1)])
    assert explain(KEY, events, faults, arrivals=[100.0, 142.7]) is None


def test_an_unjournaled_copy_with_no_kill_near_it_stays_unexplained() -> None:
    """The same two copies, but nothing was killed when the first one arrived."""
    events = [Event(2, "accepted", KEY, "", 161.0), Event(2, "recorded", KEY, "held", 161.1)]
    faults = Faults(kills=[(150.0, 1)])
    assert explain(KEY, events, faults, arrivals=[100.0, 160.9]) is None


def test_an_unjournaled_copy_is_explained_by_another_threads_self_kill() -> None:
    """A worker killed itself at a step of one thread's relay while its other thread's message
    was on the wire: the journal's own kill line counts like the soak's kills."""
    events = [
        Event(1, "killed", "other-key", "before-send", 99.9996),
        Event(2, "accepted", KEY, "", 161.0),
        Event(2, "recorded", KEY, "held", 161.1),
    ]
    why = explain(KEY, events, Faults(), arrivals=[100.0, 160.9])
    assert why == "its sender was killed while the receiver was accepting it"


def test_a_copy_whose_reply_was_lost_with_the_connection_is_explained() -> None:
    """The receiver read the message, then its connections were closed before the reply: the
    sender saw a dropped connection, sent again at once, and journaled that acceptance."""
    events = [Event(2, "accepted", KEY, "", 100.012), Event(2, "recorded", KEY, "held", 100.08)]
    faults = Faults(drops=[99.997])
    why = explain(KEY, events, faults, arrivals=[100.0, 100.01])
    assert why == "the receiver closed the connection before its reply"


def test_a_dropped_connection_long_before_a_copy_does_not_explain_it() -> None:
    """Connections closed a second earlier: the lost copy needs another reason."""
    events = [Event(2, "accepted", KEY, "", 100.012), Event(2, "recorded", KEY, "held", 100.08)]
    faults = Faults(drops=[99.0])
    assert explain(KEY, events, faults, arrivals=[100.0, 100.01]) is None


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
