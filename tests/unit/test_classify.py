"""Automatic mail: the ordered rules, case by case and over real bounces and replies."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.classify import RULES, Envelope, Verdict, classify
from gateway.mail import parse_message
from tests.conftest import CORPORA, mail

OWN = frozenset({"support@example.com", "help@example.com"})
LOOP = "loop-token-123"
CUSTOMER = "alice@customer.example"


def envelope(sender: str = CUSTOMER) -> Envelope:
    return Envelope(sender=sender, own_addresses=OWN, loop_token=LOOP)


def customer_mail(**headers: str) -> bytes:
    return mail("[P2] Reports are slow", headers=headers)


def raw_mail(from_: str, content_type: str = "text/plain") -> bytes:
    return (
        f"From: {from_}\nTo: support@example.com\nSubject: x\nMessage-ID: <1@x.example>\n"
        f"Content-Type: {content_type}; boundary=b\n\nbody\n"
    ).encode()


def lines_mail(*lines: str) -> bytes:
    """A customer mail with extra header lines exactly as given, repeated names and all."""
    extra = "".join(f"{line}\n" for line in lines)
    return (
        f"From: Alice <{CUSTOMER}>\nTo: support@example.com\nSubject: [P2] Reports are slow\n"
        f"Message-ID: <1@customer.example>\n{extra}\nbody\n"
    ).encode()


def report() -> bytes:
    """An RFC 3464 delivery report from a sender that does not look like a daemon."""
    return (
        b"From: Mail System <notices@relay.example>\n"
        b"To: support@example.com\n"
        b"Subject: Delivery Status Notification\n"
        b"MIME-Version: 1.0\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n'
        b"\n--b\nContent-Type: text/plain\n\nYour message could not be delivered.\n"
        b"--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; relay.example\n"
        b"\nFinal-Recipient: rfc822; bob@example.org\nAction: failed\nStatus: 5.1.1\n"
        b"--b--\n"
    )


# (raw message, envelope sender, expected rule or None, opens a case)
CASES = [
    pytest.param(customer_mail(), CUSTOMER, None, True, id="ordinary-mail"),
    pytest.param(customer_mail(**{"Auto-Submitted": "no"}), CUSTOMER, None, True,
                 id="auto-submitted-no"),
    pytest.param(customer_mail(**{"Auto-Submitted": "No (typed by a person)"}), CUSTOMER, None,
                 True, id="auto-submitted-no-with-comment"),
    pytest.param(customer_mail(**{"Auto-Submitted": "auto-replied"}), CUSTOMER,
                 "auto-submitted", True, id="auto-submitted-auto-replied"),
    pytest.param(customer_mail(**{"Auto-Submitted": "auto-generated"}), CUSTOMER,
                 "auto-submitted", True, id="auto-submitted-auto-generated"),
    pytest.param(customer_mail(**{"Auto-Submitted": "Auto-Replied; owner-email=a@b.c"}),
                 CUSTOMER, "auto-submitted", True, id="auto-submitted-with-parameter"),
    pytest.param(customer_mail(Precedence="bulk"), CUSTOMER, "precedence", True,
                 id="precedence-bulk"),
    pytest.param(customer_mail(Precedence="junk"), CUSTOMER, "precedence", True,
                 id="precedence-junk"),
    pytest.param(customer_mail(Precedence="List"), CUSTOMER, "precedence", True,
                 id="precedence-list"),
    pytest.param(customer_mail(Precedence="first-class"), CUSTOMER, None, True,
                 id="precedence-first-class"),
    pytest.param(customer_mail(Precedence="bulk (mass mail)"), CUSTOMER, "precedence", True,
                 id="precedence-bulk-with-comment"),
    pytest.param(customer_mail(Precedence="Junk;x=y"), CUSTOMER, "precedence", True,
                 id="precedence-junk-with-parameter"),
    pytest.param(customer_mail(Precedence="first-class (not bulk)"), CUSTOMER, None, True,
                 id="precedence-first-class-with-comment"),
    pytest.param(lines_mail("Precedence: first-class", "Precedence: bulk"), CUSTOMER,
                 "precedence", True, id="precedence-bulk-on-a-second-line"),
    pytest.param(lines_mail("Auto-Submitted: no", "Auto-Submitted: auto-replied"), CUSTOMER,
                 "auto-submitted", True, id="auto-submitted-auto-replied-on-a-second-line"),
    pytest.param(lines_mail("Auto-Submitted: no", "Auto-Submitted: No (really)"), CUSTOMER,
                 None, True, id="auto-submitted-no-twice"),
    pytest.param(customer_mail(**{"Return-Path": "<>"}), CUSTOMER, "null-return-path", False,
                 id="null-return-path"),
    pytest.param(lines_mail("Return-Path: <relay@forwarder.example>", "Return-Path: < >"),
                 CUSTOMER, "null-return-path", False, id="null-return-path-on-a-second-line"),
    pytest.param(customer_mail(**{"Return-Path": f"<{CUSTOMER}>"}), CUSTOMER, None, True,
                 id="customer-return-path"),
    pytest.param(customer_mail(**{"List-Id": "<users.lists.example>"}), CUSTOMER,
                 "mailing-list", True, id="list-id"),
    pytest.param(customer_mail(**{"List-Unsubscribe": "<mailto:leave@lists.example>"}),
                 CUSTOMER, "mailing-list", True, id="list-unsubscribe"),
    pytest.param(lines_mail("List-Id:", "List-Id: <users.lists.example>"), CUSTOMER,
                 "mailing-list", True, id="list-id-on-a-second-line"),
    pytest.param(customer_mail(**{"X-Auto-Response-Suppress": "All"}), CUSTOMER,
                 "auto-response-suppress", True, id="x-auto-response-suppress"),
    pytest.param(customer_mail(), "", "null-sender", False, id="null-envelope-sender"),
    pytest.param(customer_mail(), "<>", "null-sender", False, id="null-envelope-sender-brackets"),
    pytest.param(customer_mail(), "MAILER-DAEMON@mx.example", "daemon-sender", False,
                 id="mailer-daemon-envelope"),
    pytest.param(raw_mail("Mail Delivery Subsystem <mailer-daemon@mx.example>"), CUSTOMER,
                 "daemon-sender", False, id="mailer-daemon-from"),
    pytest.param(raw_mail("postmaster@mx.example"), CUSTOMER, "daemon-sender", False,
                 id="postmaster-from"),
    pytest.param(report(), CUSTOMER, "delivery-report", False, id="multipart-report"),
    pytest.param(customer_mail(**{"X-Helpdesk-Loop": LOOP}), CUSTOMER, "own-mail", False,
                 id="own-loop-header"),
    pytest.param(customer_mail(**{"X-Helpdesk-Loop": "someone-elses-token"}), CUSTOMER, None,
                 True, id="foreign-loop-header"),
    pytest.param(lines_mail("X-Helpdesk-Loop: someone-elses-token", f"X-Helpdesk-Loop: {LOOP}"),
                 CUSTOMER, "own-mail", False, id="own-loop-header-on-a-second-line"),
    pytest.param(raw_mail("Support <Support@Example.com>"), CUSTOMER, "own-mail", False,
                 id="own-address-in-from"),
    pytest.param(customer_mail(), "help@example.com", "own-mail", False,
                 id="own-address-as-envelope-sender"),
    pytest.param(raw_mail("alice@example.org(<bob@example.org>"), CUSTOMER,
                 "unparseable-sender", True, id="cve-2023-27043-from"),
    pytest.param(raw_mail("Alice <alice@example.org>, Bob <bob@example.org>"), CUSTOMER,
                 "unparseable-sender", True, id="two-from-addresses"),
    pytest.param(raw_mail('"alice@example.org" <alice@example.org>'), CUSTOMER, None, True,
                 id="quoted-address-as-name"),
    pytest.param(raw_mail("John Q. Public <jqp@customer.example>"), CUSTOMER, None, True,
                 id="period-in-name"),
    pytest.param(raw_mail("Acme Inc. <help@customer.example>"), CUSTOMER, None, True,
                 id="period-ending-name"),
]


@pytest.mark.parametrize(("raw", "sender", "rule", "opens_case"), CASES)
def test_rules(raw, sender, rule, opens_case):
    # Given a mail and its envelope
    parsed = parse_message(raw)
    # When it is classified
    verdict = classify(parsed, envelope(sender))
    # Then the expected rule matches (or none), with a reason
    assert verdict.rule == rule
    assert verdict.automatic is (rule is not None)
    assert verdict.opens_case is opens_case
    if rule is not None:
        assert verdict.reason


def test_first_matching_rule_wins():
    # A bounce that also carries Auto-Submitted is a bounce (opens no case)
    parsed = parse_message(customer_mail(**{"Auto-Submitted": "auto-replied"}))
    assert classify(parsed, envelope("")).rule == "null-sender"


def test_not_automatic_verdict_is_plain():
    assert classify(parse_message(customer_mail()), envelope()) == Verdict(False)


def test_rule_names_are_unique():
    names = [rule.name for rule in RULES]
    assert len(names) == len(set(names))


# --- over the corpora ------------------------------------------------------------------------

needs_corpora = pytest.mark.skipif(
    not CORPORA.is_dir(), reason=f"mail corpora not found at {CORPORA}"
)


def corpus(folder: str) -> list[Path]:
    if not CORPORA.is_dir():
        return []
    return sorted(p for p in (CORPORA / folder).rglob("*") if p.is_file())


BOUNCES = corpus("flufl.bounce")
REPLIES = corpus("talon")


@needs_corpora
@pytest.mark.parametrize("path", BOUNCES, ids=[p.name for p in BOUNCES])
def test_bounce_with_null_envelope_sender_is_automatic(path):
    # Given a real bounce as bounces arrive: MAIL FROM:<>
    verdict = classify(parse_message(path.read_bytes()), envelope(""))
    # Then it is automatic and opens no case
    assert verdict.automatic
    assert not verdict.opens_case


@needs_corpora
def test_bounces_caught_by_headers_alone():
    # Given the 103 bounces with a normal-looking envelope sender
    caught = {
        path.name: classify(parse_message(path.read_bytes()), envelope("relay@isp.example"))
        for path in BOUNCES
    }
    missed = sorted(name for name, verdict in caught.items() if not verdict.automatic)
    # Then headers alone catch at least as many as the RT/Zammad heuristic (96/103)
    assert len(BOUNCES) == 103
    hits = len(BOUNCES) - len(missed)
    print(f"\nheaders alone: {hits}/103 bounces automatic; missed: {', '.join(missed)}")
    assert hits >= 96


@needs_corpora
@pytest.mark.parametrize("path", REPLIES, ids=[p.name for p in REPLIES])
def test_ordinary_replies_are_not_automatic(path):
    # Given one of talon's 13 ordinary replies with a normal envelope sender
    parsed = parse_message(path.read_bytes())
    verdict = classify(parsed, envelope(parsed.sender or CUSTOMER))
    # Then it is not automatic
    assert len(REPLIES) == 13
    assert verdict == Verdict(False), verdict.reason
