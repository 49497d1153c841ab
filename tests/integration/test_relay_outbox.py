"""The outbound edge over real SMTP: each outbox row reaches the relay exactly once.

A real aiosmtpd sink listens on loopback; the outbox lives in SQLite in
``tmp_path``; time is a fake clock passed as ``now`` (nothing sleeps).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

from gateway import outbox
from gateway.compose import Identity, build_mail
from gateway.database import Database, upgrade
from gateway.inbound import accept
from gateway.models import OUTBOX, OutboxRow, OutboxStatus
from gateway.outbox import add_to_outbox, retry_delay, send_one
from gateway.recovery import sweep
from gateway.relay import (
    CommitPoint,
    Delivery,
    EmlFolder,
    SmtpRelay,
    Transport,
    Waiting,
    _send_now,
)
from tests.conftest import Sink, free_port
from tests.deployment import ROOT

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
IDENTITY = Identity("support@example.com", "helpdesk.example.com", "loop-token")
CUSTOMER = "alice@customer.example"


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path}/t.sqlite3")
    upgrade(database.engine)
    yield database
    database.dispose()


def relay_to(sink: Sink) -> SmtpRelay:
    return SmtpRelay(sink.host, sink.port, timeout=5, local_hostname="gateway.test")


def queue(database: Database, key: str = "ack:1") -> int:
    """One pending acknowledgement in the outbox, as the pipeline leaves it."""
    mail = build_mail(
        identity=IDENTITY, to=CUSTOMER, subject=f"[HD-000001] {key}",
        text="Your request is now case HD-000001.\n", html="<p>HD-000001</p>\n", date=T0,
        in_reply_to="m1@customer.example",
    )
    with database.transaction() as connection:
        return add_to_outbox(connection, key=key, kind="acknowledgement", mail=mail,
                             case_id=None, now=T0)


def row(database: Database, outbox_id: int) -> OutboxRow:
    with database.session() as session:
        found = session.get(OutboxRow, outbox_id)
        assert found is not None
        return found


def row_once(database: Database, outbox_id: int, status: str) -> OutboxRow:
    """The row, once another thread or process has given it ``status`` (within 10 s)."""
    deadline = time.monotonic() + 10
    while (found := row(database, outbox_id)).status != status:
        assert time.monotonic() < deadline, found.status
        time.sleep(0.05)
    return found


def send(database, transport: Transport, outbox_id: int, now: datetime = T0,
         max_attempts: int = 12) -> tuple[Delivery | None, timedelta | None]:
    return send_one(database, transport, outbox_id, now, max_attempts=max_attempts)


@dataclass
class Recorder:
    """A dispatcher for the recovery sweep that only notes what it is handed."""

    processed: list[int] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)

    def process(self, inbound_id: int) -> None:
        self.processed.append(inbound_id)

    def send(self, outbox_id: int, delay: timedelta | None = None) -> None:
        self.sent.append(outbox_id)

    def waiting(self) -> int:
        return self.queued

    queued: int = 0
    """What the broker is taken to hold."""


class Interrupting:
    """A real transport whose commit point lets something happen around the commit.

    ``before_commit`` runs between the DATA body and the commit point, where a
    crash or a competing sender would strike; it may raise to simulate the
    process dying. ``after_release`` runs once the mail has been let go (the
    final dot), before "sent" is committed.
    """

    def __init__(self, inner: Transport, before_commit=lambda: None,
                 after_release=lambda: None) -> None:
        self.inner = inner
        self.answer_within = inner.answer_within
        self.before_commit = before_commit
        self.after_release = after_release

    def deliver(self, sender: str, recipients: Sequence[str], raw: bytes,
                commit: CommitPoint, waiting: Waiting | None = None) -> Delivery:
        def interrupted(release) -> bool:
            self.before_commit()

            def step() -> None:
                release()
                self.after_release()

            return commit(step)

        return self.inner.deliver(sender, recipients, raw, interrupted, waiting)


def committed(release) -> bool:
    """A commit point that always commits."""
    release()
    return True


class Killed(Exception):
    """The sender process dies here."""


# --- delivered exactly once -----------------------------------------------------------------


class ClosingAfterEachMail:
    """A relay that closes every connection just after accepting one mail, as a
    relay with a per-connection limit or one restarting between two mails does."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.connections = 0
        self.hung_up = threading.Event()

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.connections += 1
        session.host_name = hostname
        return responses

    async def handle_DATA(self, server, session, envelope) -> str:
        self.received.append(envelope.original_content)
        self.hung_up.clear()

        def hang_up() -> None:
            server.transport.close()
            self.hung_up.set()

        asyncio.get_running_loop().call_soon(hang_up)  # once the reply is on its way
        return "250 OK"


def test_reused_connection_closed_by_the_relay_sends_over_a_new_one(database):
    # Given a relay that hangs up after each mail, and two acknowledgements
    handler = ClosingAfterEachMail()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        relay = SmtpRelay("127.0.0.1", controller.port, timeout=5, local_hostname="gateway.test")
        first, second = queue(database, "ack:1"), queue(database, "ack:2")
        # When both are sent one after the other, the second on the connection kept idle
        delivered = [send(database, relay, first)[0]]
        assert handler.hung_up.wait(5)
        delivered.append(send(database, relay, second)[0])
        relay.close()
    finally:
        controller.stop()
    # Then each went out once, the second over a new connection, with no retry
    assert [d.outcome if d else None for d in delivered] == ["sent", "sent"]
    assert len(handler.received) == 2
    assert handler.connections == 2
    assert row(database, second).attempts == 1




