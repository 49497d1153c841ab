"""Turning a decision into a complete outgoing mail (bytes for the outbox).

Templates are trusted files in ``templates/``; customer text only ever
arrives as data in the context, in a sandboxed environment with HTML
autoescaping, so it can neither run as template code nor break the HTML.
Headers are built only from sanitised values: nothing is copied across from
the inbound mail.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from gateway.mail import sanitize_header_text

LOOP_HEADER = "X-Helpdesk-Loop"


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

    def render(self, kind: str, context: Mapping[str, Any]) -> tuple[str, str, str]:
        """Subject, text body and HTML body of a ``kind`` mail."""
        subject = self._env.get_template(f"{kind}.subject.j2").render(context)
        text = self._env.get_template(f"{kind}.txt.j2").render(context)
        html = self._env.get_template(f"{kind}.html.j2").render(context)
        return sanitize_header_text(subject), text, html


def message_id_for(key: str, identity: Identity) -> str:
    """A Message-ID that is the same every time the same outbox key is rendered."""
    token = hashlib.sha256(f"{identity.loop_token}:{key}".encode()).hexdigest()[:24]
    return f"helpdesk.{token}@{identity.message_id_domain}"


def build_mail(
    *,
    key: str,
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
    """A multipart/alternative mail with threading and loop-prevention headers."""
    message_id = message_id_for(key, identity)
    message = EmailMessage()
    message["From"] = identity.sender
    message["To"] = to
    message["Subject"] = sanitize_header_text(subject)
    message["Date"] = format_datetime(date)
    message["Message-ID"] = f"<{message_id}>"
    if in_reply_to:
        message["In-Reply-To"] = f"<{in_reply_to}>"
    chain = [*references[-20:], *([in_reply_to] if in_reply_to else [])]
    if chain:
        message["References"] = " ".join(f"<{mid}>" for mid in dict.fromkeys(chain))
    message["Auto-Submitted"] = auto_submitted
    message["X-Auto-Response-Suppress"] = "All"
    message[LOOP_HEADER] = identity.loop_token
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return Outgoing(message_id, identity.sender, (to,), message.as_bytes(policy=SMTP))
