"""How the gateway is doing: what waits, and what needs a person.

For the person on call and for a monitor: ``helpdesk status`` prints it and
exits 1 when something needs a person, so that a health check or a cron
job can say so loudly. A gateway that quietly stops acknowledging (workers
down, the broker and the sweep both away, a relay refusing every mail) is
what customers notice first; this is where it shows before they do.

Mail is timed from when it began to wait (received, or made; or given back
by a person), never from the columns the gateway moves as it works: the
recovery sweep hands stuck mail out again and again, and each time would
make it look new.
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
    """Stored, not yet processed."""
    quarantined: int
    outgoing: Waiting
    """Made, not yet sent: due, retrying later, or being sent."""
    due: int
    retrying: int
    """Waiting out its backoff after a temporary failure."""
    sending: int
    """Claimed by a sender (or handed to the relay, its answer awaited)."""
    oldest_error: str
    """The relay's last answer to the outgoing mail that has waited longest
    (empty if it has not been tried, or the attempt left nothing to say)."""
    failed: int
    unconfirmed: int


def backlog(database: Database, now: datetime) -> Backlog:
    """What waits in the database at ``now``."""
    inbound_since = func.coalesce(INBOUND.c.handled_at, INBOUND.c.received_at)
    inbound_query = (
        select(INBOUND.c.status, func.count().label("mails"),
               func.min(inbound_since).label("since"))
        .where(INBOUND.c.status.in_([InboundStatus.RECEIVED, InboundStatus.QUARANTINED]))
        .group_by(INBOUND.c.status)
    )
    unsent = [OutboxStatus.PENDING, OutboxStatus.SENDING, OutboxStatus.AWAITING]
    outgoing = OUTBOX.c.status.in_(unsent)
    outbox_since = func.coalesce(OUTBOX.c.handled_at, OUTBOX.c.created_at)
    outbox_query = (
        select(OUTBOX.c.status, func.count().label("mails"),
               func.sum(case((OUTBOX.c.next_attempt_at <= now, 1), else_=0)).label("due"),
               func.min(outbox_since).label("since"))
        .where(OUTBOX.c.status.in_([*unsent, *OutboxStatus.NEEDS_A_PERSON]))
        .group_by(OUTBOX.c.status)
    )
    oldest_error = (
        select(OUTBOX.c.last_error).where(outgoing).order_by(outbox_since, OUTBOX.c.id).limit(1)
    )
    with database.reading() as connection:
        inbound = {row.status: row for row in connection.execute(inbound_query)}
        outbox = {row.status: row for row in connection.execute(outbox_query)}
        error = connection.scalar(oldest_error) if outbox.keys() & set(unsent) else None

    def count(rows: dict[str, Row[Any]], status: str) -> int:
        return int(rows[status].mails) if status in rows else 0

    def waiting(*rows: Row[Any] | None) -> Waiting:
        present = [row for row in rows if row is not None]
        if not present:
            return NOTHING
        return Waiting(sum(int(row.mails) for row in present), min(row.since for row in present))

    pending = outbox.get(OutboxStatus.PENDING)
    due = int(pending.due or 0) if pending is not None else 0
    return Backlog(
        inbound=waiting(inbound.get(InboundStatus.RECEIVED)),
        quarantined=count(inbound, InboundStatus.QUARANTINED),
        outgoing=waiting(*(outbox.get(status) for status in unsent)),
        due=due,
        retrying=count(outbox, OutboxStatus.PENDING) - due,
        sending=count(outbox, OutboxStatus.SENDING) + count(outbox, OutboxStatus.AWAITING),
        oldest_error=" ".join((error or "").split()),  # a multi-line reply on one line
        failed=count(outbox, OutboxStatus.FAILED),
        unconfirmed=count(outbox, OutboxStatus.UNCONFIRMED),
    )


def summary(backlog: Backlog, now: datetime) -> list[str]:
    """What waits, in two lines."""
    return [
        f"inbound: {backlog.inbound.count} waiting{_oldest(backlog.inbound, now)}, "
        f"{backlog.quarantined} quarantined",
        f"outbox: {backlog.outgoing.count} waiting to be sent{_oldest(backlog.outgoing, now)}: "
        f"{backlog.due} due, {backlog.retrying} retrying later, {backlog.sending} being sent; "
        f"{backlog.failed} failed, {backlog.unconfirmed} unconfirmed",
    ]


def needs_a_person(backlog: Backlog, now: datetime, longest_wait: timedelta) -> list[str]:
    """What a person should look at, each with where to start; empty if nothing.

    Mail waits a moment in a healthy gateway, and longer in a burst or while
    the relay is away; it is a problem once it has waited longer than
    ``longest_wait``.
    """
    found = []
    late = describe_duration(longest_wait)
    ask = "are the workers, and the broker or the recovery sweep, running?"
    if _waited(backlog.inbound, now) > longest_wait:
        found.append(f"mail has waited over {late} to be processed "
                     f"({backlog.inbound.count} waiting in all): {ask}")
    if _waited(backlog.outgoing, now) > longest_wait:
        where = (f"the relay's last answer to the oldest: {backlog.oldest_error}"
                 if backlog.oldest_error else ask)
        found.append(f"outgoing mail has waited over {late} to be sent "
                     f"({backlog.outgoing.count} waiting in all): {where}")
    if backlog.quarantined:
        found.append(f"{plural(backlog.quarantined, 'quarantined mail')}: "
                     "helpdesk quarantine list")
    if backlog.failed:
        found.append(f"{plural(backlog.failed, 'failed outgoing mail')}: helpdesk outbox failed")
    if backlog.unconfirmed:
        found.append(f"{plural(backlog.unconfirmed, 'outgoing mail')} the relay may or may "
                     "not have delivered (it was handed the whole mail, and its answer never "
                     "came or was never recorded): look for the Message-ID in the relay's "
                     "log; helpdesk outbox failed")
    return found


def _waited(waiting: Waiting, now: datetime) -> timedelta:
    return now - waiting.since if waiting.since is not None else timedelta(0)


def _oldest(waiting: Waiting, now: datetime) -> str:
    if not waiting.count:
        return ""
    age = _waited(waiting, now)
    return (" (the oldest for under a minute)" if age < timedelta(minutes=1)
            else f" (the oldest for {describe_duration(age)})")
