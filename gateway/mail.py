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
from email._header_value_parser import UnstructuredTokenList
from email.errors import MessageDefect, ObsoleteHeaderDefect, UndecodableBytesDefect
from email.headerregistry import (
    AddressHeader,
    BaseHeader,
    HeaderRegistry,
    UniqueUnstructuredHeader,
    UnstructuredHeader,
)
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser, BytesParser
from email.utils import getaddresses
from typing import Any

TRACE_HEADERS = frozenset(
    {"received", "return-path", "delivered-to", "x-original-to", "dkim-signature",
     "arc-seal", "arc-message-signature", "arc-authentication-results",
     "authentication-results", "received-spf", "x-received", "envelope-to",
     "x-envelope-from", "x-envelope-to", "x-forwarded-to", "x-forwarded-for",
     "original-recipient", "x-original-authentication-results"}
)
"""Headers that each hop adds; two deliveries of one message differ in these."""

TRANSIT_PREFIXES = (
    "x-spam", "x-rspamd-", "x-virus-", "x-amavis-", "x-greylist", "x-ms-exchange-",
    "x-forefront-", "x-microsoft-antispam", "x-proofpoint-", "x-mimecast-", "x-barracuda-",
    "x-ironport-", "x-sophos-", "x-policyd-",
)
"""Headers that the filters of a hop add (spam and virus scanners, Exchange
Online's transport): the same mail through another MX carries others. Only
these are left out besides the trace headers: the sender's own headers, known
or not (``X-Job-Run``, ``Precedence``, ``Resent-*``), tell one mail from
another, and must stay in."""

CLASSIFY_HEADERS = (
    "auto-submitted", "precedence", "list-id", "list-unsubscribe", "list-post",
    "x-auto-response-suppress", "x-autoreply", "x-autorespond", "x-helpdesk-loop",
    "x-priority", "importance", "priority", "x-msmail-priority", "return-path",
)
"""Headers the classification rules and the marker hints read."""

_CLASSIFY_HEADERS = frozenset(CLASSIFY_HEADERS)

_READ_HEADERS = frozenset({"subject", "message-id", "in-reply-to", "references", *CLASSIFY_HEADERS})
"""Every header ``parse_message`` reads as text (From is read apart, strictly)."""

_ID_PART = r"[^<>\s\x00-\x1f\x7f-\x9f\ud800-\udfff]{1,255}"
_MESSAGE_ID = re.compile(rf"<({_ID_PART}@{_ID_PART})>")
"""A msg-id in angle brackets. Not one with control characters or undecodable
bytes (PostgreSQL's text refuses a NUL, so the store would fail and the sender
retry for ever), nor one longer than 511 characters: the thread's Message-IDs
are indexed, and PostgreSQL refuses an index entry over 2,704 bytes."""
MAX_ADDRESS = 254
"""RFC 5321 §4.5.3.1.3: a path holds at most 256 octets, its brackets included.
A From address beyond it is no address to answer (and no reply-limit key)."""
PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*")
"""A plain ASCII address: the only kind the gateway answers, or writes into an
envelope or a header of its own (the settings' addresses are checked by it too)."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
"""C0 and C1 controls and the Unicode line and paragraph separators: everything
``str.splitlines`` breaks on, which ``email`` refuses (or worse, writes) in a header."""
_SURROGATE = re.compile(r"[\ud800-\udfff]")
"""Left by undecodable raw bytes; they cannot be encoded into a mail we write."""
MAX_BODY_CHARS = 200_000

_OBSOLETE_PHRASE = frozenset({"period in 'phrase'", "comment found without atom"})
"""What the header registry says of RFC 5322's obs-phrase (§4.1: a word, then any
words, periods and white space or comments), and says only while reading a
phrase, which in a From is a display name: an unquoted period, as in ``John
Q. Public`` (the period) or ``Acme Inc. <…>`` (the period and the space after
it). People write names so every day, and such a name still ends at its
``<``: it hides no second address."""


class _HeaderClasses(HeaderRegistry):
    """The stdlib header registry, but each header class is made once, not per read.

    ``HeaderRegistry`` builds a fresh class with ``type()`` every time a header
    is read (tens of µs each, and more work for the garbage collector); the
    class it builds depends only on which registered class the name maps to,
    so making it once per registered class changes nothing but the cost.
    """

    def __init__(self) -> None:
        super().__init__()
        self._made: dict[type, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        registered = self.registry.get(name.lower(), self.default_class)
        made = self._made.get(registered)
        if made is None:
            made = self._made[registered] = super().__getitem__(name)
        return made


_HEADER_CLASSES = _HeaderClasses()

_UNSTRUCTURED = frozenset(
    name for name in _READ_HEADERS
    if _HEADER_CLASSES.registry.get(name, _HEADER_CLASSES.default_class)
    in (UnstructuredHeader, UniqueUnstructuredHeader)
)
"""The headers read as text that the registry parses as unstructured: all but Message-ID."""
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_MSG_ID = re.compile(rf"<{_ATOM}(?:\.{_ATOM})*@{_ATOM}(?:\.{_ATOM})*>")
"""A Message-ID with nothing to interpret: the registry's text for it is the value."""


