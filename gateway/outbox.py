"""The outbox: one row per outgoing mail, claimed, sent once, retried with backoff.

A row moves ``pending → sending → sent`` (or ``failed``, or ``unconfirmed``
when the relay never answered the end of the mail); a row claimed but
not sent goes back to ``pending`` (``release``, or the recovery sweep once
its claim is stale). Claiming is a conditional update, so two senders
running for the same row (a broker redelivery, a recovery sweep) cannot both
send it: the second finds it no longer pending and does nothing. A row that
its creator means to send at once is inserted already claimed
(``claim_token``), which spares the claim's own transaction; if its creator
dies first, the recovery sweep releases the stale claim as it does any
other. See ``gateway.relay`` for how "sent" is committed at the one moment
that makes a kill lose nothing and double nothing.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, bindparam, insert, or_, update

from gateway.compose import Outgoing
from gateway.database import Database, commit_right_after, new_id, unavailable
from gateway.models import OUTBOX, OutboxStatus
from gateway.outages import log_failure
from gateway.relay import Delivery, Transport
from gateway.settings import RelaySettings

log = logging.getLogger(__name__)

FIRST_RETRY = timedelta(seconds=30)
LONGEST_RETRY = timedelta(hours=1)


def retry_delay(attempts: int) -> timedelta:
    """Exponential backoff after the ``attempts``-th failed attempt: 30 s, 1 min, 2 min… 1 h."""
    return min(FIRST_RETRY * 2 ** max(attempts - 1, 0), LONGEST_RETRY)


# Built once: each mail runs them, and building a statement costs more than running it.
_INSERT = insert(OUTBOX)
_CLAIM = (
    update(OUTBOX)
    .where(
        OUTBOX.c.id == bindparam("outbox_id"),
        OUTBOX.c.status == OutboxStatus.PENDING,
        OUTBOX.c.next_attempt_at <= bindparam("now"),
    )
    .values(
        status=OutboxStatus.SENDING, claim=bindparam("token"), claimed_at=bindparam("now"),
        attempts=OUTBOX.c.attempts + 1,
    )
    .returning(OUTBOX.c.sender, OUTBOX.c.recipients, OUTBOX.c.raw, OUTBOX.c.attempts)
)
_SETTLE = update(OUTBOX).where(
    OUTBOX.c.id == bindparam("outbox_id"), OUTBOX.c.claim == bindparam("held_claim")
)
"""Sets the columns given with the parameters, while the row is still ours."""
_RELEASE = (
    update(OUTBOX)
    .where(
        OUTBOX.c.id == bindparam("outbox_id"), OUTBOX.c.claim == bindparam("held_claim"),
        OUTBOX.c.status == OutboxStatus.SENDING,
    )
    .values(status=OutboxStatus.PENDING, claim=None, attempts=OUTBOX.c.attempts - 1,
            next_attempt_at=bindparam("now"))
)


@dataclass(frozen=True)
class Claimed:
    """A row held for sending by whoever has this value: send it, or ``release`` it."""

    id: int
    claim: str
    sender: str
    recipients: tuple[str, ...]
    raw: bytes
    attempts: int


def claim_token() -> str:
    return secrets.token_hex(8)


def add_to_outbox(
    connection: Connection, *, key: str, kind: str, mail: Outgoing, case_id: int | None,
    now: datetime, claim: str | None = None,
) -> int:
    """A new row, in the caller's transaction (so it exists iff the decision does);
    returns its id. Pending, or with ``claim`` already held by the caller (see
    ``claimed_row``)."""
    return new_id(connection.execute(_INSERT, {
        "key": key, "kind": kind, "case_id": case_id, "sender": mail.sender,
        "recipients": list(mail.recipients),
        "recipient_key": mail.recipients[0].lower() if mail.recipients else None,
        "message_id": mail.message_id, "raw": mail.raw,
        "status": OutboxStatus.SENDING if claim else OutboxStatus.PENDING,
        "attempts": 1 if claim else 0, "claim": claim, "claimed_at": now if claim else None,
        "created_at": now, "next_attempt_at": now,
    }))


def claimed_row(outbox_id: int, token: str, mail: Outgoing) -> Claimed:
    """What the caller holds after ``add_to_outbox(…, claim=token)`` has committed."""
    return Claimed(outbox_id, token, mail.sender, tuple(mail.recipients), mail.raw, 1)


def claim(database: Database, outbox_id: int, now: datetime) -> Claimed | None:
    """Take the row for sending, or ``None`` if it is not due or someone else has it.

    One conditional ``UPDATE … RETURNING``: the row is taken and read in a
    single statement, so two claimants cannot both see it pending.
    """
    token = claim_token()
    with database.transaction() as connection:
        taken = connection.execute(
            _CLAIM, {"outbox_id": outbox_id, "token": token, "now": now}
        ).one_or_none()
    if taken is None:
        return None
    return Claimed(outbox_id, token, taken.sender, tuple(taken.recipients), taken.raw,
                   taken.attempts)


def _settle(
    database: Database, claimed: Claimed,
    release: Callable[[], None] | None = None, **values: object,
) -> bool:
    """Set ``values`` on the row if it is still ours; ``release`` runs just before
    the commit (see ``commit_right_after``), and not at all if the row is lost."""
    with database.connect() as connection:
        held = connection.execute(
            _SETTLE, {"outbox_id": claimed.id, "held_claim": claimed.claim, **values}
        ).rowcount
        if not held:
            return False  # closing the connection rolls back
        if release is None:
            connection.commit()
        else:
            commit_right_after(connection, release)
        return True


def send_one(
    database: Database,
    transport: Transport,
    outbox_id: int,
    now: datetime,
    *,
    max_attempts: int,
) -> tuple[Delivery | None, timedelta | None]:
    """Try to send one row. Returns the delivery (``None`` if not ours to send) and,
    after a temporary failure, the delay before the next attempt."""
    claimed = claim(database, outbox_id, now)
    if claimed is None:
        return None, None
    return send_claimed(database, transport, claimed, now, max_attempts=max_attempts)


def release(database: Database, claimed: Claimed, now: datetime) -> bool:
    """Give back a row that was claimed but not sent, as pending and due now, without
    counting the attempt; False if it is no longer ours, or no longer being sent
    (a row recorded as sent is never handed out again)."""
    with database.transaction() as connection:
        released = connection.execute(
            _RELEASE, {"outbox_id": claimed.id, "held_claim": claimed.claim, "now": now}
        ).rowcount
    return bool(released)


def _record_refused(database: Database, claimed: Claimed, delivery: Delivery) -> None:
    """Note on a sent row the recipients the relay refused (``Delivery.refused``),
    so that a person sees who did not get it; they are not tried again."""
    refused = "; ".join(delivery.refused)
    log.warning("outbox %s: sent, but refused for %s", claimed.id, refused)
    try:
        _settle(database, claimed, last_error=f"refused for some recipients: {refused}"[:2000])
    except Exception as error:  # the mail is sent and recorded as sent; only the note is lost
        log_failure(log, error, "outbox %s: the refused recipients could not be recorded",
                    claimed.id)


def _sent(now: datetime) -> dict[str, object]:
    """The values that record a row as sent at ``now``."""
    return {"status": OutboxStatus.SENT, "sent_at": now, "last_error": None}


RECORD_SENT_WITHIN = 20.0
"""Seconds to go on trying to record what became of a mail handed to the relay
when the database is away at that moment (the COMMIT of "sent" failed).

