"""Two runs of the pipeline for one stored message at once (a broker redelivery
beside a recovery sweep): exactly one commits its work, the other skips.

The runs are interleaved the way that tests the pipeline's guard: the first
is held just before its commit until the second has read the message (still
waiting, as far as it can see); the second's write transaction then waits
until the first has finished. On SQLite and on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select
from sqlalchemy.exc import OperationalError

from gateway import pipeline
from gateway.clock import utcnow
from gateway.inbound import accept
from gateway.models import CASES, INBOUND, OUTBOX, InboundStatus
from gateway.pipeline import Outcome, process_inbound, refuses_the_data
from gateway.runtime import Runtime
from tests.conftest import mail
from tests.integration.conftest import runtime_for


class Interleaved:
    """Holds the first run at its commit until the second has read the message,
    and the second's write transaction until the first run has finished."""

    def __init__(self, runtime: Runtime) -> None:
        self.engine = runtime.engine
        self.first: threading.Thread | None = None
        self.first_commits = threading.Event()
        self.second_read = threading.Event()
        self.first_done = threading.Event()
        self.stuck: list[str] = []  # asserted in the main thread: the runs swallow errors
        event.listen(self.engine, "commit", self._commit)
        # On every engine: on PostgreSQL the message is read over a pool of its own.
        event.listen(Engine, "after_cursor_execute", self._executed)
        # Before the gateway's own listeners, which may wait for SQLite's writer lock.
        event.listen(self.engine, "begin", self._begin, insert=True)

    def remove(self) -> None:
        event.remove(self.engine, "commit", self._commit)
        event.remove(Engine, "after_cursor_execute", self._executed)
        event.remove(self.engine, "begin", self._begin)

    def _second(self) -> bool:
        return self.first is not None and threading.current_thread() is not self.first

    def _commit(self, connection: Any) -> None:
        if threading.current_thread() is self.first:
            self.first_commits.set()
            if not self.second_read.wait(timeout=20):
                self.stuck.append("the second run never read the message")

    def _executed(self, connection: Any, cursor: Any, statement: str, *_: Any) -> None:
        if self._second() and statement.lstrip().upper().startswith("SELECT") and (
            INBOUND.name in statement
        ):
            self.second_read.set()

    def _begin(self, connection: Any) -> None:
        if self._second() and self.second_read.is_set() and not self.first_done.wait(20):
            self.stuck.append("the first run never finished")


def run_twice_at_once(runtime: Runtime, inbound_id: int) -> list[Outcome]:
    runs = Interleaved(runtime)
    outcomes: list[Outcome] = []

    def run() -> None:
        outcomes.append(process_inbound(runtime.pipeline, inbound_id, utcnow(),
                                        claim_outbox=True))
        if threading.current_thread() is runs.first:
            runs.first_done.set()

    runs.first = threading.Thread(target=run)
    second = threading.Thread(target=run)
    try:
        runs.first.start()
        assert runs.first_commits.wait(timeout=20), "the first run never came to commit"
        second.start()
        runs.first.join(timeout=30)
        second.join(timeout=30)
    finally:
        runs.remove()
    assert runs.stuck == []
    assert runs.second_read.is_set()
    return outcomes


def count(runtime: Runtime, table: Any) -> int:
    with runtime.database.reading() as connection:
        return connection.execute(select(func.count()).select_from(table)).scalar_one()


def status_of(runtime: Runtime, inbound_id: int) -> str:
    with runtime.database.reading() as connection:
        return str(connection.scalar(select(INBOUND.c.status).where(INBOUND.c.id == inbound_id)))


def store(runtime: Runtime, raw: bytes, sender: str = "alice@customer.example") -> int:
    return accept(runtime.database, raw, source="smtp", sender=sender,
                  recipients=["support@example.com"], now=utcnow())


def test_a_new_case_is_opened_once(runtime):
    inbound_id = store(runtime, mail("[P1] Database down"))
    outcomes = run_twice_at_once(runtime, inbound_id)
    assert sorted(outcome.status for outcome in outcomes) == ["processed", "skipped"]
    assert status_of(runtime, inbound_id) == InboundStatus.PROCESSED
    assert (count(runtime, CASES), count(runtime, OUTBOX)) == (1, 1)
    # Only the run that committed holds the acknowledgement's claim.
    assert sorted(len(outcome.claimed) for outcome in outcomes) == [0, 1]


