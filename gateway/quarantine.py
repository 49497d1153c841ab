"""Mail set aside for a person: what is there, and giving it back to the pipeline.

The pipeline quarantines a message it cannot handle (it cannot be parsed, a
defect in the code, a value the database refuses) rather than retrying it
for ever. Once the cause is mended (a new release, a wider column, a policy
fixed), ``release`` puts the message back as received; the recovery sweep
hands it out like any other unfinished mail, and the pipeline runs it from
the start (still idempotent: a copy processed meanwhile makes it a duplicate).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update

from gateway.database import Database
from gateway.models import INBOUND, InboundStatus


@dataclass(frozen=True)
class Quarantined:
    id: int
    received_at: datetime
    envelope_sender: str
    message_id: str | None
    reason: str


def quarantined(database: Database, *, limit: int = 100) -> list[Quarantined]:
    """The quarantined messages, oldest first."""
    query = (
        select(INBOUND.c.id, INBOUND.c.received_at, INBOUND.c.envelope_sender,
               INBOUND.c.message_id, INBOUND.c.reason)
        .where(INBOUND.c.status == InboundStatus.QUARANTINED)
        .order_by(INBOUND.c.id)
        .limit(limit)
    )
    with database.reading() as connection:
        return [Quarantined(row.id, row.received_at, row.envelope_sender, row.message_id,
                            row.reason or "") for row in connection.execute(query)]


def release(database: Database, ids: Sequence[int], now: datetime) -> list[int]:
    """Put the quarantined messages among ``ids`` back as received; returns those
    released (an id that is not quarantined is left as it is)."""
    if not ids:
        return []
    with database.transaction() as connection:
        return sorted(connection.scalars(
            update(INBOUND)
            .where(INBOUND.c.id.in_(ids), INBOUND.c.status == InboundStatus.QUARANTINED)
            .values(status=InboundStatus.RECEIVED, reason=None, processed_at=None,
                    enqueued_at=now)
            .returning(INBOUND.c.id)
        ))
