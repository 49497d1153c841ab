"""Where a stored inbound message goes next.

``process_inbound`` is the whole road, in order, in one transaction:

1. read the stored message; skip it if another run already handled it;
2. parse (a message that cannot be parsed is quarantined with the reason);
3. duplicate? (same Message-ID and content as a message already processed);
4. classify (automatic mail, bounces, our own mail: ``gateway.classify.RULES``);
5. thread: a reply that proves it belongs to a case joins that case;
6. bounces and our own mail stop here (ignored, with the reason);
7. open a case (``gateway.decide``), its first thread entry and events, and
   the acknowledgement in the outbox — all or nothing.

A database that is unwell raises, and the message is tried again (the
broker, the recovery sweep); one that refuses the message's own data (a
value that no retry would make fit: ``refuses_the_data``) has it quarantined
with the database's reason, as a defect in the code does.

The message's row is not locked first: the last statement marks it handled
only if it is still waiting (``_finish``), and a run that finds it handled
meanwhile rolls its work back. Two runs of one message at once cannot both
commit: on PostgreSQL the second's update waits for the first's commit and
then matches no row (or its thread entry collides on the dedup key first);
SQLite runs one writer at a time.

The caller sends the outbox rows returned, after the commit
(``workers.actors``). Asked to (``claim_outbox``), the pipeline creates them
already claimed for the caller, which then sends or releases them.

Every mail runs this once, so its statements are plain SQL (SQLAlchemy
Core) built once at import with bound parameters: building a statement
and working out its cache key cost several times more than running it,
and the ORM's unit of work more than the rest of the road together.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Row, bindparam, func, insert, select, update
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from gateway.casenumber import find_case_number, format_number, subject_tag
from gateway.classify import Envelope, Verdict, classify
from gateway.compose import Identity, Outgoing, Renderer, build_mail
from gateway.database import Database, new_id, unavailable
from gateway.deadlines import due_at
from gateway.decide import (
    NewCase,
    ReplyLimit,
    belongs_to_case,
    decide_new_case,
    marker_note,
    reply_limit_reached,
)
from gateway.mail import ParsedMail, parse_message
from gateway.markers import Vocabulary
from gateway.models import CASES, EVENTS, INBOUND, OUTBOX, THREAD, InboundStatus
from gateway.outbox import Claimed, add_to_outbox, claim_token, claimed_row
from gateway.policy.model import Policy
from gateway.policy.table import describe_target

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineContext:
    """Everything the pipeline needs besides the message and the time."""

    database: Database
    policy: Policy
    renderer: Renderer
    identity: Identity
    number_format: str
    own_addresses: frozenset[str]
    reply_limits: tuple[ReplyLimit, ...]
    vocabulary: Vocabulary = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "vocabulary", Vocabulary.from_policy(self.policy))


@dataclass(frozen=True)
class Outcome:
    status: str
    case_id: int | None = None
    outbox_ids: tuple[int, ...] = ()
    """Outbox rows queued pending, for the sending actor."""
    claimed: tuple[Claimed, ...] = ()
    """Outbox rows created claimed by the caller, which must send or release them."""


def process_inbound(
    context: PipelineContext, inbound_id: int, now: datetime, *, claim_outbox: bool = False
) -> Outcome:
    """Run the stored message ``inbound_id`` through the pipeline; idempotent.

    With ``claim_outbox`` the mails it queues are created claimed by the caller
    (``Outcome.claimed``), for a caller that sends them at once."""
    try:
        try:
            return _process(context, inbound_id, now, claim_outbox)
        except IntegrityError:
            # Another run processed this message, or a copy of it, at the same moment
            # and won the unique dedup key; running again finds its work and skips (or
            # records a duplicate).
            log.info("inbound %s raced another run; processing again", inbound_id)
            return _process(context, inbound_id, now, claim_outbox)
    except DBAPIError as error:
        if not refuses_the_data(error):
            raise  # the database is unwell: the broker retries, the sweep re-enqueues
        # Retrying would meet the same refusal for ever: a person looks.
        log.exception("inbound %s quarantined: the database refuses its data", inbound_id)
        return quarantine(context.database, inbound_id, now,
                          f"the database refuses its data: {error.orig!r}")
    except Exception as error:  # a defect must not block the message forever: a person looks
        if unavailable(error) is not None:
            raise  # the database is away for now (no connection free in the pool): retried
        log.exception("inbound %s quarantined", inbound_id)
        return quarantine(context.database, inbound_id, now, f"processing failed: {error!r}")


_REFUSED_FOR_THE_DATA = ("22", "23", "54")
"""SQLSTATE classes of a refusal that the same data meets every time: data
exceptions (a NUL in text, a value longer than its column), integrity
violations, and program limits (an index entry too large). Anything else (a
lost connection, a deadlock, a full disk) may pass on a retry."""


def refuses_the_data(error: DBAPIError) -> bool:
    """Whether the database refused ``error``'s statement for the values it held.

    An integrity violation reaches ``process_inbound``'s check only from its
    second run: the first is taken for a race with another run, which the
    second run then finds done. Met again, it is the data's own.
    """
    if isinstance(error, DataError | IntegrityError):
        return True
    sqlstate = getattr(error.orig, "sqlstate", None) or ""
    return sqlstate[:2] in _REFUSED_FOR_THE_DATA


def quarantine(database: Database, inbound_id: int, now: datetime, reason: str) -> Outcome:
    """Set a message aside for a person, with the reason; it stays stored."""
    try:
        with database.transaction() as connection:
            return _finish(connection, inbound_id, InboundStatus.QUARANTINED, now, reason[:2000])
    except _HandledMeanwhile:
        return _skipped(database, inbound_id)


class _HandledMeanwhile(Exception):
    """The message was no longer waiting when this run came to mark it handled."""


def _skipped(database: Database, inbound_id: int) -> Outcome:
    with database.reading() as connection:
        case_id = connection.scalar(_CASE_OF, {"inbound_id": inbound_id})
    return Outcome("skipped", case_id)


AnyRow = Row[*tuple[Any, ...]]
"""A result row of any columns."""

_STATE = (INBOUND.c.status, INBOUND.c.case_id, INBOUND.c.envelope_sender, INBOUND.c.digest)
_READ_STORED = select(*_STATE, INBOUND.c.raw).where(INBOUND.c.id == bindparam("inbound_id"))
_CASE_OF = select(INBOUND.c.case_id).where(INBOUND.c.id == bindparam("inbound_id"))
_FINISH = update(INBOUND).where(
    INBOUND.c.id == bindparam("inbound_id"), INBOUND.c.status == InboundStatus.RECEIVED
)
_FIND_DUPLICATE = select(THREAD.c.case_id).where(THREAD.c.dedup_key == bindparam("dedup_key"))
_LOCK_WAIT = select(
    func.set_config("lock_timeout", bindparam("lock_timeout"), True).label("lock_timeout")
).subquery()
_FIND_DUPLICATE_LOCKING_SENDER = select(
    _FIND_DUPLICATE.scalar_subquery(),
    func.pg_advisory_xact_lock(func.hashtextextended(bindparam("sender_key"), 0)),
).select_from(_LOCK_WAIT)
LOCK_TIMEOUT = "10s"
"""Longest wait for a lock in the case transaction on PostgreSQL (the sender's
first). A transaction that holds one and hangs (its worker cut off) must not
hold up every later mail from that sender: past this, the run fails with a
lock timeout, which is retried like any unwell database."""
_CASE_BY_NUMBER = select(CASES.c.id, CASES.c.customer_address).where(
    CASES.c.number == bindparam("number")
)
_CASE_BY_REPLY = (
    select(CASES.c.id, CASES.c.customer_address)
    .join(THREAD, THREAD.c.case_id == CASES.c.id)
    .where(THREAD.c.message_id.in_(bindparam("replied", expanding=True)))
    .limit(1)
)
_KNOWN_IN_CASE = select(THREAD.c.message_id).where(
    THREAD.c.case_id == bindparam("case_id"),
    THREAD.c.message_id.in_(bindparam("replied", expanding=True)),
)
_QUEUED_TO = (
    select(OUTBOX.c.created_at)
    .where(OUTBOX.c.recipient_key == bindparam("address"), OUTBOX.c.created_at > bindparam("since"))
    .order_by(OUTBOX.c.created_at.desc())
    .limit(bindparam("most"))
)
_INSERT_CASE = insert(CASES)
_UPDATE_CASE = update(CASES).where(CASES.c.id == bindparam("case_id"))
_INSERT_THREAD = insert(THREAD)
_INSERT_EVENTS = insert(EVENTS)


def _stored(connection: Connection, inbound_id: int) -> AnyRow | None:
    """The stored message's state and bytes."""
    return connection.execute(_READ_STORED, {"inbound_id": inbound_id}).one_or_none()