Given up sooner, the row would be sent again once the database is back: the
customer would get the mail twice. The claim is then as old as the mail's
handover, plus the COMMIT's own wait (``commit_right_after``, 30 s at most),
plus this: within the recovery sweep's ``stale_after`` (60 s by default),
after which a claim is taken for a dead sender's and released, for any mail
handed over in under ten seconds."""

RECORD_ANSWER_WITHIN = 120.0
"""Seconds to go on trying to record the relay's answer to a mail whose row
already says it went ("sent", or awaiting the answer): the recovery sweep
leaves such a row alone, so only the worker's time limit bounds the wait.
A database away for longer leaves the row as it was, and the log says what
the relay answered."""

POOL_WAIT = 30.0
"""Seconds a statement may wait for a connection from the pool (SQLAlchemy's
``pool_timeout``), on top of its own time."""

AFTER_THE_END = RECORD_SENT_WITHIN + POOL_WAIT + RECORD_ANSWER_WITHIN + POOL_WAIT
"""Seconds a sender may spend, besides the relay's own wait, between a mail's end
and the record of its answer: the record that the answer is awaited, then the
record of the answer, each with its patience and a last try's pool wait."""


def _awaiting(now: datetime, gives_up_at: datetime) -> dict[str, object]:
    """The values that record a row handed to the relay whose answer is awaited, by
    a sender that began at ``now`` and gives up at ``gives_up_at`` (kept in
    ``next_attempt_at``, which a row that is not pending has no other use
    for): past that, and the sweep's margin, its sender has stopped."""
    return {"status": OutboxStatus.AWAITING, "sent_at": now, "next_attempt_at": gives_up_at,
            "last_error": None}


