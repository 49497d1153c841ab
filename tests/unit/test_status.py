"""What needs a person, from a backlog's values (``gateway.status``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.status import NOTHING, Backlog, Waiting, needs_a_person, summary

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def test_mail_that_has_waited_just_the_longest_wait_needs_no_one_yet():
    now = NOW
    exactly = Waiting(3, now - timedelta(minutes=10))
    found = Backlog(inbound=exactly, quarantined=0, due=exactly, retrying=7, sending=exactly,
                    failed=0)
    assert needs_a_person(found, now, timedelta(minutes=10)) == []
    assert len(needs_a_person(found, now + timedelta(seconds=1), timedelta(minutes=10))) == 3


def test_nothing_waiting_is_said_without_ages():
    idle = Backlog(inbound=NOTHING, quarantined=0, due=NOTHING, retrying=0, sending=NOTHING,
                   failed=0)
    assert needs_a_person(idle, NOW, timedelta(0)) == []
    assert summary(idle, NOW) == [
        "inbound: 0 waiting, 0 quarantined",
        "outbox: 0 due, 0 retrying later, 0 being sent, 0 failed",
    ]