def _process(
    context: PipelineContext, inbound_id: int, now: datetime, claim_outbox: bool
) -> Outcome:
    # Parsing is the pipeline's heaviest pure work: it is done before the write
    # transaction, so that SQLite's single writer is held for database work only.
    with context.database.reading() as connection:
        row = _stored(connection, inbound_id)
    if row is None or row.status != InboundStatus.RECEIVED:
        return Outcome("skipped", row.case_id if row else None)
    try:
        mail = parse_message(row.raw)
    except Exception as error:  # one message must never stop the pipeline
        log.exception("inbound %s cannot be parsed", inbound_id)
        return quarantine(context.database, inbound_id, now, f"cannot be parsed: {error!r}")
    try:
        with context.database.transaction() as connection:
            return _decide(context, connection, inbound_id, row, mail, now, claim_outbox)
    except _HandledMeanwhile:
        return _skipped(context.database, inbound_id)


def _decide(
    context: PipelineContext, connection: Connection, inbound_id: int, row: AnyRow,
    mail: ParsedMail, now: datetime, claim_outbox: bool,
) -> Outcome:
    dedup_key = _dedup_key(mail.message_id, row.digest)
    counted = any(limit.most for limit in context.reply_limits)
    earlier = _find_duplicate(connection, dedup_key, mail.sender if counted else None)
    if earlier is not None:
        return _finish(
            connection, inbound_id, InboundStatus.DUPLICATE, now, "delivered before", earlier
        )
    verdict = classify(mail, _envelope(context, row.envelope_sender))
    case_id = _thread_case(context, connection, mail)
    if case_id is not None:
        return _add_to_case(connection, inbound_id, row, mail, case_id, verdict, dedup_key, now)
    if not verdict.opens_case:
        return _finish(
            connection, inbound_id, InboundStatus.IGNORED, now,
            f"{verdict.rule}: {verdict.reason}",
        )
    return _open_case(
        context, connection, inbound_id, row, mail, verdict, dedup_key, now, claim_outbox
    )


