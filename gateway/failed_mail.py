"""Outgoing mail that needs a person: what is there, sending it again, letting it be.

A row fails for good when the relay refuses it (a ``5xx``, whose reply is
kept) or when it has had ``relay.max_attempts`` temporary failures (about
five hours of backoff by default). Either can be the gateway's own side
rather than the recipient's: a relay that wants a login not yet configured
refuses every mail with ``530``, and a relay down over a weekend runs every
acknowledgement out of attempts. Once that is mended, ``retry`` puts the
rows back as pending, their attempts counted afresh; the recovery sweep
hands them out like any unsent row, and each is still sent once.

A row is unconfirmed when the whole mail went to the relay and its answer
never came: the relay may have delivered it. Only its log can say, so such
a row is retried only when asked for by name (``unconfirmed=True``): the
person has looked, and found the Message-ID missing. A row that a person
has dealt with otherwise (the mail was delivered after all, or is no longer
worth sending) is dismissed: kept with its reason, no longer counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from gateway.database import Database, move_by_hand, total_of
from gateway.models import CASES, OUTBOX, OutboxStatus


@dataclass(frozen=True)
class FailedMail:
    id: int
    status: str
    """``failed`` or ``unconfirmed``."""
    created_at: datetime
    case_number: str | None
    kind: str
    recipients: list[str]
    message_id: str
    attempts: int
    reason: str
    handed_over_at: datetime | None
    """Of an unconfirmed mail, when its sender began (the mail went to the relay
    soon after): where to start looking in the relay's log."""


def failed_mail(database: Database, *, limit: int = 100) -> tuple[list[FailedMail], int]:
    """The outgoing mails that need a person, oldest first, at most ``limit`` of
    them; and how many there are in all."""
    needing = OUTBOX.c.status.in_(OutboxStatus.NEEDS_A_PERSON)
    query = (
        select(OUTBOX.c.id, OUTBOX.c.status, OUTBOX.c.created_at, CASES.c.number,
               OUTBOX.c.kind, OUTBOX.c.recipients, OUTBOX.c.message_id, OUTBOX.c.attempts,
               OUTBOX.c.last_error, OUTBOX.c.sent_at)
        .select_from(OUTBOX.outerjoin(CASES, CASES.c.id == OUTBOX.c.case_id))
        .where(needing)
        .order_by(OUTBOX.c.id)
        .limit(limit)
    )
    with database.reading() as connection:
        found = [FailedMail(row.id, row.status, row.created_at, row.number, row.kind,
                            list(row.recipients), row.message_id, row.attempts,
                            row.last_error or "", row.sent_at)
                 for row in connection.execute(query)]
        return found, total_of(connection, len(found), limit, OUTBOX, needing)


def retry(
    database: Database, ids: Sequence[int], now: datetime, *, unconfirmed: bool = False
) -> list[int]:
    """Put the failed mails among ``ids`` back as pending, due ``now``, and the
    unconfirmed ones too if ``unconfirmed``; returns those put back (any other
    id is left as it is: a sent mail never goes again). Each starts afresh: its
    attempts and its last error, which the log keeps, are cleared."""
    statuses = OutboxStatus.NEEDS_A_PERSON if unconfirmed else (OutboxStatus.FAILED,)
    return move_by_hand(database, OUTBOX, ids, statuses,
                        status=OutboxStatus.PENDING, attempts=0, next_attempt_at=now,
                        claim=None, claimed_at=None, sent_at=None, last_error=None,
                        handled_at=now)


def dismiss(database: Database, ids: Sequence[int], now: datetime) -> list[int]:
    """Mark the failed or unconfirmed mails among ``ids`` as dealt with; returns
    those dismissed. Each keeps its reason; none is sent."""
    return move_by_hand(database, OUTBOX, ids, OutboxStatus.NEEDS_A_PERSON,
                        status=OutboxStatus.DISMISSED, handled_at=now)
