"""Reading real and broken mail: never raise, one-line subjects, stable digests.

The corpora (185 messages from flanker, flufl.bounce and talon) live in
``../shared/corpora``; see its INDEX.md.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.mail import content_digest, identify, parse_message
from tests.conftest import CORPORA, mail

pytestmark = pytest.mark.skipif(
    not CORPORA.is_dir(), reason=f"mail corpora not found at {CORPORA}"
)


def corpus_files() -> list[Path]:
    if not CORPORA.is_dir():
        return []
    return sorted(p for p in CORPORA.rglob("*") if p.is_file() and p.name != "INDEX.md")


def corpus(relative: str) -> bytes:
    return (CORPORA / relative).read_bytes()


FILES = corpus_files()
IDS = [str(p.relative_to(CORPORA)) for p in FILES]


def test_corpora_are_complete():
    assert len(FILES) == 185


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_every_corpus_message_parses(path):
    # Given a real (possibly broken) message
    raw = path.read_bytes()
    # When it is parsed and identified
    parsed = parse_message(raw)
    message_id, digest = identify(raw)
    # Then nothing raises, the subject is one line, and both readers agree
    assert "\r" not in parsed.subject and "\n" not in parsed.subject
    assert len(parsed.subject.splitlines()) <= 1
    assert message_id == parsed.message_id
    assert digest == content_digest(raw)
    assert len(digest) == 64
    if parsed.sender is not None:
        assert parsed.sender.count("@") == 1


# --- specific expectations -----------------------------------------------------------------


def test_encoded_from_name_is_decoded():
    parsed = parse_message(corpus("flanker/encoded-header.eml"))
    assert parsed.subject == "hello"
    assert parsed.sender == "foo.bar@example.com"
    assert parsed.sender_name == "Foo, Bar"
    assert parsed.message_id == "1234567890-1234-4567@example.com"
    assert parsed.body_text.strip() == "hello, world"


@pytest.mark.parametrize(
    ("relative", "subject"),
    [
        pytest.param("flanker/bilingual-simple.eml",
                     "Simple text. How are you? Как ты поживаешь?", id="utf8-encoded-word"),
        pytest.param("flufl.bounce/simple_13.txt",
                     "Utilisateur non recensé dans l'annuaire Ademe", id="q-encoded-word"),
        pytest.param("flufl.bounce/simple_38.txt",
                     "Ваше сообщение не доставлено. Mail failure.", id="raw-8bit-header"),
    ],
)
def test_encoded_subjects_are_decoded(relative, subject):
    assert parse_message(corpus(relative)).subject == subject


@pytest.mark.parametrize(
    ("relative", "in_reply_to", "references"),
    [
        pytest.param(
            "talon/standard_replies/apple_mail_2.eml",
            ("CABzQGhkMXDxUt_tSVQcg=43aniUhtsVfCZVzu-PG0kwS_uzqMw@mail.gmail.com",),
            ("CABzQGhkMXDxUt_tSVQcg=43aniUhtsVfCZVzu-PG0kwS_uzqMw@mail.gmail.com",),
            id="apple_mail_2",
        ),
        pytest.param(
            "talon/standard_replies/yahoo.eml", ("1333374262.7063.15.camel@mg5",), (),
            id="yahoo",
        ),
        pytest.param("talon/standard_replies/gmail.eml", (), (), id="gmail-without-threading"),
    ],
)
def test_talon_replies_keep_their_threading_headers(relative, in_reply_to, references):
    parsed = parse_message(corpus(relative))
    assert parsed.in_reply_to == in_reply_to
    assert parsed.references == references


@pytest.mark.parametrize(
    "path", [p for p in FILES if "talon" in p.parts],
    ids=[i for i in IDS if i.startswith("talon")],
)
def test_talon_replies_have_a_sender_and_text(path):
    parsed = parse_message(path.read_bytes())
    assert parsed.sender is not None
    assert parsed.body_text.strip()


@pytest.mark.parametrize(
    "relative",
    ["flanker/false-multipart.eml", "flanker/mailformed-headers.eml",
     "flufl.bounce/simple_13.txt", "flufl.bounce/simple_31.txt"],
)
def test_messages_that_break_get_content_still_parse(relative):
    parsed = parse_message(corpus(relative))
    assert isinstance(parsed.body_text, str)


def test_raw_8bit_display_name_keeps_the_address():
    parsed = parse_message(corpus("flanker/mailformed-headers.eml"))
    assert parsed.sender == "headers@gmail.com"
    assert "\udcd0" not in parsed.sender_name  # surrogates from raw bytes are decoded


# --- digests --------------------------------------------------------------------------------

REPLY = "talon/standard_replies/apple_mail_2.eml"


@pytest.mark.parametrize("added", [
    pytest.param(
        b"Return-Path: <other@route.example>\n"
        b"Received: from mx2.example (mx2.example [192.0.2.2])\n"
        b"\tby inbound.example with ESMTP id 42; Mon, 23 Nov 2026 09:15:00 +0000\n"
        b"Delivered-To: support@example.com\n",
        id="another-route"),
    pytest.param(
        b"X-Spam-Status: No, score=-0.1 required=5.0 tests=BAYES_00\n"
        b"X-Virus-Scanned: amavisd-new at mx2.example\n"
        b"X-MS-Exchange-Organization-SCL: 1\n"
        b"X-Spam: Yes\nX-Spamd-Result: default: False [1.20 / 15.00]\n"
        b"X-Rspamd-Queue-Id: 4F1A2B\nX-Rspamd-Server: mx2\n"
        b"Envelope-To: support@example.com\nX-Envelope-From: <alice@example.org>\n",
        id="another-mx-whose-filters-mark-it"),
])
def test_digest_ignores_what_hops_add(added):
    # Given the same message delivered by another route, whose hops add their own lines
    raw = corpus(REPLY).replace(b"\r\n", b"\n")
    # Then both have the same digest: one case, one acknowledgement
    assert content_digest(added + raw) == content_digest(raw)
    assert identify(added + raw) == identify(raw)


@pytest.mark.parametrize("header", [
    b"X-Job-Run: 2026-11-22", b"Precedence: bulk", b"Resent-Date: Sun, 22 Nov 2026 10:00:00 +0000",
])
def test_digest_differs_for_a_header_the_sender_wrote(header):
    """A script's mails, a bulk copy, a mail sent on again: each its own mail."""
    raw = mail("[P1] Nightly backup failed", message_id="same")
    assert content_digest(header + b"\r\n" + raw) != content_digest(raw)


