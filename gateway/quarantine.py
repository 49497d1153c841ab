"""Mail set aside for a person: what is there, and giving it back to the pipeline.

The pipeline quarantines a message it cannot handle (it cannot be parsed, a
defect in the code, a value the database refuses) rather than retrying it
for ever. Once the cause is mended (a new release, a wider column, a policy
fixed), ``release`` puts the message back as received; the recovery sweep
hands it out like any other unfinished mail, and the pipeline runs it from
the start (still idempotent: a copy processed meanwhile makes it a duplicate).
A message a person deals with otherwise is dismissed: kept, no longer counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from gateway.database import Database, move_by_hand, total_of
from gateway.models import INBOUND, InboundStatus


@dataclass(frozen=True)
class Quarantined:
    id: int
    received_at: datetime
    envelope_sender: str
    message_id: str | None
    reason: str


def quarantined(database: Database, *, limit: int = 100) -> tuple[list[Quarantined], int]:
    """The quarantined messages, oldest first, at most ``limit`` of them; and how
    many there are in all."""
    held = INBOUND.c.status == InboundStatus.QUARANTINED
    query = (
        select(INBOUND.c.id, INBOUND.c.received_at, INBOUND.c.envelope_sender,
               INBOUND.c.message_id, INBOUND.c.reason)
        .where(held)
        .order_by(INBOUND.c.id)
        .limit(limit)
    )
    with database.reading() as connection:
        found = [Quarantined(row.id, row.received_at, row.envelope_sender, row.message_id,
                             row.reason or "") for row in connection.execute(query)]
        return found, total_of(connection, len(found), limit, INBOUND, held)


def release(database: Database, ids: Sequence[int], now: datetime) -> list[int]:
    """Put the quarantined messages among ``ids`` back as received; returns those
    released (an id that is not quarantined is left as it is)."""
    return move_by_hand(database, INBOUND, ids, [InboundStatus.QUARANTINED],
                        status=InboundStatus.RECEIVED, reason=None, processed_at=None,
                        enqueued_at=now, handled_at=now)


def dismiss(database: Database, ids: Sequence[int], now: datetime) -> list[int]:
    """Mark the quarantined messages among ``ids`` as dealt with by a person (answered
    by hand, say, or spam); returns those dismissed. Each stays stored, with its
    reason, and is no longer counted as waiting for anyone."""
    return move_by_hand(database, INBOUND, ids, [InboundStatus.QUARANTINED],
                        status=InboundStatus.DISMISSED, handled_at=now)
