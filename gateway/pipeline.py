"""Where a stored inbound message goes next.

``process_inbound`` is the whole road, in order, in one transaction:

1. lock the stored message; skip it if another run already handled it;
2. parse (a message that cannot be parsed is quarantined with the reason);
3. duplicate? (same Message-ID and content as a message already processed);
4. classify (automatic mail, bounces, our own mail: ``gateway.classify.RULES``);
5. thread: a reply that proves it belongs to a case joins that case;
6. bounces and our own mail stop here (ignored, with the reason);
7. open a case (``gateway.decide``), its first thread entry and events, and
   the acknowledgement in the outbox — all or nothing.

The caller enqueues the outbox ids returned, after the commit.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from gateway.casenumber import find_case_number, format_number, subject_tag
from gateway.classify import Envelope, Verdict, classify
from gateway.compose import Identity, Renderer, build_mail
from gateway.database import transaction
from gateway.deadlines import due_at
from gateway.decide import NewCase, belongs_to_case, decide_new_case, marker_note
from gateway.mail import ParsedMail, parse_message
from gateway.markers import Vocabulary
from gateway.models import Case, CaseEvent, InboundMessage, InboundStatus, ThreadEntry
from gateway.outbox import add_to_outbox
from gateway.policy.model import Policy
from gateway.policy.table import describe_target

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineContext:
    """Everything the pipeline needs besides the message and the time."""

    sessions: sessionmaker[Session]
    policy: Policy
    renderer: Renderer
    identity: Identity
    number_format: str
    own_addresses: frozenset[str]
    vocabulary: Vocabulary = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "vocabulary", Vocabulary.from_policy(self.policy))


@dataclass(frozen=True)
class Outcome:
    status: str
    case_id: int | None = None
    outbox_ids: tuple[int, ...] = ()


def process_inbound(context: PipelineContext, inbound_id: int, now: datetime) -> Outcome:
    """Run the stored message ``inbound_id`` through the pipeline; idempotent."""
    try:
        try:
            return _process(context, inbound_id, now)
        except IntegrityError:
            # Another worker processed a copy of this message at the same moment and won
            # the unique dedup key; running again finds its work and records a duplicate.
            log.info("inbound %s raced a duplicate; processing again", inbound_id)
            return _process(context, inbound_id, now)
    except DBAPIError:
        raise  # the database is unwell: the broker retries, the sweep re-enqueues
    except Exception as error:  # a defect must not block the message forever: a person looks
        log.exception("inbound %s quarantined", inbound_id)
        return quarantine(context.sessions, inbound_id, now, f"processing failed: {error!r}")


def quarantine(
    sessions: sessionmaker[Session], inbound_id: int, now: datetime, reason: str
) -> Outcome:
    """Set a message aside for a person, with the reason; it stays stored."""
    with transaction(sessions) as session:
        row = session.get(InboundMessage, inbound_id, with_for_update=True)
        if row is None or row.status != InboundStatus.RECEIVED:
            return Outcome("skipped", row.case_id if row else None)
        return _finish(row, InboundStatus.QUARANTINED, now, reason[:2000])


def _process(context: PipelineContext, inbound_id: int, now: datetime) -> Outcome:
    # Parsing is the pipeline's heaviest pure work: it is done before the write
    # transaction, so that SQLite's single writer is held for database work only.
    with context.sessions() as session:
        row = session.get(InboundMessage, inbound_id)
        if row is None or row.status != InboundStatus.RECEIVED:
            return Outcome("skipped", row.case_id if row else None)
        raw = row.raw
    try:
        mail = parse_message(raw)
    except Exception as error:  # one message must never stop the pipeline
        log.exception("inbound %s cannot be parsed", inbound_id)
        return quarantine(context.sessions, inbound_id, now, f"cannot be parsed: {error!r}")
    with transaction(context.sessions) as session:
        row = session.get(InboundMessage, inbound_id, with_for_update=True)
        if row is None or row.status != InboundStatus.RECEIVED:
            return Outcome("skipped", row.case_id if row else None)
        dedup_key = _dedup_key(mail.message_id, row.digest)
        earlier = session.scalar(
            select(ThreadEntry.case_id).where(ThreadEntry.dedup_key == dedup_key)
        )
        if earlier is not None:
            return _finish(row, InboundStatus.DUPLICATE, now, "delivered before", earlier)
        verdict = classify(mail, _envelope(context, row))
        case = _thread_case(context, session, mail)
        if case is not None:
            return _add_to_case(session, row, mail, case, verdict, dedup_key, now)
        if not verdict.opens_case:
            return _finish(row, InboundStatus.IGNORED, now, f"{verdict.rule}: {verdict.reason}")
        return _open_case(context, session, row, mail, verdict, dedup_key, now)


def _dedup_key(message_id: str | None, digest: str) -> str:
    return hashlib.sha256(f"{message_id or ''}\0{digest}".encode()).hexdigest()


def _envelope(context: PipelineContext, row: InboundMessage) -> Envelope:
    return Envelope(row.envelope_sender, context.own_addresses, context.identity.loop_token)


def _finish(
    row: InboundMessage, status: str, now: datetime, reason: str | None = None,
    case_id: int | None = None, outbox_ids: tuple[int, ...] = (),
) -> Outcome:
    row.status = status
    row.reason = reason
    row.case_id = case_id
    row.processed_at = now
    return Outcome(status, case_id, outbox_ids)


def _thread_case(context: PipelineContext, session: Session, mail: ParsedMail) -> Case | None:
    """The case this mail answers, when it proves it (see ``belongs_to_case``)."""
    number = find_case_number(context.number_format, mail.subject)
    replied = [*mail.in_reply_to, *mail.references]
    case: Case | None = None
    if number is not None:
        case = session.scalar(select(Case).where(Case.number == number))
    if case is None and replied:
        case_id = session.scalar(
            select(ThreadEntry.case_id).where(ThreadEntry.message_id.in_(replied)).limit(1)
        )
        case = session.get(Case, case_id) if case_id is not None else None
    if case is None:
        return None
    known = session.scalars(
        select(ThreadEntry.message_id).where(
            ThreadEntry.case_id == case.id, ThreadEntry.message_id.in_(replied)
        )
    ).all() if replied else []
    return case if belongs_to_case(mail, case.customer_address, [m for m in known if m]) else None


def _add_to_case(
    session: Session, row: InboundMessage, mail: ParsedMail, case: Case, verdict: Verdict,
    dedup_key: str, now: datetime,
) -> Outcome:
    _thread_entry(session, case, row, mail, dedup_key, now)
    data: dict[str, Any] = {"inbound_id": row.id, "from": mail.sender}
    if verdict.automatic:
        data["automatic"] = verdict.reason
    session.add(CaseEvent(case_id=case.id, at=now, kind="mail_received", data=data))
    case.updated_at = now
    return _finish(row, InboundStatus.PROCESSED, now, None, case.id)


def _thread_entry(
    session: Session, case: Case, row: InboundMessage, mail: ParsedMail, dedup_key: str,
    now: datetime,
) -> None:
    session.add(ThreadEntry(
        case_id=case.id, direction="in", message_id=mail.message_id,
        sender=mail.sender or row.envelope_sender, subject=mail.subject, at=now,
        inbound_id=row.id, dedup_key=dedup_key,
    ))


def _open_case(
    context: PipelineContext, session: Session, row: InboundMessage, mail: ParsedMail,
    verdict: Verdict, dedup_key: str, now: datetime,
) -> Outcome:
    policy = context.policy
    decision = decide_new_case(mail, verdict, policy, context.vocabulary)
    case = Case(
        subject=mail.subject, customer_address=mail.sender or row.envelope_sender or "(unknown)",
        severity=decision.level, status="open", policy=policy.name, tier=None,
        opened_at=now, updated_at=now,
    )
    session.add(case)
    session.flush()  # the database gives the case its identity, hence its number
    case.number = format_number(context.number_format, case.id, now)
    _thread_entry(session, case, row, mail, dedup_key, now)
    session.add(CaseEvent(case_id=case.id, at=now, kind="opened", data=_opened_data(decision)))
    outbox_ids: tuple[int, ...] = ()
    if decision.acknowledge and mail.sender:
        outbox_ids = (_acknowledge(context, session, case, mail, decision, now),)
    else:
        session.add(CaseEvent(
            case_id=case.id, at=now, kind="acknowledgement_withheld",
            data={"reason": decision.withheld or "no usable sender address"},
        ))
    return _finish(row, InboundStatus.PROCESSED, now, None, case.id, outbox_ids)


def _opened_data(decision: NewCase) -> dict[str, Any]:
    return {
        "level": decision.level,
        "marker": decision.marker.status.value,
        "found": [f.text for f in decision.marker.found],
        "hint": decision.marker.hint,
        "capped_by": decision.capped_by.topic if decision.capped_by else None,
    }


def _acknowledge(
    context: PipelineContext, session: Session, case: Case, mail: ParsedMail,
    decision: NewCase, now: datetime,
) -> int:
    policy = context.policy
    level = policy.level(case.severity)
    target = level.initial_response_for(case.tier)
    number = case.number or ""
    due = due_at(policy, now, target) if target is not None else None
    zone = ZoneInfo(policy.calendar.timezone)
    subject, text, html = context.renderer.render("acknowledgement", {
        "case_number": number,
        "tag": subject_tag(number),
        "subject": mail.subject,
        "customer_name": mail.sender_name,
        "policy_title": policy.title,
        "level": case.severity,
        "level_name": level.name,
        "target": describe_target(target) if target is not None else None,
        "due": due.astimezone(zone).strftime("%a %d %b %Y %H:%M %Z") if due else None,
        "severity_note": marker_note(decision, policy),
    })
    key = f"ack:{case.id}"
    outgoing = build_mail(
        key=key, identity=context.identity, to=mail.sender or "", subject=subject, text=text,
        html=html, date=now, in_reply_to=mail.message_id, references=mail.references,
    )
    outbox = add_to_outbox(
        session, key=key, kind="acknowledgement", mail=outgoing, case_id=case.id, now=now
    )
    session.flush()
    session.add(ThreadEntry(
        case_id=case.id, direction="out", message_id=outgoing.message_id,
        sender=outgoing.sender, subject=subject, at=now, outbox_id=outbox.id,
    ))
    session.add(CaseEvent(
        case_id=case.id, at=now, kind="acknowledgement_queued",
        data={"outbox_id": outbox.id, "due": due.isoformat() if due else None},
    ))
    return outbox.id