def test_row_is_delivered_once(database, sink):
    # Given a pending acknowledgement
    outbox_id = queue(database)
    # When it is sent
    delivery, delay = send(database, relay_to(sink), outbox_id)
    # Then the sink has it, byte for byte, and the row says sent
    assert delivery is not None and delivery.outcome == "sent"
    assert delay is None
    [received] = sink.messages
    assert received.sender == "support@example.com"
    assert received.recipients == [CUSTOMER]
    assert received.message["Message-ID"] == f"<{row(database, outbox_id).message_id}>"
    assert received.message["Subject"] == "[HD-000001] ack:1"
    sent = row(database, outbox_id)
    assert (sent.status, sent.attempts, sent.sent_at, sent.last_error) == (
        OutboxStatus.SENT, 1, T0, None
    )


def test_a_row_created_claimed_is_sent_by_its_holder_and_released_only_unsent(database, sink):
    # Given a row created already claimed, as processing creates its acknowledgement
    held = outbox.claim_token()
    mail = build_mail(
        identity=IDENTITY, to=CUSTOMER, subject="[HD-000007] ack:7",
        text="Case HD-000007.\n", html="<p>HD-000007</p>\n", date=T0,
    )
    with database.transaction() as connection:
        outbox_id = add_to_outbox(connection, key="ack:7", kind="acknowledgement",
                                  mail=mail, case_id=None, now=T0, claim=held)
    claimed = outbox.claimed_row(outbox_id, held, mail)
    # Then nobody else can claim it
    assert send(database, relay_to(sink), outbox_id) == (None, None)
    # And released unsent, it is pending and due, its attempt not counted
    assert outbox.release(database, claimed, T0)
    released = row(database, outbox_id)
    assert (released.status, released.claim, released.attempts) == (OutboxStatus.PENDING, None, 0)
    # When its holder had sent it instead, the row stays sent: a release finds nothing
    claimed = outbox.claim(database, outbox_id, T0)
    assert claimed is not None
    delivery, _ = outbox.send_claimed(database, relay_to(sink), claimed, T0, max_attempts=3)
    assert delivery is not None and delivery.outcome == "sent"
    assert not outbox.release(database, claimed, T0)
    assert row(database, outbox_id).status == OutboxStatus.SENT
    assert len(sink.messages) == 1


def test_sending_twice_in_a_row_sends_once(database, sink):
    outbox_id = queue(database)
    first, _ = send(database, relay_to(sink), outbox_id)
    second, _ = send(database, relay_to(sink), outbox_id, T0 + timedelta(hours=1))
    assert first is not None and first.outcome == "sent"
    assert second is None  # not ours to send: it is no longer pending
    assert len(sink.messages) == 1
    assert row(database, outbox_id).attempts == 1


def test_two_senders_at_once_send_once(database, sink):
    # Given one row and two workers that start at the same moment (a broker redelivery)
    outbox_id = queue(database)
    start = threading.Barrier(2)
    results: list[Delivery | None] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            start.wait(timeout=10)
            results.append(send(database, relay_to(sink), outbox_id)[0])
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    # When both send it
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    # Then exactly one of them delivered it, once
    assert errors == []
    outcomes = sorted(str(r.outcome) if r else "none" for r in results)
    assert outcomes == ["none", "sent"]
    assert len(sink.messages) == 1
    assert row(database, outbox_id).status == OutboxStatus.SENT


def test_commit_refused_delivers_nothing(sink):
    # Given a commit point that finds the row taken by another sender
    relay = relay_to(sink)
    # When the relay delivers with it
    delivery = relay.deliver("support@example.com", [CUSTOMER], b"Subject: x\r\n\r\nx\r\n",
                             lambda release: False)
    # Then the transaction is dropped before the final dot: nothing arrives
    assert delivery == Delivery("aborted", "row no longer held by this sender")
    assert sink.messages == []


def test_row_taken_by_another_sender_mid_send_is_not_delivered(database, sink):
    # Given a sender whose claim goes stale mid-send and is released by the recovery sweep
    outbox_id = queue(database)

    def sweep_meanwhile() -> None:
        sweep(database, Recorder(), T0, timedelta(0))

    transport = Interrupting(relay_to(sink), sweep_meanwhile)
    # When it reaches its commit point
    delivery, _ = send(database, transport, outbox_id)
    # Then it aborts, delivers nothing, and leaves the row to the next sender
    assert delivery is not None and delivery.outcome == "aborted"
    assert sink.messages == []
    assert row(database, outbox_id).status == OutboxStatus.PENDING
    again, _ = send(database, relay_to(sink), outbox_id)
    assert again is not None and again.outcome == "sent"
    assert len(sink.messages) == 1


def test_one_sweep_hands_out_a_backlog_larger_than_its_batch_each_once(database):
    """After a long broker outage the backlog may be far larger than a batch;
    one sweep hands it all out, page by page, each id once (even at start-up,
    stale_after zero, when the rows it has just touched are as due as ever)."""
    inbound = [accept(database, f"Message-ID: <m{n}@x>\r\n\r\nx\r\n".encode(),
                      source="smtp", sender=CUSTOMER, recipients=["support@example.com"],
                      now=T0) for n in range(10)]
    pending = [queue(database, key=f"ack:{n}") for n in range(7)]
    stale = [queue(database, key=f"ack:stale{n}") for n in range(2)]
    for outbox_id in stale:
        assert outbox.claim(database, outbox_id, T0) is not None  # its sender died
    dispatch = Recorder()
    report = sweep(database, dispatch, T0 + timedelta(seconds=1), timedelta(0), batch=3)
    assert dispatch.processed == inbound
    assert sorted(dispatch.sent) == sorted([*pending, *stale])
    assert (report.inbound, report.outbox, report.reclaimed) == (10, 7, 2)