LONGEST_HEADER = 8192
"""Longest header value read, in characters; what lies beyond is left unread.

The header registry's parsers take time growing with the square of a value's
length on some shapes (a Subject of encoded words and 40,000 more words,
80 kB: 0.4 s; a From of 20,000 addresses: 4 s; a Content-Type of 8 kB of
quoted backslashes: 0.26 s), so a header the size of a whole message would
hold a worker, and its process's interpreter lock, for hours, and again on
every retry. No real header comes near this; one that does is recorded as a
``HeaderTooLong`` defect. A Subject keeps more than the gateway keeps of it;
a Content-Type keeps the type and the parameters in its first 8,192
characters (a boundary beyond them is lost with the body it would divide)."""

LONGEST_STRUCTURED = 2048
"""Longest structured header (From, Content-Type, Content-Disposition…) parsed by
its grammar; a longer one is read as its text (``_TextHeader``), so a From
that long is no address to answer."""

STRUCTURED_BUDGET = 128 * 1024
"""Characters of structured headers parsed by their grammar in one message. Each
MIME part has its own Content-Type and Content-Disposition, so a message of
many parts with distinct long ones would cost ``LONGEST_STRUCTURED``'s worst
(about 25 ms) once per part, for minutes. Past the budget the rest are read
as their text, and recorded as ``HeaderBudgetSpent`` defects: about a
thousand parts of ordinary headers fit in it."""


MOST_SEMICOLONS = 64
"""Semicolons read in a Content-Type or Content-Disposition; from the next one on,
the value is left unread and a ``HeaderTooManyParameters`` defect recorded.

Whether parsed by its grammar or read as text, such a header reaches the
stdlib's parameter reader (``get_boundary`` for every multipart part, the
charset of every text part), and that reader's time grows with the number of
semicolons times the value's length: 8,000 semicolons inside quotes cost
50 ms per part, minutes for a message of thousands of such parts. Real
headers have a handful of parameters; the boundary and charset are among
them."""

_PARAMETERIZED = frozenset({"content-type", "content-disposition"})
"""The headers the stdlib reads parameters from, with ``get_param``."""


_OUTSIDE_BUDGET = frozenset({"from"})
"""Parsed whatever the parts spent: the gateway reads one From, the message's
own, only after the parser has read every part's headers, and a customer's
many attachments must not cost their acknowledgement."""


class _TextHeader(UnstructuredHeader, BaseHeader):
    """A structured header read as its unfolded text, without parsing it.

    What the stdlib reads of such a header it reads from the text (the type
    and parameters of a Content-Type), except ``is_attachment``, which asks a
    Content-Disposition for its ``content_disposition``: given here as the
    parsed header gives it when a comment follows the type (``attachment
    (signed)``), not as the stdlib's ``get_content_disposition`` reads the text
    (whole). Never folded: the gateway writes no inbound header back.
    """

    @classmethod
    def parse(cls, value: str, kwds: dict[str, Any]) -> None:
        kwds["parse_tree"] = UnstructuredTokenList()
        kwds["decoded"] = value

    @property
    def content_disposition(self) -> str | None:
        return self.split(";", 1)[0].split("(", 1)[0].strip().lower() or None


