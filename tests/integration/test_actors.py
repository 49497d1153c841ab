"""The actors over a real SMTP relay: processing sends the acknowledgement it
queued at once, and hands it to the sending queue while the relay is failing.

The broker is Dramatiq's in-memory one, so what each actor handed on can be
read off its queues; the actors are called directly.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator, Sequence
from datetime import timedelta

import dramatiq
import pytest
import redis.exceptions
from aiosmtpd.controller import Controller
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name
from dramatiq.middleware import TimeLimit
from sqlalchemy import update

from gateway.clock import utcnow
from gateway.database import upgrade
from gateway.inbound import accept
from gateway.models import OUTBOX, OutboxRow, OutboxStatus
from gateway.pipeline import process_inbound
from gateway.recovery import sweep
from gateway.relay import CommitPoint, Delivery, Waiting
from gateway.runtime import Runtime, build_runtime
from gateway.service import Sweeper
from tests.conftest import Sink, free_port, mail, make_settings
from workers.actors import (
    INBOUND_QUEUE,
    OUTBOX_QUEUE,
    DramatiqDispatcher,
    RelayTrouble,
    declare,
)
from workers.broker import PromptRedisBroker, make_broker


@pytest.fixture
def broker() -> Iterator[StubBroker]:
    stub = StubBroker()
    stub.emit_after("process_boot")
    yield stub
    stub.close()


def runtime_for(tmp_path, host: str, port: int) -> Iterator[Runtime]:
    runtime = build_runtime(make_settings(
        tmp_path, HELPDESK_RELAY_HOST=host, HELPDESK_RELAY_PORT=str(port),
    ))
    upgrade(runtime.engine)
    yield runtime
    runtime.close()


@pytest.fixture
def relay_up(tmp_path, sink: Sink) -> Iterator[Runtime]:
    """A gateway whose relay is the test's sink."""
    yield from runtime_for(tmp_path, sink.host, sink.port)


@pytest.fixture
def relay_down(tmp_path) -> Iterator[Runtime]:
    """A gateway whose relay refuses connections."""
    yield from runtime_for(tmp_path, "127.0.0.1", free_port())


def arrive(runtime: Runtime, subject: str) -> int:
    return accept(runtime.database, mail(subject), source="smtp",
                  sender="alice@customer.example", recipients=["support@example.com"],
                  now=utcnow())


def queued(broker: StubBroker, queue_name: str) -> list[int]:
    """The outbox ids waiting on ``queue_name``."""
    waiting = list(broker.queues[queue_name].queue) if queue_name in broker.queues else []
    return [dramatiq.Message.decode(data).args[0] for data in waiting]


def outbox(runtime: Runtime) -> list[OutboxRow]:
    with runtime.database.session() as session:
        return list(session.query(OutboxRow).order_by(OutboxRow.id))


def test_processing_sends_the_acknowledgement_itself(broker, relay_up: Runtime, sink: Sink):
    runtime = relay_up
    dispatch: DramatiqDispatcher = declare(broker, runtime)
    # When a stored mail is processed
    dispatch.actors.process_inbound(arrive(runtime, "[P1] Database down"))
    # Then its acknowledgement is at the relay and sent, and nothing waits on a queue
    assert len(sink.wait_for(1, timeout=5)) == 1
    [row] = outbox(runtime)
    assert (row.status, row.attempts) == (OutboxStatus.SENT, 1)
    assert queued(broker, OUTBOX_QUEUE) == []


def test_processing_leaves_the_relay_alone_for_a_while_after_it_failed(
    broker, relay_down: Runtime
):
    # Given a relay that refuses connections
    runtime = relay_down
    dispatch = declare(broker, runtime)
    first, second = arrive(runtime, "[P2] One"), arrive(runtime, "[P2] Two")
    # When the first mail is processed, its acknowledgement is tried and retried later
    dispatch.actors.process_inbound(first)
    # And the second, moments later, opens its case without trying the relay:
    # its acknowledgement goes to the sending queue as it is
    dispatch.actors.process_inbound(second)
    tried, untried = outbox(runtime)
    assert (tried.status, tried.attempts) == (OutboxStatus.PENDING, 1)
    assert "relay 127.0.0.1" in (tried.last_error or "")
    assert queued(broker, dq_name(OUTBOX_QUEUE)) == [tried.id]
    assert (untried.status, untried.attempts) == (OutboxStatus.PENDING, 0)
    assert queued(broker, OUTBOX_QUEUE) == [untried.id]