def test_a_mail_that_opens_no_case_is_marked_once(runtime):
    # A bounce: the null envelope sender
    inbound_id = store(runtime, mail("Undelivered Mail Returned to Sender"), sender="")
    outcomes = run_twice_at_once(runtime, inbound_id)
    assert sorted(outcome.status for outcome in outcomes) == ["ignored", "skipped"]
    assert status_of(runtime, inbound_id) == InboundStatus.IGNORED
    assert (count(runtime, CASES), count(runtime, OUTBOX)) == (0, 0)


@pytest.fixture(params=["sqlite", "postgresql"])
def limited(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    """A runtime on each database allowing two automatic mails per address in ten minutes."""
    running = runtime_for(request, tmp_path, HELPDESK_AUTO_REPLIES_PER_10_MINUTES="2")
    yield running
    running.close()


def test_mails_from_one_address_at_once_get_no_more_replies_than_the_limit(limited):
    # Given six mails from one robot, stored
    runtime = limited
    ids = [store(runtime, mail(f"Re: Your request {n}", sender="robot@customer.example"),
                 sender="robot@customer.example") for n in range(6)]
    # When each is processed in its own thread, and every run that has read the
    # reply limit waits (up to a second) for the others to read it too
    read_the_limit = threading.Barrier(len(ids), timeout=1.0)

    def executed(connection: Any, cursor: Any, statement: str, *_: Any) -> None:
        if "FROM outbox" in statement and "recipient_key" in statement:
            with contextlib.suppress(threading.BrokenBarrierError):
                read_the_limit.wait()

    event.listen(Engine, "after_cursor_execute", executed)
    try:
        runs = [threading.Thread(target=process_inbound, args=(runtime.pipeline, i, utcnow()))
                for i in ids]
        for run in runs:
            run.start()
        for run in runs:
            run.join(timeout=60)
    finally:
        event.remove(Engine, "after_cursor_execute", executed)
    # Then six cases, and only two acknowledgements
    assert all(status_of(runtime, i) == InboundStatus.PROCESSED for i in ids)
    assert (count(runtime, CASES), count(runtime, OUTBOX)) == (6, 2)


@pytest.fixture(params=["postgresql"])
def uncounted(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    """A runtime on PostgreSQL that counts no automatic mail (both limits off)."""
    running = runtime_for(request, tmp_path, HELPDESK_AUTO_REPLIES_PER_10_MINUTES="0",
                          HELPDESK_AUTO_REPLIES_PER_10_HOURS="0")
    yield running
    running.close()


def test_a_gateway_that_counts_nothing_takes_no_lock_on_the_sender(uncounted):
    statements: list[str] = []

    def executed(connection: Any, cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(Engine, "after_cursor_execute", executed)
    try:
        inbound_id = store(uncounted, mail("[P2] Slow recognition"))
        assert process_inbound(uncounted.pipeline, inbound_id, utcnow()).status == "processed"
    finally:
        event.remove(Engine, "after_cursor_execute", executed)
    assert statements and not any("pg_advisory" in s for s in statements)
    assert count(uncounted, OUTBOX) == 1


def test_a_sender_held_up_by_a_stuck_transaction_waits_only_lock_timeout(pg_runtime, monkeypatch):
    # Given a transaction that took the sender's lock and hangs
    monkeypatch.setattr(pipeline, "LOCK_TIMEOUT", "200ms")
    inbound_id = store(pg_runtime, mail("[P1] Database down", sender="alice@customer.example"))
    with pg_runtime.database.transaction() as stuck:
        stuck.exec_driver_sql(
            "SELECT pg_advisory_xact_lock(hashtextextended('alice@customer.example', 0))"
        )
        # When the mail is processed, the run gives up with a lock timeout, which
        # is retried (not quarantined), and the mail stays waiting
        with pytest.raises(OperationalError) as waited:
            process_inbound(pg_runtime.pipeline, inbound_id, utcnow())
        assert not refuses_the_data(waited.value)
        assert status_of(pg_runtime, inbound_id) == InboundStatus.RECEIVED
    # Then, once the lock is let go, the retry opens the case
    assert process_inbound(pg_runtime.pipeline, inbound_id, utcnow()).status == "processed"