@pytest.mark.parametrize(("queued", "handed"), [(500, 3), (2, 8), (0, 10)])
def test_a_sweep_hands_out_the_stale_rows_the_broker_cannot_hold(database, queued, handed):
    """A backlog that waits in the queue longer than stale_after looks stale; were
    all of it handed out at each sweep, it would be queued many times over. Of
    ten stale rows, a broker holding two messages holds at most two: eight
    are lost (a Redis restarted empty while new mail came in), and go."""
    inbound = [accept(database, f"Message-ID: <m{n}@x>\r\n\r\nx\r\n".encode(),
                      source="smtp", sender=CUSTOMER, recipients=["support@example.com"],
                      now=T0) for n in range(10)]
    dispatch = Recorder(queued=queued)
    report = sweep(database, dispatch, T0 + timedelta(seconds=1), timedelta(0), batch=3)
    assert report.inbound == handed
    assert dispatch.processed == inbound[:handed]  # the oldest first


def test_crash_before_the_commit_point_sends_nothing_and_recovery_sends_once(database, sink):
    # Given a sender that dies between the DATA body and its commit
    outbox_id = queue(database)

    def die() -> None:
        raise Killed("process killed")

    # When it tries to send
    with pytest.raises(Killed):
        send(database, Interrupting(relay_to(sink), die), outbox_id)
    # Then nothing reached the relay and the row is still held
    assert sink.messages == []
    assert row(database, outbox_id).status == OutboxStatus.SENDING
    # When the recovery sweep runs (a restart: stale_after zero)
    dispatch = Recorder()
    report = sweep(database, dispatch, T0 + timedelta(seconds=1), timedelta(0))
    # Then the row is pending again and handed out
    assert report.reclaimed == 1
    assert dispatch.sent == [outbox_id]
    assert row(database, outbox_id).status == OutboxStatus.PENDING
    # And the next send delivers it exactly once
    delivery, _ = send(database, relay_to(sink), outbox_id, T0 + timedelta(seconds=1))
    assert delivery is not None and delivery.outcome == "sent"
    assert len(sink.messages) == 1
    assert send(database, relay_to(sink), outbox_id, T0 + timedelta(seconds=2)) == (None, None)
    assert len(sink.messages) == 1


# --- the final dot and the commit -------------------------------------------------------------


def test_final_dot_goes_out_just_before_sent_is_committed(database, sink):
    outbox_id = queue(database)
    seen: list[tuple[int, str | None]] = []

    def look() -> None:  # a reader beside the sender, which holds the writer's place
        with database.reading() as connection:
            status = connection.scalar(select(OUTBOX.c.status).where(OUTBOX.c.id == outbox_id))
        seen.append((len(sink.wait_for(1, timeout=5)), status))

    delivery, _ = send(database, Interrupting(relay_to(sink), after_release=look), outbox_id)
    # When the dot had gone, the relay had the mail and the row was not yet sent;
    # a kill there is the one moment that would send it twice.
    assert seen == [(1, OutboxStatus.SENDING)]
    assert delivery is not None and delivery.outcome == "sent"
    assert row(database, outbox_id).status == OutboxStatus.SENT
    assert len(sink.messages) == 1


def losing_the_commit_after_the_dot(monkeypatch, database: Database, *, stays_away: bool):
    """The database fails to commit just after the dot went out; and, if it
    ``stays_away``, every use of it fails from then on."""
    real = outbox.commit_right_after

    def lost(connection, step) -> None:
        step()
        monkeypatch.setattr(outbox, "commit_right_after", real)
        if stays_away:
            monkeypatch.setattr(database, "connect", away)
        raise OperationalError("COMMIT", None, Exception("server closed the connection"))

    def away():
        raise OperationalError("connect", None, Exception("connection refused"))

    monkeypatch.setattr(outbox, "commit_right_after", lost)


def away_after_the_commit(monkeypatch, database: Database, *, answer_lost: bool) -> None:
    """The COMMIT of "sent" is made (its answer lost, if ``answer_lost``: the caller
    is told it failed); then the database is away for a second."""
    real_commit, real_connect = outbox.commit_right_after, database.connect
    back_at: list[float] = []

    def committed_then_away(connection, step) -> None:
        real_commit(connection, step)
        monkeypatch.setattr(outbox, "commit_right_after", real_commit)
        back_at.append(time.monotonic() + 1.0)
        if answer_lost:
            raise OperationalError("COMMIT", None, Exception("server closed the connection"))

    def connect():
        if back_at and time.monotonic() < back_at[0]:
            raise OperationalError("connect", None, Exception("connection refused"))
        return real_connect()

    monkeypatch.setattr(outbox, "commit_right_after", committed_then_away)
    monkeypatch.setattr(database, "connect", connect)


def test_commit_lost_after_the_dot_is_recorded_when_the_database_answers_again(
    database, sink, monkeypatch, caplog
):
    # Given a database that fails to commit "sent" just after the dot went out
    caplog.set_level(logging.INFO, logger="gateway.outbox")
    outbox_id = queue(database)
    losing_the_commit_after_the_dot(monkeypatch, database, stays_away=False)
    # When the row is sent
    delivery, delay = send(database, relay_to(sink), outbox_id)
    # Then the relay's reply was read, and "sent" recorded on the next try: once
    assert delivery is not None and delivery.outcome == "sent" and delay is None
    assert row(database, outbox_id).status == OutboxStatus.SENT
    assert f"outbox {outbox_id}: handed over, but 'sent' could not be recorded" in caplog.text
    assert f"outbox {outbox_id}: 'sent' recorded after all" in caplog.text
    assert send(database, relay_to(sink), outbox_id, T0 + timedelta(seconds=1)) == (None, None)
    sweep(database, Recorder(), T0 + timedelta(hours=1), timedelta(0))
    assert len(sink.wait_for(1, timeout=5)) == 1


