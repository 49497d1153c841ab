"""The inbound store: the first and only thing an edge does with a message.

``accept`` commits the raw bytes before the edge says yes (SMTP 250, IMAP
flag), so from then on the gateway is responsible for the message: the
pipeline, the recovery sweep and quarantine all start from this row.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import insert
from sqlalchemy.exc import SQLAlchemyError

from gateway.database import Database, new_id
from gateway.errors import StoreUnavailable
from gateway.mail import identify
from gateway.models import INBOUND, InboundStatus

_STORE = insert(INBOUND)


def accept(
    database: Database,
    raw: bytes,
    *,
    source: str,
    sender: str,
    recipients: Sequence[str],
    now: datetime,
) -> int:
    """Store ``raw`` durably and return its id; ``StoreUnavailable`` if the database
    cannot take it (the edge then asks the sender to retry)."""
    message_id, digest = identify(raw)
    try:
        with database.writing_once() as connection:
            return new_id(connection.execute(_STORE, {
                "received_at": now, "source": source, "envelope_sender": sender,
                "envelope_recipients": list(recipients), "message_id": message_id,
                "digest": digest, "raw": raw, "status": InboundStatus.RECEIVED,
                "enqueued_at": now,
            }))
    except SQLAlchemyError as error:
        raise StoreUnavailable(str(error).splitlines()[0]) from error