class SilentAfterTheEnd:
    """A relay that takes the whole mail and never answers its end."""

    def __init__(self) -> None:
        self.received = 0

    async def handle_DATA(self, server, session, envelope) -> str:
        self.received += 1
        await asyncio.sleep(3600)  # cancelled when the controller stops
        return "250 OK"


def test_a_relay_silent_after_the_end_is_waited_out_whatever_dramatiqs_time_limit(tmp_path):
    # Given a broker whose actors Dramatiq would stop after 1.5 s unless told otherwise,
    # and a relay that never answers the end of a mail, waited for 2 s
    broker = StubBroker()
    [limit] = [m for m in broker.middleware if isinstance(m, TimeLimit)]
    limit.time_limit, limit.interval = 1500, 100
    broker.emit_after("process_boot")
    handler = SilentAfterTheEnd()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    runtime = build_runtime(make_settings(
        tmp_path, HELPDESK_RELAY_HOST="127.0.0.1", HELPDESK_RELAY_PORT=str(controller.port),
        HELPDESK_RELAY_TIMEOUT="0.5", HELPDESK_RELAY_END_OF_DATA_TIMEOUT="2",
    ))
    upgrade(runtime.engine)
    dispatch = declare(broker, runtime)
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=50)
    worker.start()
    try:
        # When a mail is processed by a worker, and a second one a moment later
        first, second = arrive(runtime, "[P1] One"), arrive(runtime, "[P1] Two")
        dispatch.actors.process_inbound.send(first)
        broker.join(INBOUND_QUEUE, fail_fast=True)
        worker.stop()
        dispatch.actors.process_inbound(second)
    finally:
        worker.stop()
        controller.stop()
        runtime.close()
    # Then the first acknowledgement is recorded as unconfirmed (not left "sent" by
    # an actor stopped mid-wait), sent to the relay once
    unconfirmed, untried = outbox(runtime)
    assert unconfirmed.status == OutboxStatus.UNCONFIRMED, unconfirmed.last_error
    assert "did not answer the end of the mail" in (unconfirmed.last_error or "")
    assert handler.received == 1
    # And the second waits on the sending queue: the relay is left alone for a while
    assert (untried.status, untried.attempts) == (OutboxStatus.PENDING, 0)
    assert queued(broker, OUTBOX_QUEUE) == [untried.id]


class Broken:
    """A transport with a defect: it raises before anything reaches a relay."""

    answer_within = 0.0

    def deliver(
        self, sender: str, recipients: Sequence[str], raw: bytes, commit: CommitPoint,
        waiting: Waiting | None = None,
    ) -> Delivery:
        raise RuntimeError("defect in the transport")

    def close(self) -> None:
        pass


def test_a_defect_while_sending_with_the_case_hands_the_row_to_the_sending_queue(
    broker, relay_up: Runtime
):
    runtime = relay_up
    dispatch = declare(broker, runtime)
    runtime.transport = Broken()
    # When processing opens the case but sending its acknowledgement raises
    dispatch.actors.process_inbound(arrive(runtime, "[P1] Database down"))
    # Then the row it had claimed is pending again, its attempt not counted,
    # and waits on the sending queue
    [row] = outbox(runtime)
    assert (row.status, row.claim, row.attempts) == (OutboxStatus.PENDING, None, 0)
    assert queued(broker, OUTBOX_QUEUE) == [row.id]


def test_an_unavailable_database_is_a_line_of_log_and_a_retry_not_a_traceback(
    tmp_path, broker, caplog
):
    """During an outage every message in flight fails; each says so in one line
    and is retried, where Dramatiq would log a traceback for each."""
    nothing_there = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test"
    runtime = build_runtime(make_settings(tmp_path, HELPDESK_DATABASE_URL=nothing_there))
    dispatch = declare(broker, runtime)
    worker = dramatiq.Worker(broker, worker_timeout=50)
    worker.start()
    try:
        # When a mail and an outgoing row are handed to the workers, without retries
        dispatch.actors.process_inbound.send_with_options(args=(41,), max_retries=0)
        dispatch.actors.send_outbox.send_with_options(args=(42,), max_retries=0)
        broker.join(INBOUND_QUEUE, fail_fast=False)
        broker.join(OUTBOX_QUEUE, fail_fast=False)
    finally:
        worker.stop()
        runtime.close()
    # Then each failed with one line naming it and the reason, and no traceback
    logged = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [r for r in logged if r.exc_info], "no traceback"
    said = [r.getMessage() for r in logged]
    for item in ("inbound 41", "outbox 42"):
        assert any(m.startswith(f"{item}: the database is unavailable (") for m in said), said