def _find_duplicate(connection: Connection, dedup_key: str, sender: str | None) -> int | None:
    """The case of a message processed before with ``dedup_key``, if any.

    On PostgreSQL the same statement takes a lock on the sender's address, held
    to the commit: the reply limit is read later in this transaction, and two
    mails from one address processed at once would both count the same earlier
    acknowledgements, and both pass a limit that one of them reaches. A later
    statement sees what the lock's last holder committed. The same statement
    first bounds, for the rest of the transaction, how long a lock is waited
    for (``LOCK_TIMEOUT``; the FROM clause is read before the select list).
    SQLite runs one
    writer at a time, so it needs none; nor does a gateway that counts nothing
    (``sender`` is then ``None``).
    """
    if sender and connection.dialect.name == "postgresql":
        return connection.execute(_FIND_DUPLICATE_LOCKING_SENDER, {
            "dedup_key": dedup_key, "sender_key": sender.lower(), "lock_timeout": LOCK_TIMEOUT,
        }).one()[0]
    return connection.scalar(_FIND_DUPLICATE, {"dedup_key": dedup_key})


def _dedup_key(message_id: str | None, digest: str) -> str:
    return hashlib.sha256(f"{message_id or ''}\0{digest}".encode()).hexdigest()


def _envelope(context: PipelineContext, envelope_sender: str) -> Envelope:
    return Envelope(envelope_sender, context.own_addresses, context.identity.loop_token)


