"""Turning a decision into a complete outgoing mail (bytes for the outbox).

Templates are trusted files in ``templates/``; customer text only ever
arrives as data in the context, in a sandboxed environment with HTML
autoescaping, so it can neither run as template code nor break the HTML.
Headers are built only from sanitised values: nothing is copied across from
the inbound mail.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.charset import QP, Charset
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import Compat32
from email.utils import format_datetime
from pathlib import Path
from typing import Any, cast

from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from gateway.mail import PLAIN_ADDRESS, sanitize_header_text

LOOP_HEADER = "X-Helpdesk-Loop"


class _SmtpCompat32(Compat32):
    """compat32 with CRLF line ends, writing a short plain header line as it is.

    compat32 folds every header through ``Header.encode``, which on a value
    that already fits on one line returns it unchanged after a good deal of
    work: about half the time it took to build an acknowledgement. A value of
    printable ASCII words separated by single spaces that fits in a line is
    written directly; anything else goes through the folding as before.
    """

    def _fold(self, name: str, value: Any, sanitize: bool) -> str:
        line = f"{name}: {value}"
        if (
            isinstance(value, str)
            and len(line) <= (self.max_line_length or 0)
            and _PLAIN_HEADER_VALUE.fullmatch(value)
        ):
            return line + self.linesep
        return str(super()._fold(name, value, sanitize))  # type: ignore[misc]


_PLAIN_HEADER_VALUE = re.compile(r"[!-~]+(?: [!-~]+)*")
_SMTP_COMPAT = _SmtpCompat32(linesep="\r\n")
_UNFOLDABLE = re.compile(r"\S{60}")
_UTF8_QP = Charset("utf-8")
_UTF8_QP.body_encoding = QP
MAX_REFERENCES = 20
"""References kept in a reply: the thread's first message and the most recent ones."""

_MESSAGE_ID = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9!#$%&'*+/=?^_`{|}~.\[\]-]+"
)
_HEADER_NAME = re.compile(rb"([!-9;-~]+):")


@dataclass(frozen=True)
class Identity:
    """Who the gateway is in the mail it writes."""

    sender: str
    message_id_domain: str
    loop_token: str


@dataclass(frozen=True)
class Outgoing:
    """A rendered mail, ready for an outbox row."""

    message_id: str
    sender: str
    recipients: tuple[str, ...]
    raw: bytes


class Renderer:
    """Renders ``<kind>.subject.j2``, ``<kind>.txt.j2`` and ``<kind>.html.j2``."""

    def __init__(self, templates_dir: Path) -> None:
        self._env = SandboxedEnvironment(
            loader=FileSystemLoader(str(templates_dir)),
            autoescape=lambda name: bool(name and name.endswith(".html.j2")),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )

    @property
    def environment(self) -> SandboxedEnvironment:
        """The sandboxed Jinja2 environment the templates are rendered in."""
        return self._env

    def render(self, kind: str, context: Mapping[str, Any]) -> tuple[str, str, str]:
        """Subject, text body and HTML body of a ``kind`` mail."""
        subject = self._env.get_template(f"{kind}.subject.j2").render(context)
        text = self._env.get_template(f"{kind}.txt.j2").render(context)
        html = self._env.get_template(f"{kind}.html.j2").render(context)
        return sanitize_header_text(subject), text, html


def new_message_id(identity: Identity) -> str:
    """A Message-ID nobody can work out in advance, and that no other installation
    gives: a mail that answers one joins its case (``decide.belongs_to_case``),
    so an id made from what is public (the address, the case's number) would let
    anyone into any case. The id is kept with the mail's row, which is what a
    second send uses, so it is stable where it must be."""
    return f"helpdesk.{secrets.token_hex(12)}@{identity.message_id_domain}"