def test_digest_differs_when_the_author_wrote_another_mail_with_the_same_id():
    raw = mail("[P1] Database down", message_id="one")
    for header in (b"From: Mallory <mallory@elsewhere.example>",
                   b"Date: Tue, 24 Nov 2026 10:00:00 +0000", b"Cc: bob@customer.example"):
        name = header.split(b":")[0]
        changed = re.sub(rb"(?m)^" + name + rb":.*$", header, raw) if re.search(
            rb"(?m)^" + name + rb":", raw) else header + b"\r\n" + raw
        assert content_digest(changed) != content_digest(raw), header


def test_digest_differs_when_the_body_changes():
    raw = corpus(REPLY)
    changed = raw.replace(b"Hello", b"Hullo", 1)
    assert changed != raw
    assert content_digest(changed) != content_digest(raw)


def test_digest_differs_when_a_header_other_than_trace_changes():
    raw = mail("[P1] Database down", message_id="one")
    assert content_digest(raw) != content_digest(raw.replace(b"[P1]", b"[P2]"))


def test_crlf_and_lf_give_the_same_digest():
    lf = corpus(REPLY).replace(b"\r\n", b"\n")
    crlf = lf.replace(b"\n", b"\r\n")
    assert content_digest(lf) == content_digest(crlf)


# --- hostile input beyond the corpora -------------------------------------------------------

HOSTILE = [
    pytest.param(b"", id="empty"),
    pytest.param(b"\r\n\r\n", id="only-separator"),
    pytest.param(b"From: \xff\xfe\n\n", id="8bit-from"),
    pytest.param(b"Content-Type: text/plain; charset=\"utf-8\x00\"\n\nabc", id="nul-in-charset"),
    pytest.param(b"Content-Type: text/plain; charset=x-unknown\n\n\xff", id="unknown-charset"),
    pytest.param(b"Content-Transfer-Encoding: base64\n\n!!!!", id="bad-base64"),
    pytest.param(b"Content-Type: multipart/mixed\n\n--x\n", id="multipart-without-boundary"),
    pytest.param(
        b"".join(b'Content-Type: multipart/mixed; boundary="b%d"\n\n--b%d\n' % (i, i)
                 for i in range(3000)) + b"Content-Type: text/plain\n\nx\n",
        id="multipart-nested-3000-deep",
    ),
    pytest.param(b"Content-Type: message/rfc822\n\n" * 3000 + b"Subject: x\n\nbody\n",
                 id="rfc822-nested-3000-deep"),
    pytest.param(b"Subject: " + b"=?utf-8?q?a?=" * 5000 + b"\n\n", id="many-encoded-words"),
]