def longest_send(relay: RelaySettings) -> timedelta:
    """The longest that processing a mail and sending its acknowledgement can take:
    each exchange with the relay up to ``relay.timeout`` (about a dozen, with
    STARTTLS, a login and one reconnection), its answer to the end of the mail
    up to ``relay.end_of_data_timeout``, the database's waits to record it (a
    COMMIT's 30 s, and ``AFTER_THE_END``), and a minute for processing the mail
    before its acknowledgement goes. Workers are not stopped sooner. (A relay
    that trickles the replies before the end of a mail, each within
    ``relay.timeout``, can take longer; the mail's end has not gone then, and
    a stopped sender's claim is given back by the sweep.)"""
    return timedelta(seconds=relay.end_of_data_timeout + 16 * relay.timeout + 30
                     + AFTER_THE_END + 60)


SENDER_STOPPED = ("handed to the relay, whose answer to its end was still awaited when its "
                  "sender stopped: the answer was never recorded")
"""Why an awaiting row became unconfirmed (``abandoned_waits``)."""


def _record_patiently(
    database: Database, claimed: Claimed, values: dict[str, object],
    within: float | None = None,
) -> bool:
    """Record ``values`` on a row whose mail went to the relay, trying again while
    the database is unavailable, for up to ``within`` seconds (by default
    ``RECORD_SENT_WITHIN``); raises the last error if it stays away. False if
    the row is no longer ours."""
    status = values["status"]
    deadline = time.monotonic() + (RECORD_SENT_WITHIN if within is None else within)
    pause = 0.25
    while True:
        try:
            held = _settle(database, claimed, None, **values)
        except Exception as error:
            if unavailable(error) is None or time.monotonic() + pause > deadline:
                log.error("outbox %s: handed to the relay, but '%s' could not be recorded",
                          claimed.id, status)
                raise
            time.sleep(pause)
            pause = min(pause * 2, 4.0)
            continue
        if not held:  # the sweep released it as stale, or made it unconfirmed, meanwhile
            log.error("outbox %s: handed to the relay, but no longer held when '%s' could "
                      "be recorded: the recovery sweep took it meanwhile, and it may go "
                      "again (if it was released) or wait for a person (if unconfirmed)",
                      claimed.id, status)
        return held


def _outcome(
    delivery: Delivery, claimed: Claimed, now: datetime, max_attempts: int
) -> tuple[dict[str, object], timedelta | None]:
    """What to record of ``delivery`` (not aborted), and the delay before the next
    attempt after a temporary failure."""
    if delivery.outcome == "sent":
        return _sent(now), None
    if delivery.outcome == "unconfirmed":
        return {"status": OutboxStatus.UNCONFIRMED, "sent_at": now,
                "last_error": delivery.detail}, None
    if delivery.outcome == "temporary" and claimed.attempts < max_attempts:
        delay = retry_delay(claimed.attempts)
        return {"status": OutboxStatus.PENDING, "claim": None, "next_attempt_at": now + delay,
                "last_error": delivery.detail, "sent_at": None}, delay
    reason = delivery.detail
    if delivery.outcome == "temporary":
        reason = f"gave up after {claimed.attempts} attempts: {reason}"
    return {"status": OutboxStatus.FAILED, "last_error": reason, "sent_at": None}, None


