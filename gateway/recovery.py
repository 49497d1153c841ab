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

from sqlalchemy import Connection, Select, select, update

from gateway.database import Database
from gateway.models import INBOUND, OUTBOX, InboundStatus, OutboxStatus

log = logging.getLogger(__name__)
BATCH = 1000


class Dispatcher(Protocol):
    """Hands work to the workers (a broker, or a thread pool in the same process)."""

    def process(self, inbound_id: int) -> None: ...

    def send(self, outbox_id: int, delay: timedelta | None = None) -> None: ...

    def waiting(self) -> int:
        """Messages handed out and not yet finished, as the broker counts them."""
        ...


@dataclass(frozen=True)
class SweepReport:
    inbound: int
    outbox: int
    reclaimed: int

    def __bool__(self) -> bool:
        return bool(self.inbound or self.outbox or self.reclaimed)


def sweep(
    database: Database, dispatch: Dispatcher, now: datetime, stale_after: timedelta,
    *, batch: int = BATCH,
) -> SweepReport:
    """Re-enqueue inbound mail and outbox rows that have waited longer than ``stale_after``.

    A claim older than ``stale_after`` belongs to a sender that died before
    its commit point, so nothing was delivered: the row goes back to pending
    and is handed out at once. With ``stale_after`` zero (a process starting
    with an empty in-process queue) everything unfinished is handed out.

    When the broker holds nothing (``Dispatcher.waiting``), all of it, ``batch``
    rows of each kind per transaction: after a Redis restarted empty, the
    backlog may be hundreds of thousands of mails, and a batch per sweep
    interval would take hours to hand them out. When it holds work, one batch:
    a backlog that takes the workers longer than ``stale_after`` looks stale
    while it waits in the queue, and handing all of it out again at each
    sweep would queue it many times over.
    """
    cutoff = now - stale_after
    inbound_after = outbox_after = 0
    total = SweepReport(0, 0, 0)
    released: set[int] = set()
    first = True
    everything = dispatch.waiting() == 0
    while True:
        with database.transaction() as connection:
            inbound = _stale(connection, batch, select(INBOUND.c.id).where(
                INBOUND.c.status == InboundStatus.RECEIVED, INBOUND.c.enqueued_at <= cutoff,
                INBOUND.c.id > inbound_after,
            ))
            if inbound:
                connection.execute(
                    update(INBOUND).where(INBOUND.c.id.in_(inbound)).values(enqueued_at=now)
                )
            outbox = _stale(connection, batch, select(OUTBOX.c.id).where(
                OUTBOX.c.status == OutboxStatus.PENDING, OUTBOX.c.next_attempt_at <= cutoff,
                OUTBOX.c.id > outbox_after,
            ))
            if outbox:
                connection.execute(
                    update(OUTBOX).where(OUTBOX.c.id.in_(outbox)).values(next_attempt_at=now)
                )
            reclaimed: list[int] = []
            if first:
                # After the pending rows were read, so that a released one is handed
                # out once; a later page skips it among the pending rows.
                reclaimed = list(connection.scalars(
                    update(OUTBOX)
                    .where(OUTBOX.c.status == OutboxStatus.SENDING, OUTBOX.c.claimed_at <= cutoff)
                    .values(status=OutboxStatus.PENDING, claim=None, next_attempt_at=now)
                    .returning(OUTBOX.c.id)
                ))
                released.update(reclaimed)
        first = False
        pending = [outbox_id for outbox_id in outbox if outbox_id not in released]
        for inbound_id in inbound:
            dispatch.process(inbound_id)
        for outbox_id in [*reclaimed, *pending]:
            dispatch.send(outbox_id)
        total = SweepReport(total.inbound + len(inbound), total.outbox + len(pending),
                            total.reclaimed + len(reclaimed))
        if not everything or (len(inbound) < batch and len(outbox) < batch):
            break
        inbound_after = inbound[-1] if inbound else inbound_after
        outbox_after = outbox[-1] if outbox else outbox_after
    if total:
        log.info("recovery: %s inbound, %s outbox re-enqueued; %s stale claims released",
                 total.inbound, total.outbox, total.reclaimed)
    return total


def _stale(connection: Connection, batch: int, query: Select[tuple[int]]) -> list[int]:
    return list(connection.scalars(query.order_by("id").limit(batch)))
