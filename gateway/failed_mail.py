"""Outgoing mail that failed for good: what is there, and sending it again.

A row fails for good when the relay refuses it (a ``5xx``, whose reply is
kept) or when it has had ``relay.max_attempts`` temporary failures (about
five hours of backoff by default). Either can be the gateway's own side
rather than the recipient's: a relay that wants a login not yet configured
refuses every mail with ``530``, and a relay down over a weekend runs every
acknowledgement out of attempts. Once that is mended, ``retry`` puts the
rows back as pending, their attempts counted afresh; the recovery sweep
hands them out like any unsent row, and each is still sent once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update

from gateway.database import Database
from gateway.models import CASES, OUTBOX, OutboxStatus


@dataclass(frozen=True)
class FailedMail:
    id: int
    created_at: datetime
    case_number: str | None
    kind: str
    recipients: list[str]
    attempts: int
    reason: str


def failed_mail(database: Database, *, limit: int = 100) -> list[FailedMail]:
    """The outgoing mails that failed for good, oldest first."""
    query = (
        select(OUTBOX.c.id, OUTBOX.c.created_at, CASES.c.number, OUTBOX.c.kind,
               OUTBOX.c.recipients, OUTBOX.c.attempts, OUTBOX.c.last_error)
        .select_from(OUTBOX.outerjoin(CASES, CASES.c.id == OUTBOX.c.case_id))
        .where(OUTBOX.c.status == OutboxStatus.FAILED)
        .order_by(OUTBOX.c.id)
        .limit(limit)
    )
    with database.reading() as connection:
        return [FailedMail(row.id, row.created_at, row.number, row.kind, list(row.recipients),
                           row.attempts, row.last_error or "")
                for row in connection.execute(query)]


def retry(database: Database, ids: Sequence[int], now: datetime) -> list[int]:
    """Put the failed mails among ``ids`` back as pending, due ``now``; returns those
    put back (an id that has not failed is left as it is: a sent mail never goes
    again)."""
    if not ids:
        return []
    with database.transaction() as connection:
        return sorted(connection.scalars(
            update(OUTBOX)
            .where(OUTBOX.c.id.in_(ids), OUTBOX.c.status == OutboxStatus.FAILED)
            .values(status=OutboxStatus.PENDING, attempts=0, next_attempt_at=now, claim=None,
                    claimed_at=None)
            .returning(OUTBOX.c.id)
        ))