def test_commit_lost_after_the_dot_for_longer_than_the_wait_goes_again(
    database, sink, monkeypatch, caplog
):
    # Given a database that goes away just after the dot, for longer than the
    # sender waits for it
    outbox_id = queue(database)
    monkeypatch.setattr(outbox, "RECORD_SENT_WITHIN", 0.0)
    losing_the_commit_after_the_dot(monkeypatch, database, stays_away=True)
    # When the row is sent, the failure reaches the caller (the actor is retried)
    with pytest.raises(OperationalError):
        send(database, relay_to(sink), outbox_id)
    # Then the relay has the mail, the row is still held, and the log says why it may repeat
    assert len(sink.wait_for(1, timeout=5)) == 1
    monkeypatch.undo()
    assert row(database, outbox_id).status == OutboxStatus.SENDING
    assert f"outbox {outbox_id}: handed over, but 'sent' could not be recorded" in caplog.text
    assert f"outbox {outbox_id}: the database stays away; the mail goes again" in caplog.text
    # And once recovered it goes again: at least once, never lost
    sweep(database, Recorder(), T0 + timedelta(seconds=1), timedelta(0))
    again, _ = send(database, relay_to(sink), outbox_id, T0 + timedelta(seconds=1))
    assert again is not None and again.outcome == "sent"
    assert len(sink.wait_for(2, timeout=5)) == 2


class AnsweringLate:
    """A relay that takes every mail and answers its end after ``delay`` seconds."""

    def __init__(self, delay: float, reply: str = "250 OK") -> None:
        self.delay, self.reply = delay, reply
        self.received: list[bytes] = []
        self.took = threading.Event()

    async def handle_DATA(self, server, session, envelope) -> str:
        self.received.append(envelope.original_content)
        self.took.set()
        await asyncio.sleep(self.delay)
        return self.reply


@contextlib.contextmanager
def relay_answering_late(delay: float, reply: str = "250 OK") -> Iterator[
        tuple[AnsweringLate, SmtpRelay]]:
    handler = AnsweringLate(delay, reply)
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    relay = SmtpRelay("127.0.0.1", controller.port, timeout=5, end_of_data_timeout=10)
    try:
        yield handler, relay
    finally:
        relay.close()
        controller.stop()


def test_commit_lost_after_the_dot_keeps_the_row_from_the_sweep_while_the_relay_answers(
    database, monkeypatch, caplog
):
    # Given a database that fails to commit "sent" just after the dot (and is back at
    # once), and a relay that takes its time to answer the end of the mail
    caplog.set_level(logging.INFO, logger="gateway.outbox")
    outbox_id = queue(database)
    losing_the_commit_after_the_dot(monkeypatch, database, stays_away=False)
    with relay_answering_late(1.5) as (handler, relay):
        sent: list[tuple[Delivery | None, timedelta | None]] = []
        sender = threading.Thread(target=lambda: sent.append(send(database, relay, outbox_id)))
        sender.start()
        assert handler.took.wait(5)
        # When the recovery sweep runs while the sender waits, long after the claim
        waiting = row_once(database, outbox_id, OutboxStatus.AWAITING)
        handed = Recorder()
        sweep(database, handed, T0 + timedelta(minutes=5), timedelta(seconds=60))
        sender.join(10)
    # Then the row was awaiting the relay's answer meanwhile, and the sweep left it alone
    assert (waiting.status, waiting.sent_at) == (OutboxStatus.AWAITING, T0)
    assert handed.sent == []
    # And once the relay's 250 came, it is recorded as sent: delivered once
    [(delivery, _)] = sent
    assert delivery is not None and delivery.outcome == "sent"
    assert (row(database, outbox_id).status, row(database, outbox_id).last_error) == (
        OutboxStatus.SENT, None)
    assert f"outbox {outbox_id}: 'sent' recorded after all" in caplog.text
    assert len(handler.received) == 1


@pytest.mark.parametrize(("reply", "outcome", "kept"), [
    ("252 2.0.0 queued as 4F2A", "sent", OutboxStatus.SENT),
    ("hello? 250 OK", "unconfirmed", OutboxStatus.UNCONFIRMED),
])
def test_an_odd_answer_to_the_end_of_a_mail_never_sends_it_again(database, reply, outcome, kept):
    # Given a relay whose answer to the end of a mail is a 2xx other than 250, or no
    # SMTP reply at all
    outbox_id = queue(database)
    with relay_answering_late(0.0, reply) as (handler, relay):
        # When the row is sent, and tried again later
        delivery, delay = send(database, relay, outbox_id)
        assert send(database, relay, outbox_id, T0 + timedelta(days=1)) == (None, None)
    # Then a 2xx is taken as sent, and no reply as unconfirmed: the relay has it once
    assert delivery is not None and (delivery.outcome, delay) == (outcome, None)
    assert row(database, outbox_id).status == kept
    assert len(handler.received) == 1


@pytest.mark.parametrize(("reply", "kept"), [
    ("250 2.0.0 queued after scanning", OutboxStatus.SENT),
    ("451 4.7.1 scanner busy, try later", OutboxStatus.PENDING),
    ("550 5.7.1 content rejected", OutboxStatus.FAILED),
])
def test_a_slow_answer_to_the_end_is_awaited_in_the_open_and_then_recorded(
    database, reply, kept
):
    # Given a relay that scans each mail before it answers its end
    outbox_id = queue(database)
    with relay_answering_late(1.5, reply) as (handler, relay):
        sent: list[tuple[Delivery | None, timedelta | None]] = []
        sender = threading.Thread(target=lambda: sent.append(send(database, relay, outbox_id)))
        sender.start()
        assert handler.took.wait(5)
        # When it has not answered a second after the end, the row says its answer is
        # awaited (not yet "sent"), and the sweep leaves it alone however late it runs
        row_once(database, outbox_id, OutboxStatus.AWAITING)
        handed = Recorder()
        sweep(database, handed, T0 + timedelta(hours=1), timedelta(seconds=60))
        sender.join(10)
    assert handed.sent == []
    # Then what the relay answered is recorded, and the mail went once
    assert row(database, outbox_id).status == kept
    assert len(handler.received) == 1


