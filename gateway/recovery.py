"""The recovery sweep: the database says what is unfinished; enqueue it again.

The broker only carries work. A message lost with a killed worker or a
restarted Redis, or never enqueued because the broker was down, is found
here and handed out again; every action being idempotent, handing out
twice is harmless.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from gateway.database import transaction
from gateway.models import InboundMessage, InboundStatus, OutboxRow, OutboxStatus

log = logging.getLogger(__name__)
BATCH = 1000


class Dispatcher(Protocol):
    """Hands work to the workers (a broker, or a thread pool in the same process)."""

    def process(self, inbound_id: int) -> None: ...

    def send(self, outbox_id: int, delay: timedelta | None = None) -> None: ...


@dataclass(frozen=True)
class SweepReport:
    inbound: int
    outbox: int
    reclaimed: int

    def __bool__(self) -> bool:
        return bool(self.inbound or self.outbox or self.reclaimed)


def sweep(
    sessions: sessionmaker[Session], dispatch: Dispatcher, now: datetime, stale_after: timedelta
) -> SweepReport:
    """Re-enqueue inbound mail and outbox rows that have waited longer than ``stale_after``.

    A claim older than ``stale_after`` belongs to a sender that died before
    its commit point, so nothing was delivered: the row goes back to pending
    and is handed out at once. With ``stale_after`` zero (a process starting
    with an empty in-process queue) everything unfinished is handed out.
    """
    cutoff = now - stale_after
    with transaction(sessions) as session:
        inbound = _stale(session, select(InboundMessage.id).where(
            InboundMessage.status == InboundStatus.RECEIVED, InboundMessage.enqueued_at <= cutoff
        ))
        if inbound:
            session.execute(
                update(InboundMessage).where(InboundMessage.id.in_(inbound)).values(enqueued_at=now)
            )
        outbox = _stale(session, select(OutboxRow.id).where(
            OutboxRow.status == OutboxStatus.PENDING, OutboxRow.next_attempt_at <= cutoff
        ))
        if outbox:
            session.execute(
                update(OutboxRow).where(OutboxRow.id.in_(outbox)).values(next_attempt_at=now)
            )
        # After the pending rows were read, so that a released one is handed out once.
        reclaimed = list(session.scalars(
            update(OutboxRow)
            .where(OutboxRow.status == OutboxStatus.SENDING, OutboxRow.claimed_at <= cutoff)
            .values(status=OutboxStatus.PENDING, claim=None, next_attempt_at=now)
            .returning(OutboxRow.id)
        ))
    for inbound_id in inbound:
        dispatch.process(inbound_id)
    for outbox_id in [*reclaimed, *outbox]:
        dispatch.send(outbox_id)
    report = SweepReport(len(inbound), len(outbox), len(reclaimed))
    if report:
        log.info("recovery: %s inbound, %s outbox re-enqueued; %s stale claims released",
                 report.inbound, report.outbox, report.reclaimed)
    return report


def _stale(session: Session, query: object) -> list[int]:
    return list(session.scalars(query.order_by("id").limit(BATCH)))  # type: ignore[attr-defined]
