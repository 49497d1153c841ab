"""End to end in the embedded deployment: SQLite, in-process workers, real SMTP both ways."""

from __future__ import annotations

import smtplib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email import message_from_bytes, policy

import pytest
from sqlalchemy import func, select

from gateway.models import (
    Case,
    CaseEvent,
    InboundMessage,
    InboundStatus,
    OutboxRow,
    OutboxStatus,
    ThreadEntry,
)
from gateway.service import Embedded
from tests.conftest import CORPORA, Sink, free_port, mail, make_settings
from tests.deployment import Burst, EmbeddedGateway, assert_exactly_once


@contextmanager
def embedded(tmp_path, sink: Sink, **env: str) -> Iterator[Embedded]:
    """A running embedded gateway that relays to ``sink``; ``env``: more settings."""
    settings = make_settings(
        tmp_path, HELPDESK_RELAY_HOST=sink.host, HELPDESK_RELAY_PORT=str(sink.port), **env
    )
    running = Embedded(settings)
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def gateway(tmp_path, sink: Sink) -> Iterator[Embedded]:
    with embedded(tmp_path, sink, HELPDESK_POLICY="lumenvox") as running:
        yield running


def send(gateway: Embedded, raw: bytes, to: str = "support@example.com",
         sender: str = "alice@customer.example") -> None:
    smtp = gateway.runtime.settings.smtp
    with smtplib.SMTP(smtp.host, smtp.port) as client:
        client.sendmail(sender, [to], raw)


def count(gateway: Embedded, model: type) -> int:
    with gateway.runtime.database.session() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def test_p1_mail_gets_acknowledgement_with_case_number_and_severity(gateway, sink):
    send(gateway, mail("[P1] Database down", message_id="first"))

    (ack,) = sink.wait_for(1)

    message = ack.message
    with gateway.runtime.database.session() as session:
        case = session.scalars(select(Case)).one()
    assert case.severity == 1
    assert ack.recipients == ["alice@customer.example"]
    assert f"[{case.number}]" in message["Subject"]
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["In-Reply-To"] == "<first@customer.example>"
    assert message["Message-ID"].endswith("@example.com>")
    text = message.get_body(("plain",)).get_content()
    assert case.number in text
    assert "Severity: 1 - Critical" in text
    assert "Target initial response: 1 business hour" in text
    html = message.get_body(("html",)).get_content()
    assert case.number in html


def test_mail_without_marker_gets_the_policy_default_level(gateway, sink):
    send(gateway, mail("Question about grammar files"))

    (ack,) = sink.wait_for(1)

    with gateway.runtime.database.session() as session:
        case = session.scalars(select(Case)).one()
    default = gateway.runtime.pipeline.policy.default_level
    assert case.severity == default
    assert f"Severity: {default} - " in ack.message.get_body(("plain",)).get_content()


def test_same_message_id_twice_makes_one_case_and_one_acknowledgement(gateway, sink):
    raw = mail("[P2] Slow recognition", message_id="twice")
    send(gateway, raw)
    send(gateway, raw, to="help@example.com")

    sink.wait_for(1)
    sink.settle(quiet=1.5)

    assert len(sink.messages) == 1
    assert count(gateway, Case) == 1
    with gateway.runtime.database.session() as session:
        statuses = sorted(session.scalars(select(InboundMessage.status)))
    assert statuses == [InboundStatus.DUPLICATE, InboundStatus.PROCESSED]


def test_automatic_mail_and_bounce_are_stored_but_not_acknowledged(gateway, sink):
    send(gateway, mail("Out of office", headers={"Auto-Submitted": "auto-replied"}))
    send(gateway, mail("Undelivered Mail Returned to Sender", sender="mailer-daemon@mx.example"),
         sender="")
    send(gateway, mail("[P3] a real one, sent last"))

    sink.wait_for(1)
    sink.settle(quiet=1.5)

    assert len(sink.messages) == 1
    assert "a real one" in sink.messages[0].message["Subject"]
    assert count(gateway, InboundMessage) == 3
    with gateway.runtime.database.session() as session:
        rows = {row.envelope_sender: row for row in session.scalars(select(InboundMessage))}
    assert rows[""].status == InboundStatus.IGNORED
    assert "bounce" in (rows[""].reason or "")
    assert count(gateway, OutboxRow) == 1