def build_mail(
    *,
    identity: Identity,
    to: str,
    subject: str,
    text: str,
    html: str,
    date: datetime,
    in_reply_to: str | None = None,
    references: Sequence[str] = (),
    auto_submitted: str = "auto-replied",
) -> Outgoing:
    """A multipart/alternative mail with threading and loop-prevention headers.

    Every header value is sanitised here (one line, no encoded words that the
    header parser would decode back into CR/LF: CVE-2024-6923); message ids that
    are not plain ``left@right`` ids are left out of the threading headers.

    Raises ``ValueError`` when ``to`` or the identity's sender is not a plain
    address (both go into the SMTP envelope as they are).
    """
    for address in (to, identity.sender):
        if not PLAIN_ADDRESS.fullmatch(address):
            raise ValueError(f"{address!r} is not a plain mail address")
    message_id = new_message_id(identity)
    parent = in_reply_to if in_reply_to and _is_message_id(in_reply_to) else None
    # Built with the compat32 classes: three times faster than EmailMessage's header
    # objects, and every value here is already one sanitised line of known shape.
    # A boundary of our own: the stdlib would make one and compile a pattern for
    # it to search the parts with, for every mail. Ours is unguessable, and
    # checked against the parts (which customer text reaches) all the same.
    boundary = _boundary(text, html)
    # compat32 takes Header objects as values (``_header_value``); the stubs say str.
    message = cast("Message[str, str | Header]", MIMEMultipart("alternative", boundary=boundary))
    message["From"] = identity.sender
    message["To"] = to
    message["Subject"] = _header_value(_literal_text(subject))
    message["Date"] = format_datetime(date)
    message["Message-ID"] = f"<{message_id}>"
    if parent:
        message["In-Reply-To"] = f"<{parent}>"
    chain = _references(references, parent)
    if chain:
        message["References"] = " ".join(f"<{mid}>" for mid in chain)
    message["Auto-Submitted"] = _header_value(_literal_text(auto_submitted))
    message["X-Auto-Response-Suppress"] = "All"
    message[LOOP_HEADER] = _header_value(_literal_text(identity.loop_token))
    message.attach(_text_part(text, "plain"))
    message.attach(_text_part(html, "html"))
    raw = message.as_bytes(policy=_SMTP_COMPAT)
    _check_header_names(raw, {name.lower() for name in message})
    return Outgoing(message_id, identity.sender, (to,), raw)


def _boundary(*parts: str) -> str:
    while True:
        boundary = f"=_helpdesk_{secrets.token_hex(12)}"
        if not any(boundary in part for part in parts):
            return boundary


def _literal_text(value: str) -> str:
    """``value`` as one line that every header reader takes literally.

    ``email`` decodes RFC 2047 encoded words in the text it is given (and
    mangles undecodable ones when folding), so a customer subject holding the
    literal ``=?utf-8?q?x=0D=0ABcc:_evil?=`` (sent encoded twice) would turn
    into a line break again. ``=?`` opens every encoded word; it is broken
    apart (``= ?``) so that the text stays literal for us and for every reader.
    """
    return sanitize_header_text(value).replace("=?", "= ?")


def _header_value(value: str) -> str | Header:
    """ASCII as it is; anything else as UTF-8 encoded words.

    So are ASCII values with a run too long to fold at a space, which a plain
    fold would split after the colon, adding a leading space for readers.
    """
    if value.isascii() and not _UNFOLDABLE.search(value):
        return value
    return Header(value, "utf-8")


def _text_part(body: str, subtype: str) -> MIMEText:
    """A 7-bit clean part: a relay without 8BITMIME must not get raw 8-bit bytes.

    ASCII with lines a relay accepts stays plain 7bit, readable in any tool;
    anything else is quoted-printable UTF-8.
    """
    if body.isascii() and all(len(line) <= 998 for line in body.splitlines()):
        return MIMEText(body, subtype, "us-ascii")
    return MIMEText(body, subtype, _UTF8_QP)  # type: ignore[arg-type]


def _is_message_id(value: str) -> bool:
    return bool(_MESSAGE_ID.fullmatch(value)) and "=?" not in value


def _references(references: Sequence[str], parent: str | None) -> list[str]:
    """The References chain: unique ids, the parent last, at most ``MAX_REFERENCES``."""
    chain = [mid for mid in dict.fromkeys(references) if mid != parent and _is_message_id(mid)]
    if parent:
        chain.append(parent)
    if len(chain) > MAX_REFERENCES:
        chain = [chain[0], *chain[-(MAX_REFERENCES - 1):]]
    return chain


def _check_header_names(raw: bytes, names: set[str]) -> None:
    """Refuse a mail whose header block holds a header that was never set (injection)."""
    head = raw.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            continue
        match = _HEADER_NAME.match(line)
        if match is None or match.group(1).decode("ascii").lower() not in names:
            raise ValueError(f"refusing to send a mail with a stray header line {line[:80]!r}")