def send_claimed(
    database: Database,
    transport: Transport,
    claimed: Claimed,
    now: datetime,
    *,
    max_attempts: int,
) -> tuple[Delivery | None, timedelta | None]:
    """``send_one`` for a row the caller already holds."""
    outbox_id = claimed.id
    released = awaiting = unrecorded = False
    began = time.monotonic()

    def gives_up_at() -> datetime:
        """When this sender will have stopped waiting for the relay and recording its
        answer, on the clock of ``now``: from here, at most the record of this
        wait, the wait, and the record of the answer, each record with its
        patience and a last try's wait for a pooled connection."""
        waited = time.monotonic() - began + transport.answer_within + AFTER_THE_END
        return now + timedelta(seconds=waited)

    def record_awaiting() -> None:
        nonlocal awaiting
        _record_patiently(database, claimed, _awaiting(now, gives_up_at()))
        awaiting = True

    def commit_sent(release: Callable[[], None]) -> bool:
        nonlocal unrecorded

        def let_go() -> None:
            nonlocal released
            release()
            released = True

        try:
            return _settle(database, claimed, let_go, **_sent(now))
        except Exception as error:
            if not released:
                raise  # nothing went: the relay drops a transaction without its end
            # The mail went, and "sent" may not be recorded. Until the relay's answer
            # says what became of it, the row must not look abandoned: the sweep
            # releases a claim as old as that wait may make it, and it would go again.
            log.warning("outbox %s: handed over, but 'sent' could not be recorded: %s",
                        outbox_id, unavailable(error) or repr(error))
            unrecorded = True
            try:
                record_awaiting()
            except Exception:
                log.error("outbox %s: the database stays away; the mail goes again (released "
                          "to the sending queue, or by the recovery sweep)", outbox_id)
                raise
            return True

    def waiting() -> None:
        """The relay is slow to answer: a sender stopped now must not leave "sent"."""
        if awaiting:
            return
        try:
            record_awaiting()
        except Exception:  # the wait goes on; only a stop meanwhile would leave "sent"
            log.error("outbox %s: could not record that the relay's answer is awaited",
                      outbox_id)

    delivery = transport.deliver(claimed.sender, claimed.recipients, claimed.raw, commit_sent,
                                 waiting)
    if delivery.outcome == "aborted":
        return delivery, None
    values, delay = _outcome(delivery, claimed, now, max_attempts)
    if delivery.outcome == "sent" and not awaiting:
        pass  # committed with the final dot
    elif released:  # the mail's end went: what the relay answered must not be lost
        try:
            # The row says the mail went ("sent", or awaiting): the sweep leaves it be.
            if _record_patiently(database, claimed, values, RECORD_ANSWER_WITHIN) \
                    and unrecorded:
                log.info("outbox %s: '%s' recorded after all", outbox_id, values["status"])
        except Exception:
            log.error("outbox %s: the relay answered '%s', and the database stayed away: "
                      "the row still says the mail went, and this answer is recorded nowhere "
                      "else", outbox_id, delivery.detail)
            raise
    else:
        _settle(database, claimed, None, **values)
    if delivery.refused:
        _record_refused(database, claimed, delivery)
    if delivery.outcome == "unconfirmed":
        log.error("outbox %s: %s; it may have been delivered, and is not sent again "
                  "by itself (helpdesk outbox failed)", outbox_id, delivery.detail)
    elif delivery.outcome == "temporary" and delay is not None:
        log.warning("outbox %s: %s; retry in %s", outbox_id, delivery.detail, delay)
    elif delivery.outcome != "sent":
        log.error("outbox %s failed: %s", outbox_id, values["last_error"])
    return delivery, delay


def abandoned_waits(
    database: Database, now: datetime, margin: timedelta, *, began_before: datetime | None = None
) -> list[int]:
    """Make unconfirmed the rows awaiting the relay's answer whose sender gave up
    waiting more than ``margin`` ago, or began before ``began_before`` (a
    process whose senders are all its own, started then): the sender stopped
    (a kill, a restart), and whether the relay took the mail only its log can
    say. The claim goes with it, so a sender that did not stop after all
    cannot write over what a person decides. Run by the recovery sweep;
    returns the rows it changed."""
    abandoned = OUTBOX.c.next_attempt_at <= now - margin
    if began_before is not None:
        abandoned = or_(abandoned, OUTBOX.c.sent_at < began_before)
    with database.transaction() as connection:
        changed = sorted(connection.scalars(
            update(OUTBOX)
            .where(OUTBOX.c.status == OutboxStatus.AWAITING, abandoned)
            .values(status=OutboxStatus.UNCONFIRMED, last_error=SENDER_STOPPED, claim=None)
            .returning(OUTBOX.c.id)
        ))
    if changed:
        log.error("outbox %s: %s; not sent again by itself (helpdesk outbox failed)",
                  ", ".join(map(str, changed)), SENDER_STOPPED)
    return changed