def _finish(
    connection: Connection, inbound_id: int, status: str, now: datetime,
    reason: str | None = None, case_id: int | None = None, claimed: tuple[Claimed, ...] = (),
    outbox_ids: tuple[int, ...] = (),
) -> Outcome:
    """Mark the message handled, the transaction's last statement; raises
    ``_HandledMeanwhile`` (rolling the transaction back) if another run did."""
    handled = connection.execute(_FINISH, {
        "inbound_id": inbound_id, "status": status, "reason": reason, "case_id": case_id,
        "processed_at": now,
    }).rowcount
    if not handled:
        raise _HandledMeanwhile
    return Outcome(status, case_id, outbox_ids, claimed)


def _thread_case(context: PipelineContext, connection: Connection, mail: ParsedMail) -> int | None:
    """The case this mail answers, when it proves it (see ``belongs_to_case``)."""
    number = find_case_number(context.number_format, mail.subject)
    replied = [*mail.in_reply_to, *mail.references]
    case: AnyRow | None = None
    if number is not None:
        case = connection.execute(_CASE_BY_NUMBER, {"number": number}).one_or_none()
    if case is None and replied:
        case = connection.execute(_CASE_BY_REPLY, {"replied": replied}).one_or_none()
    if case is None:
        return None
    known = connection.scalars(
        _KNOWN_IN_CASE, {"case_id": case.id, "replied": replied}
    ).all() if replied else []
    proven = belongs_to_case(mail, case.customer_address, [m for m in known if m])
    return case.id if proven else None


def _add_to_case(
    connection: Connection, inbound_id: int, row: AnyRow, mail: ParsedMail, case_id: int,
    verdict: Verdict, dedup_key: str, now: datetime,
) -> Outcome:
    connection.execute(_INSERT_THREAD, [_thread_in(case_id, inbound_id, row, mail, dedup_key, now)])
    data: dict[str, Any] = {"inbound_id": inbound_id, "from": mail.sender}
    if verdict.automatic:
        data["automatic"] = verdict.reason
    connection.execute(_INSERT_EVENTS, [_event(case_id, now, "mail_received", data)])
    connection.execute(_UPDATE_CASE, {"case_id": case_id, "updated_at": now})
    return _finish(connection, inbound_id, InboundStatus.PROCESSED, now, None, case_id)


def _thread_in(
    case_id: int, inbound_id: int, row: AnyRow, mail: ParsedMail, dedup_key: str,
    now: datetime,
) -> dict[str, Any]:
    return {
        "case_id": case_id, "direction": "in", "message_id": mail.message_id,
        "sender": mail.sender or row.envelope_sender, "subject": mail.subject, "at": now,
        "inbound_id": inbound_id, "outbox_id": None, "dedup_key": dedup_key,
    }


def _event(case_id: int, at: datetime, kind: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"case_id": case_id, "at": at, "kind": kind, "data": data}