@pytest.mark.parametrize(("answer_lost", "reply", "kept"), [
    (True, "451 4.3.0 try later", OutboxStatus.PENDING),
    (False, "550 5.7.1 rejected by the content filter", OutboxStatus.FAILED),
], ids=["commit-answer-lost", "commit-answered"])
def test_a_refusal_after_the_commit_outlasts_a_moment_without_the_database(
    database, monkeypatch, answer_lost, reply, kept
):
    # Given "sent" committed with the dot (its answer lost, or not), the database away
    # for a moment right after, and a relay that refuses the mail's end
    away_after_the_commit(monkeypatch, database, answer_lost=answer_lost)
    outbox_id = queue(database)
    with relay_answering_late(0.2, reply) as (_, relay):
        # When the row is sent
        delivery, delay = send(database, relay, outbox_id)
    # Then the refusal is recorded over the "sent" once the database is back
    assert delivery is not None and f"{delivery.detail}" == reply
    refused = row(database, outbox_id)
    assert (refused.status, refused.last_error, refused.sent_at) == (kept, reply, None)
    if kept == OutboxStatus.PENDING:
        assert refused.next_attempt_at == T0 + timedelta(seconds=30) == T0 + delay


def test_a_sender_killed_while_the_relay_scans_leaves_the_mail_for_a_person(tmp_path):
    # Given a relay that scans each mail for three seconds, then refuses it
    path = tmp_path / "killed.sqlite3"
    database = Database(f"sqlite:///{path}")
    upgrade(database.engine)
    outbox_id = queue(database)
    with relay_answering_late(3.0, "550 5.7.1 content rejected") as (handler, relay):
        # When a sender process hands the mail over and is killed while it waits
        sender = subprocess.Popen([sys.executable, "-c", (
            "from gateway.database import Database\n"
            "from gateway.outbox import send_one\n"
            "from gateway.relay import SmtpRelay\n"
            "from tests.integration.test_relay_outbox import T0\n"
            f"send_one(Database('sqlite:///{path}'), SmtpRelay('127.0.0.1', {relay.port}),"
            f" {outbox_id}, T0, max_attempts=12)\n"
        )], cwd=ROOT)
        try:
            assert handler.took.wait(20)
            row_once(database, outbox_id, OutboxStatus.AWAITING)
        finally:
            sender.kill()
            sender.wait()
    # Then the row does not say "sent" for the mail the relay went on to refuse, and says
    # when its sender would have given up: its ten minutes' wait, and then the time to
    # record the wait and the answer
    awaiting = row(database, outbox_id)
    assert awaiting.status == OutboxStatus.AWAITING
    gives_up = awaiting.next_attempt_at - T0
    least = timedelta(seconds=600 + outbox.AFTER_THE_END)
    assert least < gives_up < least + timedelta(seconds=20), gives_up
    # And once it has, and the sweep's margin with it, the sweep hands it to a person
    minute = timedelta(minutes=1)
    assert outbox.abandoned_waits(database, T0 + gives_up, minute) == []
    assert outbox.abandoned_waits(database, T0 + gives_up + minute, minute) == [outbox_id]
    assert row(database, outbox_id).status == OutboxStatus.UNCONFIRMED
    database.dispose()


def test_a_wait_its_sender_gave_up_becomes_unconfirmed_and_unclaimed(database):
    # Given three rows awaiting the relay's answer: one whose sender gave up two minutes
    # ago, one whose sender gives up in a moment, and one whose sender began before
    # this process started
    started = T0 - timedelta(minutes=5)
    gave_up, waits, before = (queue(database, f"ack:{n}") for n in range(3))
    with database.transaction() as connection:
        for outbox_id, began, gives_up in (
            (gave_up, T0 - timedelta(minutes=12), T0 - timedelta(minutes=2)),
            (waits, T0 - timedelta(minutes=2), T0 + timedelta(seconds=5)),
            (before, started - timedelta(seconds=1), T0 + timedelta(minutes=8)),
        ):
            connection.execute(update(OUTBOX).where(OUTBOX.c.id == outbox_id).values(
                status=OutboxStatus.AWAITING, sent_at=began, next_attempt_at=gives_up,
                claim="a sender"))
    # When the sweep looks, with a minute's margin
    assert outbox.abandoned_waits(database, T0, timedelta(minutes=1)) == [gave_up]
    # Then the abandoned one is unconfirmed, for a person, no longer held by its sender
    abandoned = row(database, gave_up)
    assert (abandoned.status, abandoned.last_error, abandoned.claim) == (
        OutboxStatus.UNCONFIRMED, outbox.SENDER_STOPPED, None)
    assert row(database, waits).status == OutboxStatus.AWAITING
    # And a process whose senders are all its own finds the one from before it started
    assert outbox.abandoned_waits(database, T0, timedelta(minutes=1),
                                  began_before=started) == [before]


class Trickling:
    """A relay whose answer to the end of a mail comes a line at a time."""

    def __init__(self, lines: list[str], pause: float) -> None:
        self.lines, self.pause = lines, pause
        self.received: list[bytes] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.received.append(envelope.original_content)
        for line in self.lines[:-1]:
            await server.push(line)
            await asyncio.sleep(self.pause)
        return self.lines[-1]


