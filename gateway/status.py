"""How the gateway is doing: what waits, and what needs a person.

For the person on call and for a monitor: ``helpdesk status`` prints it and
exits 1 when something needs a person, so that a health check or a cron
job can say so loudly. A gateway that quietly stops acknowledging (workers
down, the broker and the sweep both away, a relay refusing every mail) is
what customers notice first; this is where it shows before they do.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, case, func, select

from gateway.database import Database
from gateway.models import INBOUND, OUTBOX, InboundStatus, OutboxStatus
from gateway.policy.table import describe_duration, plural


@dataclass(frozen=True)
class Waiting:
    count: int
    since: datetime | None
    """When the one that has waited longest began to wait."""


NOTHING = Waiting(0, None)


@dataclass(frozen=True)
class Backlog:
    inbound: Waiting
    """Stored, not yet processed (since it was received)."""
    quarantined: int
    due: Waiting
    """Outgoing mail due to be sent (since it was due)."""
    retrying: int
    """Outgoing mail waiting out its backoff after a temporary failure."""
    sending: Waiting
    """Outgoing mail claimed by a sender (since it was claimed)."""
    failed: int


def backlog(database: Database, now: datetime) -> Backlog:
    """What waits in the database at ``now``."""
    inbound_query = (
        select(INBOUND.c.status, func.count().label("mails"),
               func.min(INBOUND.c.received_at).label("since"))
        .where(INBOUND.c.status.in_([InboundStatus.RECEIVED, InboundStatus.QUARANTINED]))
        .group_by(INBOUND.c.status)
    )
    outbox_query = (
        select(OUTBOX.c.status, func.count().label("mails"),
               func.sum(case((OUTBOX.c.next_attempt_at <= now, 1), else_=0)).label("due"),
               func.min(OUTBOX.c.next_attempt_at).label("due_since"),
               func.min(OUTBOX.c.claimed_at).label("claimed_since"))
        .where(OUTBOX.c.status.in_(
            [OutboxStatus.PENDING, OutboxStatus.SENDING, OutboxStatus.FAILED]))
        .group_by(OUTBOX.c.status)
    )
    with database.reading() as connection:
        inbound = {row.status: row for row in connection.execute(inbound_query)}
        outbox = {row.status: row for row in connection.execute(outbox_query)}

    def count(rows: dict[str, Row[Any]], status: str) -> int:
        return int(rows[status].mails) if status in rows else 0

    pending = outbox.get(OutboxStatus.PENDING)
    due = int(pending.due or 0) if pending is not None else 0
    received, sending = inbound.get(InboundStatus.RECEIVED), outbox.get(OutboxStatus.SENDING)
    return Backlog(
        inbound=Waiting(received.mails, received.since) if received is not None else NOTHING,
        quarantined=count(inbound, InboundStatus.QUARANTINED),
        due=Waiting(due, pending.due_since) if due and pending is not None else NOTHING,
        retrying=count(outbox, OutboxStatus.PENDING) - due,
        sending=Waiting(sending.mails, sending.claimed_since) if sending is not None else NOTHING,
        failed=count(outbox, OutboxStatus.FAILED),
    )


def summary(backlog: Backlog, now: datetime) -> list[str]:
    """What waits, in two lines."""
    return [
        f"inbound: {backlog.inbound.count} waiting{_oldest(backlog.inbound, now)}, "
        f"{backlog.quarantined} quarantined",
        f"outbox: {backlog.due.count} due{_oldest(backlog.due, now)}, "
        f"{backlog.retrying} retrying later, {backlog.sending.count} being sent"
        f"{_oldest(backlog.sending, now)}, {backlog.failed} failed",
    ]


def needs_a_person(backlog: Backlog, now: datetime, longest_wait: timedelta) -> list[str]:
    """What a person should look at, each with where to start; empty if nothing.

    Mail waits a moment in a healthy gateway, and longer in a burst; it is a
    problem once it has waited longer than ``longest_wait``.
    """
    found = []
    late = describe_duration(longest_wait)
    ask = "are the workers, and the broker or the recovery sweep, running?"
    if _waited(backlog.inbound, now) > longest_wait:
        found.append(f"mail stored over {late} ago is not processed yet "
                     f"({backlog.inbound.count} waiting in all): {ask}")
    if _waited(backlog.due, now) > longest_wait:
        found.append(f"outgoing mail due over {late} ago is not sent yet "
                     f"({backlog.due.count} due in all): {ask}")
    if _waited(backlog.sending, now) > longest_wait:
        found.append(f"outgoing mail has been held by a sender for over {late} "
                     f"({backlog.sending.count} held in all): its sender died, and the "
                     "recovery sweep gives such mail back; is it running?")
    if backlog.quarantined:
        found.append(f"{plural(backlog.quarantined, 'quarantined mail')}: "
                     "helpdesk quarantine list")
    if backlog.failed:
        found.append(f"{plural(backlog.failed, 'failed outgoing mail')}: helpdesk outbox failed")
    return found


def _waited(waiting: Waiting, now: datetime) -> timedelta:
    return now - waiting.since if waiting.since is not None else timedelta(0)


def _oldest(waiting: Waiting, now: datetime) -> str:
    if not waiting.count:
        return ""
    age = _waited(waiting, now)
    return (" (the oldest for under a minute)" if age < timedelta(minutes=1)
            else f" (the oldest for {describe_duration(age)})")
