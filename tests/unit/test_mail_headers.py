"""Headers as ``parse_message`` and ``identify`` read them: exactly as the stdlib reads them.

``gateway.mail`` reads headers more cheaply than one ``message.get`` per name
(one pass, one parse per distinct header, no parse where the text is certain,
no body for a header-only parse). These tests hold it to a slow reference
written here from the stdlib's plain API alone, for generated and real mail.
"""

from __future__ import annotations

import email
import email.policy
import re
from email.message import Message
from email.parser import BytesHeaderParser, BytesParser
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.mail import CLASSIFY_HEADERS, identify, parse_message, sanitize_header_text
from tests.conftest import CORPORA

MESSAGE_ID = re.compile(r"<([^<>\s]+@[^<>\s]+)>")


# A slow reference, from the stdlib alone --------------------------------------------------


def stdlib_text(message: Message, name: str) -> str:
    """``message.get(name)`` as text; the raw value when the registry cannot parse it."""
    try:
        value = message.get(name)
    except Exception:
        value = next((v for k, v in message.raw_items() if k.lower() == name), None)
    return "" if value is None else str(value)


def reference(raw: bytes) -> dict[str, object]:
    message = BytesParser(policy=email.policy.default).parsebytes(raw, headersonly=True)
    first_id = MESSAGE_ID.search(stdlib_text(message, "message-id"))
    return {
        "subject": sanitize_header_text(stdlib_text(message, "subject")),
        "message_id": first_id.group(1) if first_id else None,
        "in_reply_to": tuple(MESSAGE_ID.findall(stdlib_text(message, "in-reply-to")))[:100],
        "references": tuple(MESSAGE_ID.findall(stdlib_text(message, "references")))[:100],
        "headers": {
            name: sanitize_header_text(value)
            for name in CLASSIFY_HEADERS
            if (value := stdlib_text(message, name))
        },
    }


def reference_message_id(raw: bytes) -> str | None:
    """What ``identify`` reads: the compat32 Message-ID of the whole message."""
    message = BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)
    found = MESSAGE_ID.search(stdlib_text(message, "message-id"))
    return found.group(1) if found else None


def read(raw: bytes) -> dict[str, object]:
    parsed = parse_message(raw)
    return {
        "subject": parsed.subject,
        "message_id": parsed.message_id,
        "in_reply_to": parsed.in_reply_to,
        "references": parsed.references,
        "headers": dict(parsed.headers),
    }


# Generated headers ------------------------------------------------------------------------

PIECES = st.sampled_from([
    b"a", b"Z", b"0", b" ", b"\t", b".", b"@", b"<", b">", b"(", b")", b'"', b"\\", b",", b":",
    b"=", b"?", b"_", b"=?", b"?=", b"=?utf-8?q?", b"=?utf-8?b?", b"=?iso-8859-1?q?caf=E9?=",
    b"=?utf-8?q?a=0D=0Ab?=", b"\r\n ", b"\n\t", b"\r", b"\x00", b"\x0b", b"\x7f", b"\xc2\x85",
    b"\xe2\x80\xa8", b"\xc3\xa9", b"\xff", b"\xe9", b"<id.1@host.example>", b"<a@b>",
])
VALUES = st.lists(PIECES, max_size=12).map(b"".join)
NAMES = st.sampled_from(
    ["Subject", "SUBJECT", "Message-ID", "Message-Id", "In-Reply-To", "References",
     "From", "Content-Type", *CLASSIFY_HEADERS, "List-ID", "X-Other"]
)
HEADERS = st.lists(st.tuples(NAMES, VALUES), max_size=8)
LINE_ENDS = st.sampled_from([b"\n", b"\r\n", b"\r"])


def message(headers: list[tuple[str, bytes]], end: bytes = b"\n") -> bytes:
    lines = b"".join(name.encode() + b": " + value + end for name, value in headers)
    return lines + end + b"Message-ID: <in-the-body@example.org>" + end + b"body" + end