class _HeaderMemo:
    """The header factory of one parsed message: each distinct header is parsed once.

    ``email.policy.default`` parses a header through the registry on every
    read, and the stdlib reads Content-Type about fifteen times per mail
    (the parser itself, ``get_content_type``, ``get_body``, ``get_content``).
    Parsing is a pure function of the name and the unfolded value, and the
    header objects are read-only, so handing back the first result is the
    same as parsing again. A header that fails to parse is not remembered and
    raises again on each read, as before. One memo per message keeps nothing
    between mails. Reading a remembered header takes less stack than parsing
    it, so a mail nested so deep that the parser meets the recursion limit
    meets it a few levels deeper than before; where that happens already
    moves with the caller's own stack depth.
    """

    def __init__(self) -> None:
        self._parsed: dict[tuple[str, str], BaseHeader] = {}
        self._budget = STRUCTURED_BUDGET
        self.defects: set[str] = set()
        """``HeaderTooLong:<name>`` and ``HeaderBudgetSpent:<name>`` (see there)."""

    def __call__(self, name: str, value: str) -> BaseHeader:
        key = (name, value)
        header = self._parsed.get(key)
        if header is None:
            header = self._parsed[key] = self._read(name, value)
        return header

    def _read(self, name: str, value: str) -> BaseHeader:
        kind = _HEADER_CLASSES[name]
        if len(value) > LONGEST_HEADER:
            self.defects.add(f"HeaderTooLong:{name.lower()}")
            value = value[:LONGEST_HEADER]
        if name.lower() in _PARAMETERIZED:
            value = self._first_parameters(name, value)
        if issubclass(kind, UnstructuredHeader):
            return kind(name, value)
        if len(value) > LONGEST_STRUCTURED:
            self.defects.add(f"HeaderTooLong:{name.lower()}")
            return _TextHeader(name, value)
        if name.lower() in _OUTSIDE_BUDGET:
            return kind(name, value)
        if len(value) > self._budget:
            self.defects.add(f"HeaderBudgetSpent:{name.lower()}")
            return _TextHeader(name, value)
        self._budget -= len(value)
        return kind(name, value)

    def _first_parameters(self, name: str, value: str) -> str:
        """``value`` up to its ``MOST_SEMICOLONS + 1``th semicolon (see there)."""
        pieces = value.split(";", MOST_SEMICOLONS + 1)
        if len(pieces) <= MOST_SEMICOLONS + 1:
            return value
        self.defects.add(f"HeaderTooManyParameters:{name.lower()}")
        return ";".join(pieces[:-1])


def _message_policy(memo: _HeaderMemo) -> email.policy.EmailPolicy[EmailMessage]:
    """``email.policy.default``, with ``memo`` (one message's own) as its header factory."""
    return email.policy.default.clone(header_factory=memo)


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
    """Lower-cased names of ``CLASSIFY_HEADERS`` present → their unfolded values
    (the first line of a name, as ``message.get`` reads it)."""
    repeated_headers: Mapping[str, tuple[str, ...]]
    """Lower-cased names of ``CLASSIFY_HEADERS`` given more than once → the values
    of the lines after the first (see ``_header_texts``)."""
    content_type: str
    body_text: str
    defects: tuple[str, ...] = field(default=())


def identify(raw: bytes) -> tuple[str | None, str]:
    """The Message-ID and the content digest of ``raw``, cheaply (headers only).

    The digest leaves out what hops add (``content_digest``), so the same
    message delivered twice, by two routes, has the same digest.
    """
    headers = BytesHeaderParser(policy=email.policy.compat32).parsebytes(_header_section(raw))
    return _message_id(_header_text(headers, "message-id")), content_digest(raw)


def _header_section(raw: bytes) -> bytes:
    """``raw`` cut just inside its first empty line: all that a header-only parse reads.

    A header-only parse still splits the whole body into lines, only to drop
    them. The parser ends lines at CRLF, CR or LF, and its header section ends
    at the first line that is not a header line: an empty line at the latest.
    An empty line starts right after a line end and is itself a line end, so
    it shows as LF LF, LF CR or CR CR, or as CR or LF at the very start.
    Cutting after its first character leaves every line before it as it was
    and the empty line empty (CR for CRLF), so the same headers are read.
    """
    if raw[:1] in (b"\r", b"\n"):
        return raw[:1]
    end = len(raw)
    for pair in (b"\n\n", b"\n\r", b"\r\r"):
        found = raw.find(pair, 0, end)
        if found != -1:
            end = found + 2
    return raw[:end]


