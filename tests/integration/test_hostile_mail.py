"""Mail that the database itself could refuse, stored and processed on each database.

SQLite takes any text of any length; PostgreSQL refuses a NUL in text, a
string longer than its column, and an index entry over 2,704 bytes. Such a
refusal at the store would be a 451 that the sender retries for ever; in
the pipeline, a database error that the broker retries for ever. Each of
these mails must be stored at once and end handled.
"""

from __future__ import annotations

import base64
import random

import pytest
from sqlalchemy import select

from gateway.clock import utcnow
from gateway.inbound import accept
from gateway.models import INBOUND, InboundStatus
from gateway.pipeline import process_inbound
from gateway.runtime import Runtime


def headers(*lines: bytes) -> bytes:
    return b"\r\n".join(lines) + b"\r\n\r\nIt is down.\r\n"


def noise(size: int) -> bytes:
    """Text that does not compress, as PostgreSQL would an index entry of repeats."""
    return base64.b64encode(random.Random(size).randbytes(size))


CUSTOMER = b"From: Alice <alice@customer.example>"
SUBJECT = b"Subject: [P1] Database down"
HOSTILE = [
    pytest.param(headers(CUSTOMER, SUBJECT, b"Message-ID: <a\x00b@customer.example>"),
                 id="nul-in-message-id"),
    pytest.param(headers(CUSTOMER, SUBJECT, b"Message-ID: <" + noise(3000) + b"@x.example>"),
                 id="message-id-too-long-to-index"),
    pytest.param(headers(CUSTOMER, SUBJECT, b"Message-ID: <m1@x.example>",
                         b"In-Reply-To: <" + noise(3000) + b"@x.example>"),
                 id="in-reply-to-too-long-to-index"),
    pytest.param(headers(b"From: " + b"w" * 400 + b"@customer.example", SUBJECT,
                         b"Message-ID: <m2@x.example>"),
                 id="from-longer-than-any-address"),
    pytest.param(headers(CUSTOMER, b"Subject: [P1] a\x00b =?utf-8?q?c=00d?=",
                         b"Message-ID: <m3@x.example>"),
                 id="nul-in-subject"),
    pytest.param(headers(b"From: =?utf-8?q?A=00B?= <bob@customer.example>", SUBJECT,
                         b"Message-ID: <m4@x.example>"),
                 id="nul-in-display-name"),
    pytest.param(headers(CUSTOMER, SUBJECT, b"Auto-Submitted: auto\x00replied",
                         b"Message-ID: <m5@x.example>"),
                 id="nul-in-auto-submitted"),
    pytest.param(headers(CUSTOMER, SUBJECT, b"Message-ID: <caf\xe9@x.example>"),
                 id="undecodable-message-id"),
]


@pytest.mark.parametrize("raw", HOSTILE)
def test_stored_at_once_and_handled(runtime: Runtime, raw: bytes) -> None:
    inbound_id = accept(runtime.database, raw, source="smtp", sender="alice@customer.example",
                        recipients=["support@example.com"], now=utcnow())
    outcome = process_inbound(runtime.pipeline, inbound_id, utcnow())
    assert outcome.status in (InboundStatus.PROCESSED, InboundStatus.IGNORED)
    with runtime.database.reading() as connection:
        status = connection.scalar(select(INBOUND.c.status).where(INBOUND.c.id == inbound_id))
    assert status == outcome.status