def wait_until_processed(gateway: Embedded, timeout: float = 20.0) -> list[InboundMessage]:
    """Every stored message once none is still waiting for the pipeline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with gateway.runtime.database.session() as session:
            rows = list(session.scalars(select(InboundMessage).order_by(InboundMessage.id)))
        if rows and all(row.status != InboundStatus.RECEIVED for row in rows):
            return rows
        time.sleep(0.05)
    pytest.fail("inbound mail still waiting for the pipeline")


def wait_until_sent(gateway: Embedded, timeout: float = 20.0) -> list[OutboxRow]:
    """Every outbox row once all are recorded as sent (the relay has its copy first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with gateway.runtime.database.session() as session:
            rows = list(session.scalars(select(OutboxRow)))
        if all(row.status == OutboxStatus.SENT for row in rows):
            return rows
        time.sleep(0.05)
    pytest.fail("outbox rows not recorded as sent")


def test_reply_in_the_thread_joins_its_case_and_a_forged_tag_does_not(gateway, sink):
    send(gateway, mail("[P2] Slow recognition", message_id="opening"))
    (ack,) = sink.wait_for(1)
    with gateway.runtime.database.session() as session:
        case = session.scalars(select(Case)).one()

    # The customer answers the acknowledgement; a stranger only copies the tag.
    reply = mail(f"Re: {ack.message['Subject']}", message_id="reply",
                 headers={"In-Reply-To": ack.message["Message-ID"]})
    send(gateway, reply)
    send(gateway, mail(f"[{case.number}] let me in", sender="mallory@elsewhere.example"),
         sender="mallory@elsewhere.example")
    rows = wait_until_processed(gateway)
    sink.wait_for(2)
    sink.settle(quiet=1.0)

    assert [row.case_id for row in rows][:2] == [case.id, case.id]
    assert rows[2].case_id not in (None, case.id)
    assert count(gateway, Case) == 2
    assert len(sink.messages) == 2  # the stranger's mail opened a case of its own
    with gateway.runtime.database.session() as session:
        kinds = list(session.scalars(
            select(CaseEvent.kind).where(CaseEvent.case_id == case.id).order_by(CaseEvent.id)
        ))
        directions = list(session.scalars(
            select(ThreadEntry.direction).where(ThreadEntry.case_id == case.id)
            .order_by(ThreadEntry.id)
        ))
    assert kinds == ["opened", "acknowledgement_queued", "mail_received"]
    assert directions == ["in", "out", "in"]


def test_automatic_replies_to_one_address_stop_at_the_limit(tmp_path, sink):
    # Given a limit of two acknowledgements per address in ten minutes
    with embedded(tmp_path, sink, HELPDESK_AUTO_REPLIES_PER_10_MINUTES="2") as running:
        # When a robot that marks nothing as automatic writes three times, then a person once
        for n in range(3):
            send(running, mail(f"Re: Your request {n}", sender="robot@customer.example"),
                 sender="robot@customer.example")
        send(running, mail("[P2] Slow recognition", sender="bob@customer.example"),
             sender="bob@customer.example")
        rows = wait_until_processed(running)
        sink.wait_for(3)
        sink.settle(quiet=1.0)
        with running.runtime.database.session() as session:
            withheld = list(session.scalars(
                select(CaseEvent).where(CaseEvent.kind == "acknowledgement_withheld")
            ))
    # Then every mail opened a case, the robot got two acknowledgements, the person one
    assert [row.status for row in rows] == [InboundStatus.PROCESSED] * 4
    assert sorted(m.recipients[0] for m in sink.messages) == [
        "bob@customer.example", "robot@customer.example", "robot@customer.example",
    ]
    # And the robot's third case says why it got none
    [event] = withheld
    assert event.data["reason"] == (
        "rate limit: 2 automatic mails to this address in 10 minutes already"
    )


@pytest.mark.skipif(not CORPORA.is_dir(), reason=f"mail corpora not found at {CORPORA}")
def test_every_corpus_message_is_taken_and_handled_and_no_bounce_is_answered(tmp_path, sink):
    """The 185 real and broken messages of the corpora, as a relay delivers them
    (CRLF line ends; bounces with the null envelope sender): each gets a 250,
    each ends processed, ignored or a duplicate, and each acknowledgement goes
    once, to a person. (That no bounce is answered rests here on the null
    sender; the header rules alone are tested over the corpora in test_classify.)"""
    files = sorted(p for p in CORPORA.rglob("*") if p.is_file() and p.name != "INDEX.md")
    bounce_ids: set[str] = set()
    with embedded(tmp_path, sink, HELPDESK_POLICY="lumenvox") as running:
        for path in files:
            raw = path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            bounce = path.parent.name in ("flufl.bounce", "bounce")
            if bounce:
                found = message_from_bytes(raw, policy=policy.compat32)["Message-ID"]
                bounce_ids.update(str(found).split() if found else ())
            send(running, raw, sender="" if bounce else "customer@customer.example")
        rows = wait_until_processed(running, timeout=60)
        queued = count(running, OutboxRow)  # made with their cases, so all there by now
        sink.wait_for(queued)
        outbox = wait_until_sent(running)
        acknowledgements = sink.settle(quiet=0.5)  # and none twice
    assert len(rows) == len(files)
    assert {row.status for row in rows} <= {
        InboundStatus.PROCESSED, InboundStatus.IGNORED, InboundStatus.DUPLICATE,
    }, [(row.id, row.status, row.reason) for row in rows if row.status == "quarantined"]
    assert all(row.status == InboundStatus.IGNORED for row in rows if row.envelope_sender == "")
    assert len(acknowledgements) == len(outbox) > 0
    answered = {str(m.message["In-Reply-To"]) for m in acknowledgements}
    assert not answered & bounce_ids
    assert not any(m.recipients[0].lower().startswith(("mailer-daemon", "postmaster"))
                   for m in acknowledgements)


@pytest.mark.slow
def test_serve_killed_mid_burst_loses_nothing_that_got_250_and_doubles_nothing(tmp_path, sink):
    """``helpdesk serve`` is SIGKILLed in the middle of a burst (stores, case
    transactions and sends in flight in its one process) and started again on
    the same data folder: every mail that got its 250 has one case and one
    acknowledgement."""
    running = EmbeddedGateway(
        tmp_path, relay_host=sink.host, relay_port=sink.port, smtp_port=free_port()
    )
    try:
        running.start()
        burst = Burst(running, 300)
        burst.start()
        burst.wait_until_sent(120)
        running.kill("serve")
        time.sleep(0.5)
        running.start()
        burst.join()

        assert burst.refused_attempts > 0, "the kill interrupted the burst"
        assert_exactly_once(running, sink, burst, running.database_url)
    finally:
        running.stop()