def test_a_row_claimed_with_its_case_by_a_process_that_died_is_recovered(
    broker, relay_down: Runtime
):
    runtime = relay_down
    dispatch = declare(broker, runtime)
    # Given a case whose acknowledgement was created claimed, and never sent
    # (its process died after the commit)
    opened = utcnow()
    outcome = process_inbound(runtime.pipeline, arrive(runtime, "[P2] Slow"), opened,
                              claim_outbox=True)
    [claimed] = outcome.claimed
    [row] = outbox(runtime)
    assert (row.id, row.status, row.claim) == (claimed.id, OutboxStatus.SENDING, claimed.claim)
    stale_after = timedelta(seconds=runtime.settings.recovery.stale_after)
    # When the sweep runs before the claim is stale, the row is left alone
    assert not sweep(runtime.database, dispatch, opened + stale_after / 2, stale_after)
    # And once it is stale, the row is released and handed to the sending queue
    report = sweep(runtime.database, dispatch, opened + stale_after, stale_after)
    assert report.reclaimed == 1
    [row] = outbox(runtime)
    assert (row.status, row.claim) == (OutboxStatus.PENDING, None)
    assert queued(broker, OUTBOX_QUEUE) == [row.id]


def test_the_start_up_sweep_hands_out_what_was_left_before_the_start_only(
    broker, relay_down: Runtime
):
    runtime = relay_down
    dispatch = declare(broker, runtime)
    # Given an acknowledgement claimed by a process that died
    left = process_inbound(runtime.pipeline, arrive(runtime, "[P2] Before"), utcnow(),
                           claim_outbox=True).claimed[0]
    # And, after this process started, one it claimed and is sending
    sweeper = Sweeper(runtime, dispatch, startup=True)
    sending = process_inbound(runtime.pipeline, arrive(runtime, "[P2] After"), utcnow(),
                              claim_outbox=True).claimed[0]
    # When its first sweep runs
    sweeper.once(sweeper.first_stale_after())
    # Then the one left behind is released and handed out, and its own is still held
    rows = {row.id: row for row in outbox(runtime)}
    assert (rows[left.id].status, rows[left.id].claim) == (OutboxStatus.PENDING, None)
    assert rows[sending.id].claim == sending.claim
    assert queued(broker, OUTBOX_QUEUE) == [left.id]


class BrokerAway:
    """A dispatcher whose broker cannot be reached."""

    def process(self, inbound_id: int) -> None:
        raise redis.exceptions.ConnectionError("Connection refused.")

    def send(self, outbox_id: int, delay: timedelta | None = None) -> None:
        raise redis.exceptions.ConnectionError("Connection refused.")

    def waiting(self) -> int:
        raise redis.exceptions.ConnectionError("Connection refused.")


def test_the_sweep_hands_a_person_waits_their_sender_gave_up_even_without_a_broker(
    relay_down: Runtime,
):
    runtime = relay_down
    sweeper = Sweeper(runtime, BrokerAway(), startup=False)
    margin = timedelta(seconds=runtime.settings.recovery.stale_after)
    now = utcnow()
    # Given two rows awaiting the relay's answer: one whose sender gave up longer ago than
    # the sweep's margin, one whose sender gave up a moment ago
    rows = [process_inbound(runtime.pipeline, arrive(runtime, f"[P2] {n}"), now,
                            claim_outbox=True).claimed[0].id for n in range(2)]
    with runtime.database.transaction() as connection:
        gave_up = (now - margin - timedelta(seconds=5), now - timedelta(seconds=5))
        for outbox_id, at in zip(rows, gave_up, strict=True):
            connection.execute(update(OUTBOX).where(OUTBOX.c.id == outbox_id).values(
                status=OutboxStatus.AWAITING, sent_at=now - timedelta(minutes=20),
                next_attempt_at=at))
    # When the sweep runs, with the broker away
    sweeper.once(margin)
    # Then only the first is unconfirmed, for a person; the other is still awaited
    assert [row.status for row in outbox(runtime)] == [
        OutboxStatus.UNCONFIRMED, OutboxStatus.AWAITING]


