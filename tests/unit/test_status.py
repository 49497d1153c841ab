"""What needs a person, from a backlog's values (``gateway.status``)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from gateway.status import NOTHING, Backlog, Waiting, needs_a_person, summary

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
IDLE = Backlog(inbound=NOTHING, quarantined=0, outgoing=NOTHING, due=0, retrying=0, sending=0,
               oldest_error="", failed=0, unconfirmed=0)


def test_mail_that_has_waited_just_the_longest_wait_needs_no_one_yet():
    exactly = Waiting(3, NOW - timedelta(minutes=10))
    found = replace(IDLE, inbound=exactly, outgoing=exactly, due=1, retrying=1, sending=1)
    assert needs_a_person(found, NOW, timedelta(minutes=10)) == []
    assert len(needs_a_person(found, NOW + timedelta(seconds=1), timedelta(minutes=10))) == 2


def test_nothing_waiting_is_said_without_ages():
    assert needs_a_person(IDLE, NOW, timedelta(0)) == []
    assert summary(IDLE, NOW) == [
        "inbound: 0 waiting, 0 quarantined",
        "outbox: 0 waiting to be sent: 0 due, 0 retrying later, 0 being sent; "
        "0 failed, 0 unconfirmed",
    ]


def test_late_outgoing_mail_says_the_relays_last_answer_when_there_is_one():
    late = Waiting(2, NOW - timedelta(hours=2))
    untried = needs_a_person(replace(IDLE, outgoing=late, due=2), NOW, timedelta(minutes=10))
    assert untried == [
        "outgoing mail has waited over 10 minutes to be sent (2 waiting in all): "
        "are the workers, and the broker or the recovery sweep, running?",
    ]
    refused = replace(IDLE, outgoing=late, retrying=2, oldest_error="421 4.3.2 Try again later")
    assert needs_a_person(refused, NOW, timedelta(minutes=10)) == [
        "outgoing mail has waited over 10 minutes to be sent (2 waiting in all): "
        "the relay's last answer to the oldest: 421 4.3.2 Try again later",
    ]


def test_a_short_longest_wait_is_said_in_seconds():
    found = replace(IDLE, inbound=Waiting(1, NOW - timedelta(minutes=1)))
    [line] = needs_a_person(found, NOW, timedelta(seconds=30))
    assert line.startswith("mail has waited over 30 seconds to be processed")
    [line] = needs_a_person(found, NOW + timedelta(minutes=1), timedelta(seconds=90))
    assert line.startswith("mail has waited over 1 minute 30 seconds")
    [line] = needs_a_person(found, NOW, timedelta(seconds=0.5))
    assert line.startswith("mail has waited over 0.5 seconds")


def test_failed_and_unconfirmed_mail_need_a_person_whatever_their_age():
    found = replace(IDLE, failed=2, unconfirmed=1, quarantined=1)
    assert needs_a_person(found, NOW, timedelta(days=365)) == [
        "1 quarantined mail: helpdesk quarantine list",
        "2 failed outgoing mails: helpdesk outbox failed",
        "1 outgoing mail the relay may or may not have delivered (it was handed the whole "
        "mail, and its answer never came or was never recorded): look for the Message-ID in "
        "the relay's log; helpdesk outbox failed",
    ]