@pytest.mark.parametrize(("lines", "pause", "outcome", "kept"), [
    # A whole answer after a slow start: awaited in the open, then recorded
    (["550-5.7.1 the content filter", "550 5.7.1 rejected it"], 1.5, "permanent",
     OutboxStatus.FAILED),
    # One that trickles in for longer than the relay is given in all
    ([f"250-{n}" for n in range(8)] + ["250 OK"], 0.4, "unconfirmed", OutboxStatus.UNCONFIRMED),
], ids=["slow-to-finish", "trickling-past-the-wait"])
def test_an_answer_is_whole_within_the_wait_or_unconfirmed(database, lines, pause, outcome, kept):
    handler = Trickling(lines, pause)
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        relay = SmtpRelay("127.0.0.1", controller.port, timeout=2, end_of_data_timeout=2)
        outbox_id = queue(database)
        seen: list[str] = []
        sender = threading.Thread(target=lambda: seen.append(
            send(database, relay, outbox_id)[0].outcome))  # type: ignore[union-attr]
        sender.start()
        statuses = set()
        while sender.is_alive():
            statuses.add(row(database, outbox_id).status)
            time.sleep(0.05)
        relay.close()
    finally:
        controller.stop()
    assert seen == [outcome]
    assert OutboxStatus.AWAITING in statuses  # not whole after a second: said so
    assert row(database, outbox_id).status == kept
    assert len(handler.received) == 1


@pytest.mark.parametrize(("raw", "arrives"), [
    # Lines that begin with a dot, one a lone dot that would end the DATA early
    (b"Subject: dots\r\n\r\n.\r\n..two\r\n.tail", b"Subject: dots\r\n\r\n.\r\n..two\r\n.tail\r\n"),
    # Bare LF line ends, and a dot at the very start of the mail
    (b".X: y\nSubject: lf\n\nOne.\n.Two.\n", b".X: y\r\nSubject: lf\r\n\r\nOne.\r\n.Two.\r\n"),
    # Already as SMTP wants it
    (b"Subject: plain\r\n\r\nPlain.\r\n", b"Subject: plain\r\n\r\nPlain.\r\n"),
])
def test_the_relay_receives_each_line_as_written(sink, raw, arrives):
    delivery = relay_to(sink).deliver("s@x.example", [CUSTOMER], raw, committed)
    assert delivery.outcome == "sent"
    assert [(m.sender, m.recipients, m.raw) for m in sink.messages] == [
        ("s@x.example", [CUSTOMER], arrives)
    ]


def test_send_now_sends_everything():
    left, right = socket.socketpair()
    with left, right:
        left.settimeout(5)
        _send_now(left, b".\r\n")
        assert right.recv(16) == b".\r\n"


def test_send_now_waits_its_turn_when_the_socket_is_full():
    # Given a socket whose send buffer is full (a relay slow to read the body)
    left, right = socket.socketpair()
    with left, right:
        left.setblocking(False)
        filled = 0
        with contextlib.suppress(BlockingIOError):
            while True:
                filled += left.send(b"x" * 65536)
        left.settimeout(5)
        received = bytearray()

        def drain() -> None:
            while len(received) < filled + 3:
                received.extend(right.recv(1 << 20))

        reader = threading.Thread(target=drain)
        reader.start()
        # When the dot is sent, it still goes, once the peer reads
        _send_now(left, b".\r\n")
        reader.join(timeout=10)
        assert bytes(received[-3:]) == b".\r\n"
        assert len(received) == filled + 3


# --- refusals and retries --------------------------------------------------------------------


def test_temporary_refusal_is_retried_after_backoff(database, sink):
    # Given a relay that says "try later"
    outbox_id = queue(database)
    sink.handler.reply = "451 4.3.0 try later"
    # When the row is sent
    delivery, delay = send(database, relay_to(sink), outbox_id)
    # Then it is pending again, due after the first backoff, with the reason
    assert delivery == Delivery("temporary", "451 4.3.0 try later")
    assert delay == timedelta(seconds=30)
    waiting = row(database, outbox_id)
    assert waiting.status == OutboxStatus.PENDING
    assert waiting.attempts == 1
    assert waiting.next_attempt_at == T0 + delay
    assert waiting.next_attempt_at > T0
    assert waiting.last_error == "451 4.3.0 try later"
    assert waiting.sent_at is None and waiting.claim is None
    assert sink.messages == []
    # When it is tried again before it is due, nothing happens
    assert send(database, relay_to(sink), outbox_id, T0 + timedelta(seconds=10)) == (None, None)
    # When the relay has recovered and the row is due
    sink.handler.reply = "250 OK"
    delivery, delay = send(database, relay_to(sink), outbox_id, T0 + timedelta(seconds=31))
    # Then it is delivered once, on the second attempt
    assert delivery is not None and delivery.outcome == "sent"
    sent = row(database, outbox_id)
    assert (sent.status, sent.attempts, sent.sent_at) == (
        OutboxStatus.SENT, 2, T0 + timedelta(seconds=31)
    )
    assert sent.last_error is None
    assert len(sink.messages) == 1


def test_permanent_refusal_fails_the_row_with_the_reason(database, sink):
    outbox_id = queue(database)
    sink.handler.reply = "550 5.1.1 no such user"
    delivery, delay = send(database, relay_to(sink), outbox_id)
    assert delivery == Delivery("permanent", "550 5.1.1 no such user")
    assert delay is None
    failed = row(database, outbox_id)
    assert failed.status == OutboxStatus.FAILED
    assert failed.last_error == "550 5.1.1 no such user"
    assert failed.sent_at is None
    assert send(database, relay_to(sink), outbox_id, T0 + timedelta(days=1)) == (None, None)