def test_relay_trouble_is_forgotten_after_the_hold():
    clock = [100.0]
    trouble = RelayTrouble(clock=lambda: clock[0])
    assert not trouble.now()
    trouble.seen()
    clock[0] += RelayTrouble.HOLD_SECONDS - 0.1
    assert trouble.now()
    clock[0] += 0.2
    assert not trouble.now()


def test_the_dispatcher_counts_what_the_broker_holds(broker, relay_down: Runtime):
    """What the recovery sweep asks before it hands out a whole backlog: queued
    and delayed messages count, on the in-process broker as on Redis."""
    assert_counts_what_it_holds(declare(broker, relay_down))


def assert_counts_what_it_holds(dispatch: DramatiqDispatcher) -> None:
    assert dispatch.waiting() == 0
    dispatch.process(1)
    dispatch.send(2)
    dispatch.send(3, timedelta(minutes=5))
    assert dispatch.waiting() == 3


def test_the_dispatcher_counts_a_message_being_worked_on_until_it_is_done(
    broker, relay_down: Runtime
):
    """On the in-process broker. (Redis, by ``do_qsize``, counts a finished
    message until the consumer's next fetch carries its acknowledgement, which
    may take seconds or more: the sweep then only hands out less.)"""
    dispatch = declare(broker, relay_down)
    dispatch.send(3, timedelta(minutes=5))
    entered, go = threading.Event(), threading.Event()

    @dramatiq.actor(broker=broker, queue_name=INBOUND_QUEUE, max_retries=0)
    def held() -> None:
        entered.set()
        go.wait(30)

    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=50)
    worker.start()
    try:
        held.send()
        assert entered.wait(30)
        assert dispatch.waiting() == 2  # the held one, and the delayed one
        go.set()
        broker.join(INBOUND_QUEUE)
        assert dispatch.waiting() == 1  # the delayed one only
    finally:
        go.set()
        worker.stop()


@pytest.mark.redis
def test_the_dispatcher_counts_what_redis_holds(tmp_path, redis_url: str):
    settings = make_settings(tmp_path, HELPDESK_BROKER_URL=redis_url)
    broker = make_broker(settings)
    runtime = build_runtime(settings)
    upgrade(runtime.engine)
    try:
        assert_counts_what_it_holds(declare(broker, runtime))
    finally:
        broker.flush_all()
        broker.close()
        runtime.close()


class TryLater:
    async def handle_RCPT(self, server, session, envelope, address, options) -> str:
        return "451 4.3.2 try again later"


def test_a_retry_the_broker_cannot_take_is_left_to_the_sweep_in_one_line(tmp_path, caplog):
    # Given a relay that says "try later", and a broker that is away
    controller = Controller(TryLater(), hostname="127.0.0.1", port=free_port())
    controller.start()
    runtime = build_runtime(make_settings(
        tmp_path, HELPDESK_RELAY_HOST="127.0.0.1", HELPDESK_RELAY_PORT=str(controller.port)))
    upgrade(runtime.engine)
    broker = PromptRedisBroker(url=f"redis://127.0.0.1:{free_port()}/12")
    caplog.set_level(logging.WARNING)
    try:
        dispatch = declare(broker, runtime)
        inbound_id = arrive(runtime, "[P1] Database down")
        # When a worker processes a mail, and its acknowledgement's retry cannot be queued
        dispatch.actors.process_inbound.fn(inbound_id)
    finally:
        controller.stop()
        runtime.close()
    # Then the actor ends normally: the row is pending, due later, for the sweep to find
    [row] = outbox(runtime)
    assert (row.status, row.attempts) == (OutboxStatus.PENDING, 1)
    # And the log says so in a line, without a traceback
    [line] = [r for r in caplog.records if "could not be queued" in r.getMessage()]
    assert line.exc_info is None
    assert line.getMessage().startswith(f"outbox {row.id}: could not be queued; the recovery "
                                        "sweep will: the broker is unavailable (")
