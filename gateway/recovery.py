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

from sqlalchemy import ColumnElement, Connection, and_, func, select, update

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

    How many: a row that looks stale may be lost (a Redis restarted empty,
    a killed worker) or only waiting in a queue that takes the workers longer
    than ``stale_after`` to clear. The broker holds at most
    ``Dispatcher.waiting`` of them, so at least the stale rows beyond that
    many are lost, the oldest most likely: that many are handed out, and at
    least ``batch``, in transactions of ``batch`` rows each. After a Redis
    restart under load that is the whole lost backlog at once (a batch per
    sweep interval would take hours over it), and for a backlog that is only
    waiting, one batch, not all of it queued again at every sweep.
    """
    cutoff = now - stale_after
    waiting = dispatch.waiting()
    with database.reading() as connection:
        stale_inbound = connection.scalar(select(func.count()).where(_stale_inbound(cutoff))) or 0
        stale_outbox = connection.scalar(select(func.count()).where(_stale_outbox(cutoff))) or 0
    inbound = _Pages(INBOUND.c.id, max(batch, stale_inbound - waiting), batch)
    outbox = _Pages(OUTBOX.c.id, max(batch, stale_outbox - waiting), batch)
    total = SweepReport(0, 0, 0)
    released: set[int] = set()
    first = True
    while first or not (inbound.done and outbox.done):
        with database.transaction() as connection:
            inbound_ids = inbound.next(connection, _stale_inbound(cutoff))
            if inbound_ids:
                connection.execute(
                    update(INBOUND).where(INBOUND.c.id.in_(inbound_ids)).values(enqueued_at=now)
                )
            outbox_ids = outbox.next(connection, _stale_outbox(cutoff))
            if outbox_ids:
                connection.execute(
                    update(OUTBOX).where(OUTBOX.c.id.in_(outbox_ids)).values(next_attempt_at=now)
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
        pending = [outbox_id for outbox_id in outbox_ids if outbox_id not in released]
        for inbound_id in inbound_ids:
            dispatch.process(inbound_id)
        for outbox_id in [*reclaimed, *pending]:
            dispatch.send(outbox_id)
        total = SweepReport(total.inbound + len(inbound_ids), total.outbox + len(pending),
                            total.reclaimed + len(reclaimed))
    if total:
        log.info("recovery: %s inbound, %s outbox re-enqueued; %s stale claims released "
                 "(%s waiting in the broker)", total.inbound, total.outbox, total.reclaimed,
                 waiting)
    return total


def _stale_inbound(cutoff: datetime) -> ColumnElement[bool]:
    return and_(INBOUND.c.status == InboundStatus.RECEIVED, INBOUND.c.enqueued_at <= cutoff)


def _stale_outbox(cutoff: datetime) -> ColumnElement[bool]:
    return and_(OUTBOX.c.status == OutboxStatus.PENDING, OUTBOX.c.next_attempt_at <= cutoff)


class _Pages:
    """Ids of one table's stale rows, page by page in id order, up to ``most``.

    By id, not by the time stamp the sweep sets: with ``stale_after`` zero, a
    row just handed out is as due as it was.
    """

    def __init__(self, column: ColumnElement[int], most: int, batch: int) -> None:
        self.column, self.left, self.batch = column, most, batch
        self.after = 0
        self.done = False

    def next(self, connection: Connection, stale: ColumnElement[bool]) -> list[int]:
        if self.done:
            return []
        size = min(self.batch, self.left)
        ids = list(connection.scalars(
            select(self.column).where(stale, self.column > self.after)
            .order_by(self.column).limit(size)
        ))
        self.left -= len(ids)
        self.done = len(ids) < size or self.left <= 0
        if ids:
            self.after = ids[-1]
        return ids