def content_digest(raw: bytes) -> str:
    """SHA-256 of the message without what the hops on its way added (its trace
    headers and its filters' marks), line endings normalised: the same mail
    delivered again, by the same route or another, gives the same."""
    head, sep, body = raw.replace(b"\r\n", b"\n").partition(b"\n\n")
    kept: list[bytes] = []
    skipping = False
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                kept.append(line)
            continue
        name = line.split(b":", 1)[0].strip().lower().decode("latin-1")
        skipping = name in TRACE_HEADERS or name.startswith(TRANSIT_PREFIXES)
        if not skipping:
            kept.append(line)
    digest = hashlib.sha256(b"\n".join(kept))
    digest.update(sep + body)
    return digest.hexdigest()


def parse_message(raw: bytes) -> ParsedMail:
    """Everything the pipeline needs from ``raw``; never raises for bad input."""
    memo = _HeaderMemo()
    message, defects = _parse(raw, memo)
    texts, repeated = _header_texts(message)
    subject = sanitize_header_text(texts.get("subject", ""))
    sender, sender_name = _strict_sender(message, defects)
    headers = {
        name: sanitize_header_text(value)
        for name in CLASSIFY_HEADERS
        if (value := texts.get(name, ""))
    }
    return ParsedMail(
        message_id=_message_id(texts.get("message-id", "")),
        subject=subject,
        sender=sender,
        sender_name=sender_name,
        in_reply_to=_message_ids(texts.get("in-reply-to", "")),
        references=_message_ids(texts.get("references", "")),
        headers=headers,
        repeated_headers=repeated,
        content_type=_content_type(message),
        body_text=_body_text(message, defects),
        defects=(*defects, *sorted(memo.defects)),
    )


def _parse(raw: bytes, memo: _HeaderMemo) -> tuple[Message, list[str]]:
    """The parsed message and the names of its defects.

    The stdlib parser recurses per MIME level and raises ``RecursionError`` on
    absurdly deep nesting; such a message is read as headers and one opaque body.
    """
    policy = _message_policy(memo)
    try:
        message = email.message_from_bytes(raw, policy=policy)
    except Exception as error:
        message = BytesParser(policy=policy).parsebytes(raw, headersonly=True)
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
    return _as_text(value)


def _header_texts(message: Message) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    """``_header_text`` of each of ``_READ_HEADERS`` present in a message from
    ``_parse``; and the values of every ``CLASSIFY_HEADERS`` line after the
    first of its name.

    ``message.get(name)`` scans every header for each name, and ``parse_message``
    reads eighteen names, most of them absent; one scan finds them all. As with
    ``message.get``, the first header of a name is the one read, and a value
    the registry cannot parse gives its raw text. Where the registry's text is
    certain without it (``_plain_header_text``), the registry is not asked.

    A later line can say what the first does not (``Auto-Submitted: no``, then
    ``Auto-Submitted: auto-replied``), and loop protection must see it. Later
    lines are read as one line of their undecoded text, not by the header
    registry: a header repeated thousands of times would cost a parse per line,
    and none of the words the rules look for is ever an encoded word.
    """
    found: dict[str, tuple[str, str]] = {}
    later: dict[str, list[str]] = {}
    for key, raw_value in message.raw_items():
        name = key.lower()
        if name not in _READ_HEADERS:
            continue
        if name not in found:
            found[name] = (key, raw_value)
        elif name in _CLASSIFY_HEADERS and (value := sanitize_header_text(str(raw_value))):
            later.setdefault(name, []).append(value)
    texts: dict[str, str] = {}
    for name, (key, raw_value) in found.items():
        try:
            text = _plain_header_text(name, raw_value)
            if text is None:
                text = message.policy.header_fetch_parse(key, raw_value)
        except Exception:  # the header registry raises on some malformed values
            text = raw_value
        texts[name] = _as_text(text)
    return texts, {name: tuple(values) for name, values in later.items()}


