"""``helpdesk status`` on each database: what waits, and what needs a person."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select, text, update

from gateway.cli import main
from gateway.clock import utcnow
from gateway.compose import Identity, build_mail
from gateway.database import Database, upgrade
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
    outgoing = build_mail(identity=IDENTITY, to="alice@customer.example",
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
        "outbox: 0 waiting to be sent: 0 due, 0 retrying later, 0 being sent; "
        "0 failed, 0 unconfirmed",
        "nothing needs a person",
    ]


def test_mail_stuck_in_each_way_is_shown_and_needs_a_person(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    now = utcnow()
    # Given mail stuck everywhere: stored and unprocessed for an hour (and a newer one),
    # a quarantined mail; an acknowledgement made 20 minutes ago that the recovery sweep
    # has just handed out again (due now), one made 30 minutes ago waiting out its
    # backoff after the relay's 421, one made 16 minutes ago and claimed again a moment
    # ago; one that failed, and one the relay never answered
    stored(runtime, now - timedelta(hours=1))
    stored(runtime, now - timedelta(minutes=2))
    stored(runtime, now - timedelta(days=1), InboundStatus.QUARANTINED)
    queued(runtime, "ack:due", now - timedelta(minutes=20), next_attempt_at=now)
    queued(runtime, "ack:later", now - timedelta(minutes=30),
           next_attempt_at=now + timedelta(minutes=4), attempts=3,
           last_error="421 4.3.2 Try again\n later")
    queued(runtime, "ack:held", now - timedelta(minutes=16), status=OutboxStatus.SENDING,
           claim=claim_token(), claimed_at=now - timedelta(seconds=5), attempts=1)
    queued(runtime, "ack:failed", now - timedelta(hours=6), status=OutboxStatus.FAILED,
           last_error="530 5.7.0 Authentication required")
    queued(runtime, "ack:unconfirmed", now - timedelta(hours=7),
           status=OutboxStatus.UNCONFIRMED, sent_at=now - timedelta(hours=7),
           last_error="relay did not answer the end of the mail: timed out")

    # Then the backlog counts each, and dates the oldest by when it began to wait,
    # not by when the gateway last handed it out
    found = backlog(runtime.database, now)
    assert found.inbound == Waiting(2, now - timedelta(hours=1))
    assert found.quarantined == 1
    assert found.outgoing == Waiting(3, now - timedelta(minutes=30))
    assert (found.due, found.retrying, found.sending) == (1, 1, 1)
    assert found.oldest_error == "421 4.3.2 Try again later"
    assert (found.failed, found.unconfirmed) == (1, 1)

    # And the command says what needs a person, and exits 1 for a monitor
    result = helpdesk_on(runtime, monkeypatch, tmp_path)("status", "--max-wait", "600")
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert lines[:3] == [
        "inbound: 2 waiting (the oldest for 1 hour), 1 quarantined",
        "outbox: 3 waiting to be sent (the oldest for 30 minutes): 1 due, 1 retrying later, "
        "1 being sent; 1 failed, 1 unconfirmed",
        "needs a person:",
    ]
    assert lines[3:] == [
        "  - mail has waited over 10 minutes to be processed (2 waiting in all): "
        "are the workers, and the broker or the recovery sweep, running?",
        "  - outgoing mail has waited over 10 minutes to be sent (3 waiting in all): "
        "the relay's last answer to the oldest: 421 4.3.2 Try again later",
        "  - 1 quarantined mail: helpdesk quarantine list",
        "  - 1 failed outgoing mail: helpdesk outbox failed",
        "  - 1 outgoing mail the relay may or may not have delivered (it was handed the "
        "whole mail, and its answer never came or was never recorded): look for the "
        "Message-ID in the relay's log; helpdesk outbox failed",
    ]

    # And with a longer patience, only what a person must do remains
    patient = helpdesk_on(runtime, monkeypatch, tmp_path)("status", "--max-wait", "7200")
    assert patient.exit_code == 1
    assert [line[4:].split(":")[0] for line in patient.output.splitlines()
            if line.startswith("  - ")] == [
        "1 quarantined mail", "1 failed outgoing mail",
        "1 outgoing mail the relay may or may not have delivered (it was handed the whole "
        "mail, and its answer never came or was never recorded)",
    ]


def test_mail_given_back_waits_from_then_and_dismissed_mail_is_not_counted(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    long_ago = utcnow() - timedelta(days=1)
    # Given two quarantined mails and two failed ones, from a day ago
    released, dropped = (stored(runtime, long_ago, InboundStatus.QUARANTINED) for _ in "ab")
    retried, given_up = (queued(runtime, f"ack:{n}", long_ago, status=OutboxStatus.FAILED,
                                last_error="530 5.7.0 Authentication required") for n in "ab")
    helpdesk = helpdesk_on(runtime, monkeypatch, tmp_path)
    # When a person releases one of each kind and dismisses the other
    assert helpdesk("quarantine", "release", str(released)).exit_code == 0
    assert helpdesk("quarantine", "dismiss", str(dropped)).output == f"{dropped} dismissed\n"
    assert helpdesk("outbox", "retry", str(retried)).exit_code == 0
    assert helpdesk("outbox", "dismiss", str(given_up)).output == f"{given_up} dismissed\n"
    # Then what was given back waits from that moment, not from a day ago, and nothing
    # needs a person until it has waited longer than the longest wait
    result = helpdesk("status", "--max-wait", "600")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "inbound: 1 waiting (the oldest for under a minute), 0 quarantined",
        "outbox: 1 waiting to be sent (the oldest for under a minute): 1 due, "
        "0 retrying later, 0 being sent; 0 failed, 0 unconfirmed",
        "nothing needs a person",
    ]
    # And what was dismissed is kept, with its reason, and not given back again
    with runtime.database.reading() as connection:
        assert connection.execute(select(INBOUND.c.status, INBOUND.c.reason)
                                  .where(INBOUND.c.id == dropped)).one().status == "dismissed"
        row = connection.execute(select(OUTBOX.c.status, OUTBOX.c.last_error)
                                 .where(OUTBOX.c.id == given_up)).one()
    assert tuple(row) == ("dismissed", "530 5.7.0 Authentication required")
    again = helpdesk("quarantine", "release", str(dropped))
    assert again.exit_code == 1
    assert f"not quarantined (or no such message): {dropped}" in again.output


def test_an_empty_database_has_nothing_waiting(runtime: Runtime):
    found = backlog(runtime.database, utcnow())
    assert (found.inbound, found.outgoing) == (NOTHING, NOTHING)
    assert (found.quarantined, found.due, found.retrying, found.sending, found.failed,
            found.unconfirmed, found.oldest_error) == (0, 0, 0, 0, 0, 0, "")


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


def test_a_database_without_the_gateway_is_one_line_and_exit_1_and_stays_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg_url: str
):
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "nowhere" / "helpdesk.sqlite3"
    for url, said in ((f"sqlite:///{missing}", f"Error: no database at {missing}: "
                                                "helpdesk serve (or helpdesk db upgrade) makes it"),
                      (f"sqlite:///file:{missing}?mode=rw&uri=true",
                       f"Error: no database at {missing}: "),
                      (pg_url, "holds no gateway yet: helpdesk db upgrade (or helpdesk serve) "
                               "makes it")):
        env = {"HELPDESK_CONFIG": None, "HELPDESK_DATABASE_URL": url}
        for command in (["status"], ["quarantine", "list"], ["outbox", "retry", "1"]):
            result = CliRunner().invoke(main, command, env=env)
            assert result.exit_code == 1, (command, result.output)
            [line] = result.output.splitlines()
            assert said in line, line
    assert not missing.parent.exists()
    assert list(tmp_path.iterdir()) == []  # nor anything else, where a file: URI was read


def test_an_id_no_row_can_have_is_refused_before_the_database_is_asked(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    helpdesk = helpdesk_on(runtime, monkeypatch, tmp_path)
    for command in (("outbox", "retry"), ("outbox", "dismiss"), ("quarantine", "release"),
                    ("quarantine", "dismiss")):
        result = helpdesk(*command, "1", "99999999999")
        assert result.exit_code == 2, result.output
        assert "99999999999 is not in the range 1<=x<=2147483647" in result.output


def test_a_longest_wait_no_timedelta_holds_is_a_usage_error(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    helpdesk = helpdesk_on(runtime, monkeypatch, tmp_path)
    for value, said in (("nan", "nan is not a number."),
                        ("inf", "inf is not in the range 0<=x<=2592000."),
                        ("1e15", "1000000000000000.0 is not in the range 0<=x<=2592000.")):
        result = helpdesk("status", "--max-wait", value)
        assert result.exit_code == 2, result.output
        assert result.output.splitlines()[-1] == f"Error: Invalid value for '--max-wait': {said}"
    assert helpdesk("status", "--max-wait", "2592000").exit_code == 0


def test_a_database_from_a_later_release_is_not_to_be_upgraded_by_this_one(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    with runtime.database.transaction() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    result = helpdesk_on(runtime, monkeypatch, tmp_path)("status")
    assert result.exit_code == 1
    assert result.output.rstrip().endswith(
        "holds a schema from a later release than this one: run that release")


def test_status_reads_an_sqlite_database_while_a_writer_holds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # Given an embedded database with a writer in the middle of a transaction
    path = tmp_path / "busy.sqlite3"
    database = Database(f"sqlite:///{path}")
    upgrade(database.engine)
    database.dispose()
    writer = sqlite3.connect(path, timeout=0)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE alembic_version SET version_num = version_num")
    try:
        # When a monitor asks how the gateway is doing
        monkeypatch.chdir(tmp_path)
        result = CliRunner().invoke(main, ["status"], env={
            "HELPDESK_CONFIG": None, "HELPDESK_DATABASE_URL": f"sqlite:///{path}"})
    finally:
        writer.rollback()
        writer.close()
    # Then it reads beside the writer, as WAL allows, rather than queue for its lock
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "nothing needs a person"


def test_a_database_that_cannot_be_read_or_upgraded_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg_url: str
):
    monkeypatch.chdir(tmp_path)
    not_a_database = tmp_path / "notes.sqlite3"
    not_a_database.write_bytes(b"these are notes, not a database\n" * 64)
    later = Database(pg_url)
    upgrade(later.engine)
    with later.transaction() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    later.dispose()
    for url, command, said in (
        (f"sqlite:///{not_a_database}", ["status"],
         "Error: the database cannot be read: file is not a database"),
        (f"sqlite:///{not_a_database}", ["db", "upgrade"],
         "Error: the database refused the migration: file is not a database"),
        ("postgresql+psycopg://postgres@127.0.0.1:9/test", ["db", "upgrade"],
         "Error: the database is unavailable: connection failed"),
        (pg_url, ["db", "upgrade"],
         "Error: the database holds a schema from a later release than this one: "
         "run that release ("),
        (f"sqlite:///{not_a_database}/data/h.sqlite3", ["db", "upgrade"],
         "Error: cannot make the database's folder: "),
    ):
        result = CliRunner().invoke(main, command, env={
            "HELPDESK_CONFIG": None, "HELPDESK_DATABASE_URL": url})
        assert result.exit_code == 1, (command, result.output)
        [line] = result.output.splitlines()
        assert line.startswith(said), line
