"""Reading inbound mail: what the rest of the gateway needs from raw bytes.

Real mail is often broken: raw 8-bit headers, unknown charsets, multiparts
without boundaries, bodies whose declared encoding lies. Every function here
returns something usable for any bytes at all, and records what was wrong
in ``defects`` instead of raising, so that one bad message never stops the
pipeline and never becomes an unhandled error.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.errors import UndecodableBytesDefect
from email.headerregistry import AddressHeader
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser, BytesParser
from email.utils import getaddresses

TRACE_HEADERS = frozenset(
    {"received", "return-path", "delivered-to", "x-original-to", "dkim-signature",
     "arc-seal", "arc-message-signature", "arc-authentication-results",
     "authentication-results", "received-spf", "x-received"}
)
"""Headers that each hop adds; two deliveries of one message differ only in these."""

CLASSIFY_HEADERS = (
    "auto-submitted", "precedence", "list-id", "list-unsubscribe", "list-post",
    "x-auto-response-suppress", "x-autoreply", "x-autorespond", "x-helpdesk-loop",
    "x-priority", "importance", "priority", "x-msmail-priority", "return-path",
)
"""Headers the classification rules and the marker hints read."""

_MESSAGE_ID = re.compile(r"<([^<>\s]+@[^<>\s]+)>")
_ADDR_SPEC = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
"""C0 and C1 controls and the Unicode line and paragraph separators: everything
``str.splitlines`` breaks on, which ``email`` refuses (or worse, writes) in a header."""
_SURROGATE = re.compile(r"[\ud800-\udfff]")
"""Left by undecodable raw bytes; they cannot be encoded into a mail we write."""
MAX_BODY_CHARS = 200_000


@dataclass(frozen=True)
class ParsedMail:
    """The parts of a mail the pipeline decides on, already sanitised."""

    message_id: str | None
    subject: str
    sender: str | None
    """The From address when it parses strictly as one plain address; else ``None``."""
    sender_name: str
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    headers: Mapping[str, str]
    """Lower-cased names of ``CLASSIFY_HEADERS`` present → their unfolded values."""
    content_type: str
    body_text: str
    defects: tuple[str, ...] = field(default=())


def identify(raw: bytes) -> tuple[str | None, str]:
    """The Message-ID and the content digest of ``raw``, cheaply (headers only).

    The digest covers everything but the trace headers, so the same message
    delivered twice, by two routes, has the same digest.
    """
    headers = BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)
    return _message_id(_header_text(headers, "message-id")), content_digest(raw)


def content_digest(raw: bytes) -> str:
    """SHA-256 of the message without its trace headers, line endings normalised."""
    head, sep, body = raw.replace(b"\r\n", b"\n").partition(b"\n\n")
    kept: list[bytes] = []
    skipping = False
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                kept.append(line)
            continue
        name = line.split(b":", 1)[0].strip().lower().decode("latin-1")
        skipping = name in TRACE_HEADERS
        if not skipping:
            kept.append(line)
    digest = hashlib.sha256(b"\n".join(kept))
    digest.update(sep + body)
    return digest.hexdigest()


def parse_message(raw: bytes) -> ParsedMail:
    """Everything the pipeline needs from ``raw``; never raises for bad input."""
    message, defects = _parse(raw)
    subject = sanitize_header_text(_header_text(message, "subject"))
    sender, sender_name = _strict_sender(message, defects)
    headers = {
        name: sanitize_header_text(value)
        for name in CLASSIFY_HEADERS
        if (value := _header_text(message, name))
    }
    return ParsedMail(
        message_id=_message_id(_header_text(message, "message-id")),
        subject=subject,
        sender=sender,
        sender_name=sender_name,
        in_reply_to=_message_ids(_header_text(message, "in-reply-to")),
        references=_message_ids(_header_text(message, "references")),
        headers=headers,
        content_type=_content_type(message),
        body_text=_body_text(message, defects),
        defects=tuple(defects),
    )


def _parse(raw: bytes) -> tuple[Message, list[str]]:
    """The parsed message and the names of its defects.

    The stdlib parser recurses per MIME level and raises ``RecursionError`` on
    absurdly deep nesting; such a message is read as headers and one opaque body.
    """
    try:
        message = email.message_from_bytes(raw, policy=email.policy.default)
    except Exception as error:
        message = BytesParser(policy=email.policy.default).parsebytes(raw, headersonly=True)
        return message, [f"Unparseable{type(error).__name__}"]
    return message, [type(d).__name__ for d in message.defects]


def sanitize_header_text(value: str, limit: int = 998) -> str:
    """One line of plain text, safe to put back into a header we write.

    Control characters and line separators (CR and LF above all: CVE-2024-6923)
    become spaces; lone surrogates (undecodable bytes) become U+FFFD.
    """
    return _SURROGATE.sub("\ufffd", _CONTROL.sub(" ", value)).strip()[:limit]


def _header_text(message: Message, name: str) -> str:
    """A header's decoded text, or its raw text when decoding fails."""
    try:
        value = message.get(name)
    except Exception:  # the header registry raises on some malformed values
        value = None
        for key, raw_value in message.raw_items():
            if key.lower() == name:
                value = raw_value
                break
    if value is None:
        return ""
    try:
        return str(value)
    except Exception:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _message_id(value: str) -> str | None:
    match = _MESSAGE_ID.search(value)
    return match.group(1) if match else None