@pytest.mark.parametrize("raw", HOSTILE)
def test_hostile_bytes_never_raise(raw):
    parsed = parse_message(raw)
    identify(raw)
    assert len(parsed.subject.splitlines()) <= 1


def test_deep_nesting_is_recorded_as_a_defect():
    raw = b"Subject: deep\n" + b"Content-Type: message/rfc822\n\n" * 3000 + b"x\n"
    parsed = parse_message(raw)
    assert parsed.subject == "deep"
    assert "UnparseableRecursionError" in parsed.defects


@pytest.mark.parametrize(
    "encoded",
    [
        pytest.param(b"=?utf-8?q?Hi=0D=0ABcc=3A_evil=40x?=", id="encoded-crlf"),
        pytest.param(b"=?utf-8?q?Hi=E2=80=A8Bcc=3A_evil=40x?=", id="line-separator"),
        pytest.param(b"=?latin-1?q?Hi=85Bcc=3A_evil=40x?=", id="next-line-c1"),
        pytest.param(b"=?utf-8?q?Hi=00=0BBcc=3A_evil=40x?=", id="nul-and-vt"),
    ],
)
def test_subject_with_encoded_line_breaks_is_one_line(encoded):
    parsed = parse_message(b"From: a@example.com\nSubject: " + encoded + b"\n\nbody\n")
    assert parsed.subject == "Hi Bcc: evil@x"


@pytest.mark.parametrize(
    ("from_", "sender", "name"),
    [
        pytest.param("Alice Example <alice@Example.ORG>", "alice@example.org", "Alice Example",
                     id="name-and-address"),
        pytest.param("alice@example.org", "alice@example.org", "", id="bare"),
        pytest.param('"alice@example.org" <alice@example.org>', "alice@example.org",
                     "alice@example.org", id="quoted-address-as-name"),
        pytest.param('"Example, Alice" <alice@example.org>', "alice@example.org",
                     "Example, Alice", id="quoted-comma"),
        pytest.param("John Q. Public <jqp@example.org>", "jqp@example.org", "John Q. Public",
                     id="period-in-name"),
        pytest.param("Dr. J. Smith <js@example.org>", "js@example.org", "Dr. J. Smith",
                     id="periods-in-name"),
        pytest.param("Acme Inc. <help@example.org>", "help@example.org", "Acme Inc.",
                     id="period-ending-name"),
        pytest.param("Smith, J. <js@example.org>", None, "", id="comma-and-period-in-name"),
        pytest.param("J. Smith <js@example.org>, Bob <bob@example.org>", None, "",
                     id="period-in-name-of-two-addresses"),
        pytest.param("Mr. alice@example.org <bob@example.org>", None, "",
                     id="period-and-address-in-name"),
        pytest.param("alice@example.org(<bob@example.org>", None, "", id="cve-2023-27043"),
        pytest.param("alice@example.org <bob@example.org>", None, "", id="unquoted-address-name"),
        pytest.param("Alice <alice@example.org>, Bob <bob@example.org>", None, "",
                     id="two-addresses"),
        pytest.param('"alice@example.org"@evil.example', None, "", id="quoted-local-part"),
        pytest.param("Team: alice@example.org;", None, "", id="group"),
        pytest.param("Mail Delivery System <>", None, "", id="null-address"),
        pytest.param("", None, "", id="empty"),
    ],
)
def test_sender_is_one_plain_address_or_none(from_, sender, name):
    parsed = parse_message(f"From: {from_}\nSubject: x\n\nbody\n".encode())
    assert (parsed.sender, parsed.sender_name) == (sender, name)


def test_two_from_headers_give_no_sender():
    parsed = parse_message(b"From: alice@example.org\nFrom: bob@example.org\n\nx\n")
    assert parsed.sender is None
    assert "AmbiguousFrom" in parsed.defects
