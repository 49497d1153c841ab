"""``helpdesk status`` on each database: what waits, and what needs a person."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import update

from gateway.cli import main
from gateway.clock import utcnow
from gateway.compose import Identity, build_mail
from gateway.inbound import accept
from gateway.models import INBOUND, OUTBOX, InboundStatus, OutboxStatus
from gateway.outbox import add_to_outbox, claim_token
from gateway.runtime import Runtime
from gateway.status import NOTHING, Waiting, backlog
from tests.conftest import mail
from tests.integration.conftest import helpdesk_on

IDENTITY = Identity("support@example.com", "helpdesk.example.com", "loop-token")


def stored(runtime: Runtime, at, status: str = InboundStatus.RECEIVED) -> int:
    inbound_id = accept(runtime.database, mail(message_id=f"m{at.timestamp()}{status}"),
                        source="smtp", sender="alice@customer.example",
                        recipients=["support@example.com"], now=at)
    with runtime.database.transaction() as connection:
        connection.execute(update(INBOUND).where(INBOUND.c.id == inbound_id).values(status=status))
    return inbound_id


def queued(runtime: Runtime, key: str, at, **values) -> int:
    """An outgoing mail created at ``at``, then given ``values``."""
    outgoing = build_mail(key=key, identity=IDENTITY, to="alice@customer.example",
                          subject=f"[HD-000001] {key}", text="Case HD-000001.\n",
                          html="<p>HD-000001</p>\n", date=at)
    with runtime.database.transaction() as connection:
        outbox_id = add_to_outbox(connection, key=key, kind="acknowledgement", mail=outgoing,
                                  case_id=None, now=at)
        if values:
            connection.execute(update(OUTBOX).where(OUTBOX.c.id == outbox_id).values(**values))
    return outbox_id


def test_an_idle_gateway_needs_no_one(runtime: Runtime, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch):
    # Given mail processed and sent long ago, and a mail stored a moment ago
    long_ago = utcnow() - timedelta(days=2)
    stored(runtime, long_ago, InboundStatus.PROCESSED)
    queued(runtime, "ack:1", long_ago, status=OutboxStatus.SENT, sent_at=long_ago)
    stored(runtime, utcnow() - timedelta(seconds=5))
    # When a monitor asks
    result = helpdesk_on(runtime, monkeypatch, tmp_path)("status")
    # Then what waits is said, and nothing needs a person
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "inbound: 1 waiting (the oldest for under a minute), 0 quarantined",
        "outbox: 0 due, 0 retrying later, 0 being sent, 0 failed",
        "nothing needs a person",
    ]


def test_mail_stuck_in_each_way_is_shown_and_needs_a_person(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    now = utcnow()
    # Given mail stuck everywhere: stored and unprocessed for an hour (and a newer one),
    # a quarantined mail, an acknowledgement due for 20 minutes, one waiting out its
    # backoff, one held by a sender that died 15 minutes ago, and one that failed
    stored(runtime, now - timedelta(hours=1))
    stored(runtime, now - timedelta(minutes=2))
    stored(runtime, now - timedelta(days=1), InboundStatus.QUARANTINED)
    queued(runtime, "ack:due", now - timedelta(minutes=20))
    queued(runtime, "ack:later", now - timedelta(minutes=30),
           next_attempt_at=now + timedelta(minutes=4), attempts=3)
    queued(runtime, "ack:held", now - timedelta(minutes=16), status=OutboxStatus.SENDING,
           claim=claim_token(), claimed_at=now - timedelta(minutes=15), attempts=1)
    queued(runtime, "ack:failed", now - timedelta(hours=6), status=OutboxStatus.FAILED,
           last_error="530 5.7.0 Authentication required")

    # Then the backlog counts each, and dates the oldest of each kind of waiting
    found = backlog(runtime.database, now)
    assert found.inbound == Waiting(2, now - timedelta(hours=1))
    assert found.quarantined == 1
    assert found.due == Waiting(1, now - timedelta(minutes=20))
    assert found.retrying == 1
    assert found.sending == Waiting(1, now - timedelta(minutes=15))
    assert found.failed == 1

    # And the command says what needs a person, and exits 1 for a monitor
    result = helpdesk_on(runtime, monkeypatch, tmp_path)("status", "--max-wait", "600")
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert lines[:3] == [
        "inbound: 2 waiting (the oldest for 1 hour), 1 quarantined",
        "outbox: 1 due (the oldest for 20 minutes), 1 retrying later, "
        "1 being sent (the oldest for 15 minutes), 1 failed",
        "needs a person:",
    ]
    assert lines[3:] == [
        "  - mail stored over 10 minutes ago is not processed yet (2 waiting in all): "
        "are the workers, and the broker or the recovery sweep, running?",
        "  - outgoing mail due over 10 minutes ago is not sent yet (1 due in all): "
        "are the workers, and the broker or the recovery sweep, running?",
        "  - outgoing mail has been held by a sender for over 10 minutes (1 held in all): "
        "its sender died, and the recovery sweep gives such mail back; is it running?",
        "  - 1 quarantined mail: helpdesk quarantine list",
        "  - 1 failed outgoing mail: helpdesk outbox failed",
    ]

    # And with a longer patience, only what a person must do remains
    patient = helpdesk_on(runtime, monkeypatch, tmp_path)("status", "--max-wait", "7200")
    assert patient.exit_code == 1
    assert [line for line in patient.output.splitlines() if line.startswith("  - ")] == [
        "  - 1 quarantined mail: helpdesk quarantine list",
        "  - 1 failed outgoing mail: helpdesk outbox failed",
    ]


def test_an_empty_database_has_nothing_waiting(runtime: Runtime):
    found = backlog(runtime.database, utcnow())
    assert (found.inbound, found.due, found.sending) == (NOTHING, NOTHING, NOTHING)
    assert (found.quarantined, found.retrying, found.failed) == (0, 0, 0)



def test_a_database_out_of_reach_is_one_line_and_exit_1(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    env = {"HELPDESK_CONFIG": None,
           "HELPDESK_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:9/test"}
    for command in (["status"], ["quarantine", "list"], ["outbox", "failed"]):
        result = CliRunner().invoke(main, command, env=env)
        assert result.exit_code == 1, (command, result.output)
        [line] = result.output.splitlines()
        assert line.startswith("Error: the database is unavailable: connection failed"), line