def _message_ids(value: str) -> tuple[str, ...]:
    return tuple(_MESSAGE_ID.findall(value))[:100]


def _strict_sender(message: Message, defects: list[str]) -> tuple[str | None, str]:
    """The From address, only when it is unambiguously one plain address.

    ``parseaddr`` can attribute a crafted From to the wrong address
    (CVE-2023-27043); an automatic reply goes only to a sender that parses
    the same way by two readers and looks like an ordinary address. The two
    readers are the header registry (the RFC 5322 grammar, which records a
    defect for anything irregular, as in ``alice@example.org(<bob@example.org>``)
    and ``getaddresses`` over the undecoded text. A quoted display name may
    hold an ``@``: ``"alice@example.org" <alice@example.org>`` is one address.
    """
    sources = [value for key, value in message.raw_items() if key.lower() == "from"]
    if len(sources) != 1:
        defects.append("AmbiguousFrom")  # none, or two From lines: which one?
        return None, ""
    try:
        header = message["from"]
        if not isinstance(header, AddressHeader):
            raise TypeError("From was not read by the header registry")
        found = list(header.addresses)
        header_defects = getattr(header, "defects", ())  # BaseHeader's, absent from the stubs
        irregular = any(not isinstance(d, UndecodableBytesDefect) for d in header_defects)
        irregular = irregular or any(g.display_name for g in header.groups)
        other = getaddresses([str(sources[0])])
    except Exception:
        defects.append("UnparseableFrom")
        return None, ""
    if irregular or len(found) != 1 or len(other) != 1:
        defects.append("AmbiguousFrom")
        return None, ""
    # Raw 8-bit names are common (and harmless); they come back as surrogates.
    name = found[0].display_name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    address = found[0].addr_spec
    if other[0][1] != address or not _ADDR_SPEC.fullmatch(address):
        defects.append("InvalidFromAddress")
        return None, sanitize_header_text(name, 200)
    local, _, domain = address.rpartition("@")
    return f"{local}@{domain.lower()}", sanitize_header_text(name, 200)


def _content_type(message: Message) -> str:
    try:
        return message.get_content_type()
    except Exception:
        return "text/plain"


def _body_text(message: Message, defects: list[str]) -> str:
    """The best plain-text rendering of the body that can be had; ``""`` at worst."""
    try:
        return _best_text(message, defects)[:MAX_BODY_CHARS]
    except Exception:  # deep nesting (RecursionError), payloads the stdlib chokes on
        defects.append("UndecodableBody")
        return ""


def _best_text(message: Message, defects: list[str]) -> str:
    part: Message | None = message
    if isinstance(message, EmailMessage):
        try:
            part = message.get_body(preferencelist=("plain", "html"))
        except Exception:
            part = None
    if part is None:
        part = _first_text_part(message)
    if part is None:
        return ""
    try:
        text = part.get_content() if isinstance(part, EmailMessage) else None
    except Exception:
        defects.append("UndecodableBody")
        text = None
    if not isinstance(text, str):
        text = _decode_payload(part)
    if part.get_content_type() == "text/html":
        text = _html_to_text(text)
    return text


def _first_text_part(message: Message) -> Message | None:
    for part in message.walk():
        if part.get_content_maintype() == "text":
            return part
    return None


def _decode_payload(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        payload = str(part.get_payload()).encode("utf-8", "replace")
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, "replace")
    except (LookupError, ValueError):  # unknown charset, or one with a NUL in its name
        return payload.decode("utf-8", "replace")


_TAGS = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]+>", re.IGNORECASE | re.DOTALL)


def _html_to_text(html: str) -> str:
    import html as html_module

    return html_module.unescape(_TAGS.sub(" ", html))