def _open_case(
    context: PipelineContext, connection: Connection, inbound_id: int, row: AnyRow,
    mail: ParsedMail, verdict: Verdict, dedup_key: str, now: datetime, claim_outbox: bool,
) -> Outcome:
    policy = context.policy
    decision = decide_new_case(mail, verdict, policy, context.vocabulary)
    # The database gives the case its identity, hence its number.
    case_id = new_id(connection.execute(_INSERT_CASE, {
        "subject": mail.subject,
        "customer_address": mail.sender or row.envelope_sender or "(unknown)",
        "severity": decision.level, "status": "open", "policy": policy.name, "tier": None,
        "opened_at": now, "updated_at": now,
    }))
    number = format_number(context.number_format, case_id, now)
    connection.execute(_UPDATE_CASE, {"case_id": case_id, "number": number})
    thread = [_thread_in(case_id, inbound_id, row, mail, dedup_key, now)]
    events = [_event(case_id, now, "opened", _opened_data(decision))]
    outbox_ids: tuple[int, ...] = ()
    claimed: tuple[Claimed, ...] = ()
    withheld = decision.withheld
    if decision.acknowledge and mail.sender:
        withheld = _over_reply_limit(context, connection, mail.sender, now)
        if withheld:
            log.warning("case %s: no acknowledgement to %s: %s", number, mail.sender, withheld)
    if decision.acknowledge and mail.sender and withheld is None:
        token = claim_token() if claim_outbox else None
        outbox_id, outgoing, thread_out, queued = _acknowledge(
            context, connection, case_id, number, decision, mail, now, token
        )
        if token:
            claimed = (claimed_row(outbox_id, token, outgoing),)
        else:
            outbox_ids = (outbox_id,)
        thread.append(thread_out)
        events.append(queued)
    else:
        events.append(_event(case_id, now, "acknowledgement_withheld", {
            "reason": withheld or "no usable sender address",
        }))
    connection.execute(_INSERT_THREAD, thread)
    connection.execute(_INSERT_EVENTS, events)
    return _finish(connection, inbound_id, InboundStatus.PROCESSED, now, None, case_id,
                   claimed, outbox_ids)


def _over_reply_limit(
    context: PipelineContext, connection: Connection, address: str, now: datetime
) -> str | None:
    """Why no more automatic mail may go to ``address`` now, if so (``reply_limit_reached``)."""
    limits = [limit for limit in context.reply_limits if limit.most]
    if not limits:
        return None
    earlier = connection.scalars(_QUEUED_TO, {
        "address": address.lower(), "since": now - max(limit.window for limit in limits),
        "most": max(limit.most for limit in limits),
    }).all()
    return reply_limit_reached(earlier, now, limits)


def _opened_data(decision: NewCase) -> dict[str, Any]:
    return {
        "level": decision.level,
        "marker": decision.marker.status.value,
        "found": [f.text for f in decision.marker.found],
        "hint": decision.marker.hint,
        "capped_by": decision.capped_by.topic if decision.capped_by else None,
    }


def _acknowledge(
    context: PipelineContext, connection: Connection, case_id: int, number: str,
    decision: NewCase, mail: ParsedMail, now: datetime, claim: str | None,
) -> tuple[int, Outgoing, dict[str, Any], dict[str, Any]]:
    """Render the acknowledgement into the outbox (claimed with ``claim``, if given);
    returns its id, the mail, its thread entry and event."""
    policy = context.policy
    level = policy.level(decision.level)
    target = level.initial_response_for(None)
    due = due_at(policy, now, target) if target is not None else None
    zone = ZoneInfo(policy.calendar.timezone)
    subject, text, html = context.renderer.render("acknowledgement", {
        "case_number": number,
        "tag": subject_tag(number),
        "subject": mail.subject,
        "customer_name": mail.sender_name,
        "policy_title": policy.title,
        "level": decision.level,
        "level_name": level.name,
        "target": describe_target(target) if target is not None else None,
        "due": due.astimezone(zone).strftime("%a %d %b %Y %H:%M %Z") if due else None,
        "severity_note": marker_note(decision, policy),
    })
    key = f"ack:{case_id}"
    outgoing = build_mail(
        identity=context.identity, to=mail.sender or "", subject=subject, text=text,
        html=html, date=now, in_reply_to=mail.message_id, references=mail.references,
    )
    outbox_id = add_to_outbox(
        connection, key=key, kind="acknowledgement", mail=outgoing, case_id=case_id, now=now,
        claim=claim,
    )
    thread_out = {
        "case_id": case_id, "direction": "out", "message_id": outgoing.message_id,
        "sender": outgoing.sender, "subject": subject, "at": now, "inbound_id": None,
        "outbox_id": outbox_id, "dedup_key": None,
    }
    queued = _event(case_id, now, "acknowledgement_queued", {
        "outbox_id": outbox_id, "due": due.isoformat() if due else None,
    })
    return outbox_id, outgoing, thread_out, queued