class SilentAfterTheEnd:
    """A relay that takes a mail's end and never answers it: it hangs up, or it
    stays silent (stuck scanning or queueing the mail, or the network lost)."""

    def __init__(self, hang_up: bool) -> None:
        self.hang_up = hang_up
        self.received: list[bytes] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.received.append(envelope.original_content)
        if self.hang_up:
            server.transport.close()
        else:
            await asyncio.sleep(3600)  # cancelled when the controller stops
        return "250 OK"


@pytest.mark.parametrize("hang_up", [True, False], ids=["hangs-up", "stays-silent"])
def test_a_mail_whose_end_the_relay_never_answers_is_unconfirmed_and_not_sent_again(
    database, hang_up, caplog
):
    # Given a relay that takes the whole mail and never answers its end
    handler = SilentAfterTheEnd(hang_up)
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        relay = SmtpRelay("127.0.0.1", controller.port, timeout=0.5, end_of_data_timeout=0.5)
        outbox_id = queue(database)
        # When the row is sent
        delivery, delay = send(database, relay, outbox_id)
        # Then the delivery is unconfirmed, and says why
        assert delivery is not None and delivery.outcome == "unconfirmed", delivery
        assert delay is None
        assert delivery.detail.startswith(
            f"relay 127.0.0.1:{controller.port} did not answer the end of the mail: ")
        # And the row says so, not sent again by a later send, nor by the recovery sweep
        # long after (the relay may have delivered it)
        unconfirmed = row(database, outbox_id)
        assert (unconfirmed.status, unconfirmed.attempts, unconfirmed.sent_at) == (
            OutboxStatus.UNCONFIRMED, 1, T0)
        assert unconfirmed.last_error == delivery.detail
        later = T0 + timedelta(days=1)
        assert send(database, relay, outbox_id, later) == (None, None)
        handed = Recorder()
        sweep(database, handed, later, timedelta(seconds=60))
        assert handed.sent == []
        relay.close()
    finally:
        controller.stop()
    assert len(handler.received) == 1
    assert "it may have been delivered, and is not sent again by itself" in caplog.text


