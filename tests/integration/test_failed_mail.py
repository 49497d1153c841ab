"""Outgoing mail that failed for good, listed and sent again from the command line,
on each database, through the pipeline, the recovery sweep and a real relay."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import select, update

from gateway.clock import utcnow
from gateway.inbound import accept
from gateway.models import CASES, OUTBOX, OutboxStatus
from gateway.outbox import send_one
from gateway.pipeline import process_inbound
from gateway.recovery import sweep
from gateway.runtime import Runtime
from tests.conftest import Sink, mail
from tests.integration.conftest import helpdesk_on, runtime_for


@pytest.fixture(params=["sqlite", "postgresql"])
def relayed(request: pytest.FixtureRequest, tmp_path: Path, sink: Sink) -> Iterator[Runtime]:
    """A runtime on each database, relaying to ``sink``."""
    running = runtime_for(request, tmp_path, HELPDESK_RELAY_HOST=sink.host,
                          HELPDESK_RELAY_PORT=str(sink.port))
    yield running
    running.close()


def acknowledgement_of(runtime: Runtime, subject: str, sender: str) -> tuple[int, str]:
    """The outbox id and case number of the acknowledgement to a new mail."""
    inbound_id = accept(runtime.database, mail(subject, sender=sender), source="smtp",
                        sender=sender, recipients=["support@example.com"], now=utcnow())
    outcome = process_inbound(runtime.pipeline, inbound_id, utcnow())
    [outbox_id] = outcome.outbox_ids
    with runtime.database.reading() as connection:
        number = connection.scalar(select(CASES.c.number).where(CASES.c.id == outcome.case_id))
    assert number is not None
    return outbox_id, number


def message_id(runtime: Runtime, outbox_id: int) -> str:
    with runtime.database.reading() as connection:
        found = connection.scalar(select(OUTBOX.c.message_id).where(OUTBOX.c.id == outbox_id))
    assert found is not None
    return found


def handed_out_by_the_sweep(runtime: Runtime) -> list[int]:
    handed: list[int] = []
    dispatch = SimpleNamespace(process=None, send=lambda i, delay=None: handed.append(i),
                               waiting=lambda: 0)
    sweep(runtime.database, dispatch, utcnow(), timedelta(0))
    return handed


def send(runtime: Runtime, outbox_id: int) -> str | None:
    delivery, _ = send_one(runtime.database, runtime.transport, outbox_id, utcnow(),
                           max_attempts=runtime.settings.relay.max_attempts)
    return None if delivery is None else delivery.outcome


def test_a_failed_mail_is_listed_and_once_retried_is_sent_once(
    relayed: Runtime, sink: Sink, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # Given an acknowledgement refused by a relay that wants a login, and one sent
    refused, number = acknowledgement_of(relayed, "[P1] Database down", "alice@customer.example")
    sent, _ = acknowledgement_of(relayed, "[P2] Slow reports", "bob@customer.example")
    sink.handler.reply = "530-5.7.0 Authentication required\r\n530 5.7.0 See the relay's manual"
    assert send(relayed, refused) == "permanent"
    sink.handler.reply = "250 OK"
    assert send(relayed, sent) == "sent"
    helpdesk = helpdesk_on(relayed, monkeypatch, tmp_path)

    # When a person lists the failed mail, the refused one is there with the relay's reply
    listed = helpdesk("outbox", "failed")
    assert listed.exit_code == 0, listed.output
    [line] = listed.output.splitlines()
    fields = line.split("\t")
    assert fields[:2] == [str(refused), "failed"]
    assert fields[2].endswith(" UTC")
    assert fields[3:6] + fields[7:] == [
        number, "acknowledgement", "alice@customer.example", "1 attempt",
        "530 5.7.0 Authentication required 5.7.0 See the relay's manual"]
    assert fields[6] == f"<{message_id(relayed, refused)}>"
    # And when the login is mended and it is retried (a sent mail and an unknown id are named)
    retried = helpdesk("outbox", "retry", str(refused), str(sent), "999999")
    assert retried.exit_code == 1
    assert f"{refused} queued again" in retried.output
    assert f"not failed (or no such mail; an unconfirmed one needs --unconfirmed): " \
        f"{sent}, 999999" in retried.output
    # Then the recovery sweep hands out that one alone, and it is sent once, attempts afresh
    assert handed_out_by_the_sweep(relayed) == [refused]
    assert send(relayed, refused) == "sent"
    assert send(relayed, refused) is None
    assert sorted(m.recipients[0] for m in sink.messages) == [
        "alice@customer.example", "bob@customer.example",
    ]
    with relayed.database.reading() as connection:
        row = connection.execute(
            select(OUTBOX.c.status, OUTBOX.c.attempts, OUTBOX.c.last_error)
            .where(OUTBOX.c.id == refused)
        ).one()
    assert tuple(row) == (OutboxStatus.SENT, 1, None)
    assert helpdesk("outbox", "failed").output == "no outgoing mail has failed\n"


def test_an_unconfirmed_mail_goes_again_only_when_asked_for_by_name(
    relayed: Runtime, sink: Sink, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # Given an acknowledgement whose end the relay never answered (recorded as the sender
    # records it), and another that the relay took
    unanswered, number = acknowledgement_of(relayed, "[P1] Database down", "alice@customer.example")
    delivered, _ = acknowledgement_of(relayed, "[P2] Slow reports", "bob@customer.example")
    with relayed.database.transaction() as connection:
        connection.execute(update(OUTBOX).where(OUTBOX.c.id.in_([unanswered, delivered])).values(
            status=OutboxStatus.UNCONFIRMED, attempts=1, sent_at=utcnow(),
            last_error="relay 127.0.0.1:25 did not answer the end of the mail: timed out"))
    helpdesk = helpdesk_on(relayed, monkeypatch, tmp_path)

    # When a person lists what needs them, both are there, with the Message-ID to look for
    listed = helpdesk("outbox", "failed", "--limit", "1")
    assert listed.exit_code == 0, listed.output
    line, more = listed.output.splitlines()
    fields = line.split("\t")
    assert fields[:2] == [str(unanswered), "unconfirmed"]
    assert fields[3] == number
    assert fields[6] == f"<{message_id(relayed, unanswered)}>"
    assert fields[8].startswith("relay 127.0.0.1:25 did not answer the end of the mail: "
                                "timed out (its sender began at ")
    assert more == "… and 1 more (--limit)"
    # And a plain retry refuses them: the relay may have delivered them
    plain = helpdesk("outbox", "retry", str(unanswered))
    assert plain.exit_code == 1
    assert "an unconfirmed one needs --unconfirmed" in plain.output
    assert handed_out_by_the_sweep(relayed) == []

    # When the relay's log shows one missing, and the other delivered
    assert helpdesk("outbox", "retry", "--unconfirmed", str(unanswered)).exit_code == 0
    assert helpdesk("outbox", "dismiss", str(delivered)).exit_code == 0
    # Then the missing one alone goes again, once
    assert handed_out_by_the_sweep(relayed) == [unanswered]
    with relayed.database.reading() as connection:
        assert connection.scalar(select(OUTBOX.c.last_error)
                                 .where(OUTBOX.c.id == unanswered)) is None  # afresh
    assert send(relayed, unanswered) == "sent"
    assert send(relayed, delivered) is None
    assert [m.recipients[0] for m in sink.messages] == ["alice@customer.example"]
    assert helpdesk("outbox", "failed").output == "no outgoing mail has failed\n"
    assert helpdesk("status").exit_code == 0
