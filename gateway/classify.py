"""Is this mail automatic? The ordered rules that keep the gateway out of loops.

RFC 3834 and the peers' bug trackers agree: never answer mail that a
machine sent. Each rule is a small named check; ``RULES`` is the one list a
reader needs to see what makes a mail automatic, in order. The first rule
that matches gives the reason recorded on the case or the inbound message.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from gateway.mail import ParsedMail

DAEMON_LOCAL_PARTS = frozenset(
    {"mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon", "bounce", "bounces",
     "noreply-dmarc-support"}
)
REPORT_TYPES = frozenset(
    {"multipart/report", "message/delivery-status", "message/disposition-notification",
     "message/feedback-report"}
)


@dataclass(frozen=True)
class Envelope:
    """What the classifier knows besides the message: the SMTP envelope and who we are."""

    sender: str
    """Envelope sender (MAIL FROM); empty for a bounce."""
    own_addresses: frozenset[str]
    loop_token: str
    """Value of our ``X-Helpdesk-Loop`` header; mail carrying it is our own."""


@dataclass(frozen=True)
class Verdict:
    """Why a mail is automatic, or that it is not."""

    automatic: bool
    rule: str | None = None
    reason: str | None = None
    opens_case: bool = True
    """False for bounces, reports and our own mail: about mail delivery, not a request."""


@dataclass(frozen=True)
class Rule:
    name: str
    check: Callable[[ParsedMail, Envelope], str | None]
    """Returns the reason when the rule matches."""
    opens_case: bool = True


def _local_part(address: str) -> str:
    return address.rpartition("@")[0].lower() if "@" in address else address.lower()


def _values(mail: ParsedMail, name: str) -> tuple[str, ...]:
    """Every value of a header, in order: a later line may carry the mark the first lacks."""
    first = mail.headers.get(name)
    return (*((first,) if first else ()), *mail.repeated_headers.get(name, ()))


def _keyword(value: str) -> str:
    """The first word of a value, lower-cased: what comes before white space, a
    parameter (``;``) or an RFC 5322 comment (``(...)``)."""
    return re.split(r"[\s;(]", value.strip(), maxsplit=1)[0].lower()


def _own_mail(mail: ParsedMail, env: Envelope) -> str | None:
    if any(value.strip() == env.loop_token for value in _values(mail, "x-helpdesk-loop")):
        return "carries this gateway's loop header"
    if mail.sender and mail.sender.lower() in env.own_addresses:
        return f"sent from the gateway's own address {mail.sender}"
    if env.sender.lower() in env.own_addresses:
        return f"envelope sender is the gateway's own address {env.sender}"
    return None


def _null_sender(mail: ParsedMail, env: Envelope) -> str | None:
    return "empty envelope sender (a bounce)" if env.sender.strip("<> ") == "" else None


_NULL_PATH = re.compile(r"\s*<\s*>")


def _null_return_path(mail: ParsedMail, env: Envelope) -> str | None:
    # The delivering server records the envelope sender as Return-Path; "<>" is a
    # bounce's, whatever sender the mail was passed on with afterwards.
    if any(_NULL_PATH.match(value) for value in _values(mail, "return-path")):
        return "empty Return-Path (a bounce)"
    return None


def _daemon_sender(mail: ParsedMail, env: Envelope) -> str | None:
    for address in (env.sender, mail.sender or ""):
        if address and _local_part(address) in DAEMON_LOCAL_PARTS:
            return f"sent by {address}"
    return None


def _delivery_report(mail: ParsedMail, env: Envelope) -> str | None:
    if mail.content_type in REPORT_TYPES:
        return f"{mail.content_type} (a delivery or read report)"
    return None


def _auto_submitted(mail: ParsedMail, env: Envelope) -> str | None:
    # RFC 3834: a keyword, then optional parameters (";") and comments ("(...)").
    for value in _values(mail, "auto-submitted"):
        if _keyword(value) != "no":
            return f"Auto-Submitted: {value.strip()}"
    return None


def _precedence(mail: ParsedMail, env: Envelope) -> str | None:
    # Not standardised, but written as a structured header: "bulk (mass mail)" is bulk.
    for value in _values(mail, "precedence"):
        if (keyword := _keyword(value)) in ("bulk", "junk", "list", "auto_reply"):
            return f"Precedence: {keyword}"
    return None


def _mailing_list(mail: ParsedMail, env: Envelope) -> str | None:
    for name in ("list-id", "list-unsubscribe", "list-post"):
        if _values(mail, name):
            return f"mailing-list mail ({name})"
    return None


def _suppressed(mail: ParsedMail, env: Envelope) -> str | None:
    if _values(mail, "x-auto-response-suppress"):
        return "X-Auto-Response-Suppress asks for no automatic answer"
    for name in ("x-autoreply", "x-autorespond"):
        if _values(mail, name):
            return f"{name} marks an automatic reply"
    return None


def _unparseable_sender(mail: ParsedMail, env: Envelope) -> str | None:
    return "From does not parse as one plain address" if mail.sender is None else None


RULES: tuple[Rule, ...] = (
    Rule("own-mail", _own_mail, opens_case=False),
    Rule("null-sender", _null_sender, opens_case=False),
    Rule("null-return-path", _null_return_path, opens_case=False),
    Rule("daemon-sender", _daemon_sender, opens_case=False),
    Rule("delivery-report", _delivery_report, opens_case=False),
    Rule("auto-submitted", _auto_submitted),
    Rule("precedence", _precedence),
    Rule("mailing-list", _mailing_list),
    Rule("auto-response-suppress", _suppressed),
    Rule("unparseable-sender", _unparseable_sender),
)


def classify(mail: ParsedMail, envelope: Envelope) -> Verdict:
    """The first rule of ``RULES`` that matches, or not automatic."""
    for rule in RULES:
        reason = rule.check(mail, envelope)
        if reason is not None:
            return Verdict(True, rule.name, reason, rule.opens_case)
    return Verdict(False)
