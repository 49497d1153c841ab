"""The database tables: the gateway's source of truth.

The broker only carries ids of rows in these tables. Unique keys make every
action idempotent: a thread entry's ``dedup_key`` stops a second case for a
mail delivered twice, an outbox row's ``key`` stops a second mail for one
decision. The same schema runs on SQLite and PostgreSQL (Alembic migrations
in ``gateway/migrations``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, cast

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from gateway.clock import as_utc


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every database.

    SQLite has no time zones; storing naive UTC and re-attaching UTC on the
    way out keeps comparisons right on both databases.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UtcDateTime(), dict[str, Any]: JSON
    }


class InboundStatus:
    """Where an accepted message is on its way; nothing leaves this table."""

    RECEIVED = "received"
    """Stored, not yet processed."""
    PROCESSED = "processed"
    """Became a case or a thread entry (see ``case_id``)."""
    DUPLICATE = "duplicate"
    """The same message (Message-ID and content) was processed before."""
    IGNORED = "ignored"
    """Automatic mail about nothing the gateway handles (a bounce); ``reason`` says which."""
    QUARANTINED = "quarantined"
    """Could not be processed; ``reason`` says why; kept for a person."""
    DISMISSED = "dismissed"
    """Was quarantined, and a person has dealt with it otherwise; ``reason`` stays."""


class InboundMessage(Base):
    """A message exactly as it was accepted, stored before the 250."""

    __tablename__ = "inbound_messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    received_at: Mapped[datetime]
    source: Mapped[str] = mapped_column(String(16))
    envelope_sender: Mapped[str] = mapped_column(Text)
    envelope_recipients: Mapped[list[str]] = mapped_column(JSON)
    message_id: Mapped[str | None] = mapped_column(Text)
    digest: Mapped[str] = mapped_column(String(64))
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(16), default=InboundStatus.RECEIVED)
    reason: Mapped[str | None] = mapped_column(Text)
    """Why it was ignored or quarantined."""
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"))
    enqueued_at: Mapped[datetime]
    """Last time its processing was handed to the broker; the recovery sweep uses it."""
    processed_at: Mapped[datetime | None]
    handled_at: Mapped[datetime | None]
    """When a person last released or dismissed it; a released message waits from then."""

    __table_args__ = (Index("ix_inbound_status_enqueued", "status", "enqueued_at"),)


class Case(Base):
    """One customer problem."""

    __tablename__ = "cases"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str | None] = mapped_column(String(64), unique=True)
    subject: Mapped[str] = mapped_column(Text)
    customer_address: Mapped[str] = mapped_column(Text)
    severity: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="open")
    policy: Mapped[str] = mapped_column(String(64))
    tier: Mapped[str | None] = mapped_column(String(64))
    opened_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class ThreadEntry(Base):
    """A mail in or out of a case, by Message-ID, so that replies thread."""

    __tablename__ = "thread_entries"

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    direction: Mapped[str] = mapped_column(String(3))
    """``in`` or ``out``."""
    message_id: Mapped[str | None] = mapped_column(Text, index=True)
    sender: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime]
    inbound_id: Mapped[int | None] = mapped_column(ForeignKey("inbound_messages.id"))
    outbox_id: Mapped[int | None] = mapped_column(ForeignKey("outbox.id"))
    dedup_key: Mapped[str | None] = mapped_column(String(64), unique=True)
    """For inbound mail: Message-ID and content digest; a second delivery collides here."""


class CaseEvent(Base):
    """The audit timeline of a case: what happened, when, and why."""

    __tablename__ = "case_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(32))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class OutboxStatus:
    PENDING = "pending"
    """Waiting to be sent (``next_attempt_at`` says when)."""
    SENDING = "sending"
    """Claimed by one sender; a stale claim goes back to pending."""
    SENT = "sent"
    FAILED = "failed"
    """Refused for good (5xx) or out of attempts; ``last_error`` says why."""
    AWAITING = "awaiting"
    """Handed to the relay whole; its answer to the end of the mail is slow to
    come, and its sender waits for it (``relay.end_of_data_timeout``). Left
    alone by the recovery sweep for that long; after, its sender has stopped,
    and the sweep makes it unconfirmed, for a person."""
    UNCONFIRMED = "unconfirmed"
    """Handed to the relay whole, and its answer never came: it may have taken
    the mail. Never sent again by itself; a person looks in the relay's log
    for the Message-ID and retries or dismisses it (``helpdesk outbox``)."""
    DISMISSED = "dismissed"
    """Failed or unconfirmed, and a person has dealt with it; ``last_error`` stays."""

    NEEDS_A_PERSON = (FAILED, UNCONFIRMED)


class OutboxRow(Base):
    """One rendered outgoing mail, sent exactly once."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    """What the mail is for (``ack:<case id>``); a decision taken twice collides here."""
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    sender: Mapped[str] = mapped_column(Text)
    recipients: Mapped[list[str]] = mapped_column(JSON)
    recipient_key: Mapped[str | None] = mapped_column(String(320))
    """The first recipient, lower-cased: what automatic mail to one address is counted by."""
    message_id: Mapped[str] = mapped_column(Text)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(16), default=OutboxStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    claim: Mapped[str | None] = mapped_column(String(32))
    """Token of the sender that holds the row while sending."""
    created_at: Mapped[datetime]
    next_attempt_at: Mapped[datetime]
    claimed_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    handled_at: Mapped[datetime | None]
    """When a person last retried or dismissed it; a retried mail waits from then."""

    __table_args__ = (
        Index("ix_outbox_status_next", "status", "next_attempt_at"),
        Index("ix_outbox_recipient_created", "recipient_key", "created_at"),
    )


def _table(model: type[Base]) -> Table:
    return cast(Table, model.__table__)


# The tables themselves, for the hot paths that write with plain SQL statements
# (the pipeline, the outbox) rather than through the ORM's unit of work.
INBOUND = _table(InboundMessage)
CASES = _table(Case)
THREAD = _table(ThreadEntry)
EVENTS = _table(CaseEvent)
OUTBOX = _table(OutboxRow)