@settings(max_examples=400, deadline=None)
@given(HEADERS)
@example([("Subject", b"=?utf-8?q?Hi=0D=0ABcc=3A_evil=40x?=")])
@example([("Subject", b"caf\xc3\xa9 \xff raw"), ("Subject", b"second")])
@example([("Message-ID", b"<a.b@c.d>"), ("Message-ID", b"<other@x>")])
@example([("Message-ID", b"(comment) <a@b>")])
@example([("References", b"<a@b>\r\n <c@d>"), ("X-Priority", b"1 (Highest)")])
def test_headers_are_read_as_the_stdlib_reads_them(headers):
    raw = message(headers)
    assert read(raw) == reference(raw)


@settings(max_examples=400, deadline=None)
@given(HEADERS, LINE_ENDS, st.sampled_from([b"", b"\n", b"\r", b"\r\n", b"garbage\n"]))
@example([("Subject", b"folded\r here"), ("Message-ID", b"<last@x>")], b"\r", b"")
@example([("Subject", b"folded\r\n\there"), ("Message-ID", b"<last@x>")], b"\r\n", b"")
@example([("Subject", b"a\rb"), ("Message-ID", b"<last@x>")], b"\n", b"")
@example([("Subject", b"a\n\rb"), ("Message-ID", b"<after-empty@x>")], b"\n", b"")
def test_identify_reads_the_message_id_of_the_whole_message(headers, end, before):
    raw = before + message(headers, end)
    assert identify(raw)[0] == reference_message_id(raw)


# Real mail --------------------------------------------------------------------------------


def corpus_files() -> list[Path]:
    if not CORPORA.is_dir():
        return []
    return sorted(p for p in CORPORA.rglob("*") if p.is_file() and p.name != "INDEX.md")


@pytest.mark.skipif(not CORPORA.is_dir(), reason=f"mail corpora not found at {CORPORA}")
def test_corpus_headers_are_read_as_the_stdlib_reads_them():
    for path in corpus_files():
        raw = path.read_bytes()
        assert read(raw) == reference(raw), path.name
        assert identify(raw)[0] == reference_message_id(raw), path.name


@pytest.mark.parametrize("message_id", [
    "<a\x00b@customer.example>", "<a\tb@customer.example>", "<a\x7fb@customer.example>",
    "<" + "x" * 256 + "@customer.example>", "<a@" + "x" * 256 + ">",
])
def test_a_message_id_no_database_could_hold_is_none(message_id):
    """A NUL is refused by PostgreSQL's text, and over 511 characters by its index."""
    raw = f"From: alice@customer.example\r\nMessage-ID: {message_id}\r\n\r\nx\r\n".encode()
    assert identify(raw)[0] is None
    assert parse_message(raw).message_id is None


def test_a_message_id_at_the_longest_is_kept():
    message_id = "x" * 255 + "@" + "y" * 255
    raw = f"From: alice@customer.example\r\nMessage-ID: <{message_id}>\r\n\r\nx\r\n".encode()
    assert identify(raw)[0] == parse_message(raw).message_id == message_id


@pytest.mark.parametrize(("local", "kept"), [("a" * 237, True), ("a" * 238, False)])
def test_a_from_address_longer_than_an_smtp_path_is_not_answered(local, kept):
    address = f"{local}@customer.example"  # 254 characters with the first local part
    parsed = parse_message(f"From: {address}\r\nSubject: hi\r\n\r\nx\r\n".encode())
    assert parsed.sender == (address if kept else None)
    assert ("InvalidFromAddress" in parsed.defects) is not kept


def test_the_lines_after_the_first_of_a_classification_header_are_kept():
    # Given a mail that repeats classification headers, folded and with raw bytes
    raw = (
        b"From: alice@customer.example\r\nAuto-Submitted: no\r\nSubject: hi\r\n"
        b"Auto-Submitted: auto-replied;\r\n owner-email=\xe9@x\r\nAuto-Submitted: \r\n"
        b"Precedence: bulk\r\nSubject: second\r\n\r\nx\r\n"
    )
    parsed = parse_message(raw)
    # Then the first line of each is in headers, as before, and the later non-empty ones apart
    assert parsed.headers == {"auto-submitted": "no", "precedence": "bulk"}
    assert parsed.repeated_headers == {
        "auto-submitted": ("auto-replied;  owner-email=\ufffd@x",),
    }
