"""What a new mail does: pure decisions over values, no I/O.

The pipeline gathers the facts (the parsed mail, the classifier's verdict,
the policy, the case it may belong to) and applies what these functions
return.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.classify import Verdict
from gateway.mail import ParsedMail
from gateway.markers import MarkerResult, MarkerStatus, Vocabulary, read_severity
from gateway.policy.model import Cap, Policy


@dataclass(frozen=True)
class NewCase:
    """How to open a case for a mail that belongs to none."""

    level: int
    marker: MarkerResult
    capped_by: Cap | None
    """The policy cap that made the level less urgent than asked, if any."""
    acknowledge: bool
    withheld: str | None
    """Why no acknowledgement is sent (automatic mail), if not."""


def decide_new_case(
    mail: ParsedMail, verdict: Verdict, policy: Policy, vocabulary: Vocabulary
) -> NewCase:
    """The level and the acknowledgement for a new case.

    No marker: the policy's default level. A cap (".Net and MS-SQL at most
    Severity 2") is judged on the subject only: a passing mention deep in a
    body must not lower a real emergency.
    """
    marker = read_severity(mail.subject, vocabulary, mail.headers)
    level = marker.level if marker.level is not None else policy.default_level
    cap = _applicable_cap(policy.severity.caps, mail.subject, level)
    if cap is not None:
        level = cap.most_urgent
    return NewCase(
        level=level,
        marker=marker,
        capped_by=cap,
        acknowledge=not verdict.automatic,
        withheld=verdict.reason if verdict.automatic else None,
    )


@dataclass(frozen=True)
class ReplyLimit:
    """At most ``most`` automatic mails to one address in any ``window``."""

    most: int
    window: timedelta
    name: str
    """The window in words, for the reason recorded when a mail is withheld."""


def reply_limit_reached(
    earlier: Sequence[datetime], now: datetime, limits: Iterable[ReplyLimit]
) -> str | None:
    """Why one more automatic mail to an address must not go, given when the
    earlier ones to it were queued; ``None`` when it may go.

    A robot that answers every mail without saying it is automatic (no
    ``Auto-Submitted``, no ``Precedence``) passes every header rule; only
    counting what it has been sent stops the loop.
    """
    for limit in limits:
        if limit.most and sum(1 for at in earlier if at > now - limit.window) >= limit.most:
            return (f"rate limit: {limit.most} automatic mails to this address "
                    f"in {limit.name} already")
    return None


def _applicable_cap(caps: Iterable[Cap], subject: str, level: int) -> Cap | None:
    lowered = subject.lower()
    for cap in caps:
        if level < cap.most_urgent and any(_mentions(lowered, w.lower()) for w in cap.words):
            return cap
    return None


def _mentions(text: str, word: str) -> bool:
    """``word`` as a whole token (".net" in "asp.net app", not in "subnet")."""
    return re.search(rf"(?<![\w.]){re.escape(word)}(?![\w])", text) is not None


def marker_note(decision: NewCase, policy: Policy) -> str | None:
    """A sentence for the acknowledgement when the level is not simply what was asked."""
    if decision.capped_by is not None:
        cap = decision.capped_by
        name = policy.level(cap.most_urgent).name
        return (
            f"Issues with {cap.topic} are handled at most at severity {cap.most_urgent} "
            f"({name}) under this support policy."
        )
    if decision.marker.status is MarkerStatus.MISSING:
        name = policy.level(decision.level).name
        return (
            f"Your subject named no severity, so the case has the default severity "
            f"{decision.level} ({name}). To change it, reply with the severity in the subject, "
            f"for example [P1]."
        )
    if decision.marker.status is MarkerStatus.CONTRADICTORY:
        return (
            "Your subject named more than one severity; the case has the most urgent of them "
            "until you tell us otherwise."
        )
    return None


def belongs_to_case(
    mail: ParsedMail, customer_address: str, known_message_ids: Iterable[str]
) -> bool:
    """Whether a mail tagged with a case's number may join that case.

    A number in the subject alone is not enough (anyone can type it): the
    mail must come from the case's customer or answer a message of its
    thread.
    """
    if mail.sender and mail.sender.lower() == customer_address.lower():
        return True
    replied = set(mail.in_reply_to) | set(mail.references)
    return bool(replied.intersection(known_message_ids))