def _plain_header_text(name: str, raw_value: str) -> str | None:
    """The text ``email.policy.default`` gives for a header, when it is certain; else ``None``.

    The policy unfolds the value (drops every CR and LF), parses it, and makes
    undecodable bytes (surrogates) U+FFFD. For an unstructured header the
    parser's text is the unfolded value itself with RFC 2047 encoded words
    decoded; without ``=?`` there is no encoded word, so the text is the value.
    A Message-ID that is exactly ``<dot-atom-text@dot-atom-text>`` (ASCII)
    parses to itself. Everything else (encoded words, comments, quoting, odd
    Message-IDs) goes through the registry, as before.
    """
    value = raw_value.replace("\r", "").replace("\n", "")
    if name in _UNSTRUCTURED and "=?" not in value:
        try:
            value.encode()
        except UnicodeEncodeError:  # raw 8-bit bytes: as BaseHeader sanitises them
            value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        return value
    if name == "message-id" and _PLAIN_MSG_ID.fullmatch(value):
        return value
    return None


def _as_text(value: str) -> str:
    """``str(value)`` of a header as read; undecodable bytes made U+FFFD if that fails."""
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
    hold an ``@``: ``"alice@example.org" <alice@example.org>`` is one address;
    an unquoted one may hold a period (``John Q. Public <jqp@example.org>``,
    see ``_irregular``), but not a comma or an ``@``.
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
        irregular = any(_irregular(d) for d in header_defects)
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
    if other[0][1] != address or len(address) > MAX_ADDRESS or not PLAIN_ADDRESS.fullmatch(address):
        defects.append("InvalidFromAddress")
        return None, sanitize_header_text(name, 200)
    local, _, domain = address.rpartition("@")
    return f"{local}@{domain.lower()}", sanitize_header_text(name, 200)


def _irregular(defect: MessageDefect) -> bool:
    """Whether a From defect makes the sender doubtful.

    Raw 8-bit bytes (in a name, most often) and an obsolete phrase
    (``_OBSOLETE_PHRASE``) do not: neither changes which address the header
    names, and the two readers of ``_strict_sender`` must still agree on it.
    """
    if isinstance(defect, UndecodableBytesDefect):
        return False
    return not (isinstance(defect, ObsoleteHeaderDefect) and str(defect) in _OBSOLETE_PHRASE)


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


_RAW_TEXT = re.compile(r"<(script|style)\b", re.IGNORECASE | re.ASCII)
"""Tag names are ASCII, case-insensitive (as HTML has them: not ``ſcript``, which
Unicode case folding would make a script)."""
_RAW_TEXT_END = {
    kind: re.compile(rf"</{kind}\s*>", re.IGNORECASE | re.ASCII) for kind in ("script", "style")
}


def _html_to_text(html: str) -> str:
    """The text of ``html``: each tag a space, script and style elements dropped,
    character references decoded.

    One pass in which each character is looked at a bounded number of times. A
    regular expression for "a tag" (``<[^>]+>``) tries, at every ``<``, to the
    end of the text when no ``>`` follows, and one for "a script element" does
    the same for a missing end tag: a body of ``<a <a <a …`` or ``<script …``
    took time growing with its square (160 kB: 20 s). Here a ``<`` with no
    ``>`` anywhere after it ends the tags, and an element with no end tag is
    looked for once: the rest is text, as before.
    """
    import html as html_module

    pieces: list[str] = []
    pos = 0
    unclosed: set[str] = set()
    while (start := html.find("<", pos)) != -1:
        opening = _RAW_TEXT.match(html, start)
        if opening is not None and (kind := opening.group(1).lower()) not in unclosed:
            close = _RAW_TEXT_END[kind].search(html, opening.end())
            if close is not None:
                pieces += [html[pos:start], " "]
                pos = close.end()
                continue
            unclosed.add(kind)  # nor does any later one of this kind end
        end = html.find(">", start + 1)
        if end == -1:
            break
        if end == start + 1:  # "<>" is no tag
            pieces.append(html[pos:start + 1])
            pos = start + 1
            continue
        pieces += [html[pos:start], " "]
        pos = end + 1
    pieces.append(html[pos:])
    return html_module.unescape("".join(pieces))