def test_a_slow_answer_to_the_end_is_waited_for_longer_than_other_replies(database):
    # Given a relay that answers every command at once, but the end of a mail slowly
    class Slow:
        async def handle_DATA(self, server, session, envelope) -> str:
            await asyncio.sleep(1.0)
            return "250 OK queued"

    controller = Controller(Slow(), hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        # When a mail goes through a relay whose replies time out after a quarter second
        relay = SmtpRelay("127.0.0.1", controller.port, timeout=0.25, end_of_data_timeout=5)
        outbox_id = queue(database)
        delivery, _ = send(database, relay, outbox_id)
        relay.close()
    finally:
        controller.stop()
    # Then it is sent: the end of the mail has the longer wait (RFC 5321's ten minutes)
    assert delivery is not None and delivery.outcome == "sent", delivery
    assert row(database, outbox_id).status == OutboxStatus.SENT


BOB = "bob@customer.example"


def queue_to_two(database: Database) -> int:
    """A pending row addressed to ``CUSTOMER`` and ``BOB``."""
    mail = replace(
        build_mail(identity=IDENTITY, to=CUSTOMER, subject="[HD-000001] note",
                   text="A note.\n", html="<p>A note.</p>\n", date=T0),
        recipients=(CUSTOMER, BOB),
    )
    with database.transaction() as connection:
        return add_to_outbox(connection, key="note:1", kind="note", mail=mail,
                             case_id=None, now=T0)


def test_recipients_refused_beside_others_are_recorded_on_the_sent_row(database, sink, caplog):
    # Given a relay that takes the mail for one recipient and refuses the other
    outbox_id = queue_to_two(database)
    sink.handler.refuse[BOB] = "550 5.1.1 no such user"
    # When the row is sent
    delivery, delay = send(database, relay_to(sink), outbox_id)
    # Then the mail went to the one, once, and the row says who refused it and why
    assert delivery is not None and delivery.outcome == "sent" and delay is None
    assert delivery.refused == (f"{BOB}: 550 5.1.1 no such user",)
    assert [m.recipients for m in sink.messages] == [[CUSTOMER]]
    sent = row(database, outbox_id)
    assert (sent.status, sent.sent_at) == (OutboxStatus.SENT, T0)
    assert sent.last_error == f"refused for some recipients: {BOB}: 550 5.1.1 no such user"
    assert f"outbox {outbox_id}: sent, but refused for {BOB}" in caplog.text
    # And it is not sent again
    assert send(database, relay_to(sink), outbox_id, T0 + timedelta(days=1)) == (None, None)


@pytest.mark.parametrize(("bob_reply", "outcome", "status"), [
    ("450 4.2.1 mailbox busy", "temporary", OutboxStatus.PENDING),
    ("553 5.7.1 not here", "permanent", OutboxStatus.FAILED),
])
def test_a_mail_refused_for_every_recipient_fails_temporarily_if_any_refusal_is(
    database, sink, bob_reply, outcome, status
):
    # Given a relay that refuses both recipients, the first for good
    outbox_id = queue_to_two(database)
    sink.handler.refuse.update({CUSTOMER: "550 5.1.1 no such user", BOB: bob_reply})
    # When the row is sent
    delivery, _ = send(database, relay_to(sink), outbox_id)
    # Then nothing is delivered, and each refusal is named in the reason
    reason = f"{CUSTOMER}: 550 5.1.1 no such user; {BOB}: {bob_reply}"
    assert delivery == Delivery(outcome, reason)
    assert sink.messages == []
    refused = row(database, outbox_id)
    assert (refused.status, refused.last_error, refused.sent_at) == (status, reason, None)


def test_connection_refused_is_temporary(database):
    # Given no relay listening on the port
    outbox_id = queue(database)
    port = free_port()
    # When the row is sent
    delivery, delay = send(database, SmtpRelay("127.0.0.1", port, timeout=5), outbox_id)
    # Then it will be tried again later
    assert delivery is not None and delivery.outcome == "temporary"
    assert delivery.detail.startswith(f"relay 127.0.0.1:{port}: ")
    assert delay == timedelta(seconds=30)
    assert row(database, outbox_id).status == OutboxStatus.PENDING


@pytest.fixture
def refusing_greeter() -> Iterator[int]:
    """A server on loopback that greets every connection with 554 and hangs up."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                if stop.is_set():
                    return
                connection.sendall(b"554 5.7.1 no service for you\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    yield port
    stop.set()
    socket.create_connection(("127.0.0.1", port)).close()  # wake the accept() to stop
    thread.join(timeout=5)
    listener.close()


def test_session_refusal_is_temporary_even_with_a_5xx(database, refusing_greeter):
    # Given a relay that refuses the session itself (not this mail)
    outbox_id = queue(database)
    relay = SmtpRelay("127.0.0.1", refusing_greeter, timeout=5)
    # When the row is sent
    delivery, delay = send(database, relay, outbox_id)
    # Then it is retried later rather than failed for good
    assert delivery == Delivery(
        "temporary", f"relay 127.0.0.1:{refusing_greeter}: 554 5.7.1 no service for you"
    )
    assert delay == timedelta(seconds=30)
    assert row(database, outbox_id).status == OutboxStatus.PENDING


def test_gives_up_after_max_attempts(database):
    # Given a relay that is never reachable, and three attempts allowed
    outbox_id = queue(database)
    relay = SmtpRelay("127.0.0.1", free_port(), timeout=5)
    now, delays = T0, []
    # When each attempt is made as soon as it is due
    for _ in range(3):
        delivery, delay = send(database, relay, outbox_id, now, max_attempts=3)
        assert delivery is not None and delivery.outcome == "temporary"
        delays.append(delay)
        now += delay or timedelta(0)
    # Then it backed off twice and then failed for good, saying why
    assert delays == [timedelta(seconds=30), timedelta(seconds=60), None]
    failed = row(database, outbox_id)
    assert failed.status == OutboxStatus.FAILED
    assert failed.attempts == 3
    assert failed.last_error.startswith("gave up after 3 attempts: relay 127.0.0.1:")
    assert send(database, relay, outbox_id, now + timedelta(days=1)) == (None, None)


@pytest.mark.parametrize(
    ("attempts", "delay"),
    [(1, timedelta(seconds=30)), (2, timedelta(minutes=1)), (3, timedelta(minutes=2)),
     (8, timedelta(minutes=64)), (9, timedelta(hours=1)), (40, timedelta(hours=1))],
    ids=["first", "second", "third", "eighth-capped", "ninth", "fortieth"],
)
def test_retry_delay_backs_off_to_an_hour(attempts, delay):
    assert retry_delay(attempts) == min(delay, timedelta(hours=1))


# --- EmlFolder -------------------------------------------------------------------------------


def test_eml_folder_writes_the_complete_mail(database, tmp_path):
    # Given a gateway without a relay
    outbox_id = queue(database)
    folder = tmp_path / "outbox"
    # When the row is sent
    delivery, _ = send(database, EmlFolder(folder), outbox_id)
    # Then one complete .eml is there, named after the Message-ID, and nothing else
    sent = row(database, outbox_id)
    assert delivery is not None and delivery.outcome == "sent"
    files = sorted(p.name for p in folder.iterdir())
    assert files == [sent.message_id.split("@")[0] + ".eml"]
    assert (folder / files[0]).read_bytes() == sent.raw
    assert delivery.detail == str(folder / files[0])
    assert sent.status == OutboxStatus.SENT


def test_eml_folder_keeps_apart_two_mails_without_a_message_id(tmp_path):
    folder = EmlFolder(tmp_path)
    first, second = (b"Subject: one\r\n\r\nOne.\r\n", b"Subject: two\r\n\r\nTwo.\r\n")
    for raw in (first, second, first):  # the first again: a mail sent twice is one file
        assert folder.deliver("s@x.example", [CUSTOMER], raw, committed).outcome == "sent"
    assert sorted(p.read_bytes() for p in tmp_path.iterdir()) == [first, second]


def test_eml_folder_writes_nothing_when_the_commit_is_refused(tmp_path):
    folder = tmp_path / "outbox"
    delivery = EmlFolder(folder).deliver("s@x.example", [CUSTOMER], b"x", lambda release: False)
    assert delivery.outcome == "aborted"
    assert list(folder.iterdir()) == []


def test_eml_folder_leaves_no_temporary_file_when_the_sender_dies(database, tmp_path):
    outbox_id = queue(database)
    folder = tmp_path / "outbox"

    def die() -> None:
        raise Killed("process killed")

    with pytest.raises(Killed):
        send(database, Interrupting(EmlFolder(folder), die), outbox_id)
    assert list(folder.iterdir()) == []
    assert row(database, outbox_id).status == OutboxStatus.SENDING


def test_eml_folder_that_cannot_be_written_is_temporary(database, tmp_path):
    outbox_id = queue(database)
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    delivery, delay = send(database, EmlFolder(blocked / "outbox"), outbox_id)
    assert delivery is not None and delivery.outcome == "temporary"
    assert delay == timedelta(seconds=30)
    assert row(database, outbox_id).status == OutboxStatus.PENDING
