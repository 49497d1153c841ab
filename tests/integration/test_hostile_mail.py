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
from collections.abc import Callable
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from gateway.clock import utcnow
from gateway.database import Database
from gateway.inbound import accept
from gateway.models import INBOUND, InboundStatus
from gateway.pipeline import process_inbound, refuses_the_data
from gateway.recovery import sweep
from gateway.runtime import Runtime
from tests.conftest import mail
from tests.integration.conftest import helpdesk_on


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


def test_a_mail_whose_data_the_database_refuses_is_quarantined_not_retried(pg_runtime):
    # Given a cases table whose subject holds 20 characters (a refusal no
    # retry can pass, as a NUL or an over-long value would meet)
    with pg_runtime.database.transaction() as connection:
        connection.exec_driver_sql("ALTER TABLE cases ALTER COLUMN subject TYPE varchar(20)")
    raw = mail("[P1] Database down since the nightly backup at 02:00")
    inbound_id = accept(pg_runtime.database, raw, source="smtp", sender="alice@customer.example",
                        recipients=["support@example.com"], now=utcnow())
    # When it is processed
    outcome = process_inbound(pg_runtime.pipeline, inbound_id, utcnow())
    # Then it is set aside for a person, with the database's reason
    assert outcome.status == InboundStatus.QUARANTINED
    with pg_runtime.database.reading() as connection:
        reason = connection.scalar(select(INBOUND.c.reason).where(INBOUND.c.id == inbound_id))
    assert reason.startswith("the database refuses its data: StringDataRightTruncation(")


def refusal(database: Database, statement: str, **params: object) -> DBAPIError:
    with pytest.raises(DBAPIError) as raised, database.transaction() as connection:
        connection.execute(text(statement), params)
    return raised.value


def test_only_a_refusal_of_the_data_itself_is_taken_as_final(pg_runtime):
    database = pg_runtime.database
    refused = {
        "NUL in text": refusal(database, "SELECT CAST(:v AS text)", v="a\x00b"),
        "value too long": refusal(
            database, "INSERT INTO cases (subject, customer_address, severity, status, policy, "
            "opened_at, updated_at) VALUES ('', '', 1, 'open', :v, now(), now())", v="p" * 65),
        "index entry too large": refusal(
            database, "WITH c AS (INSERT INTO cases (subject, customer_address, severity, "
            "status, policy, opened_at, updated_at) VALUES ('', '', 1, 'open', '', now(), now()) "
            "RETURNING id) INSERT INTO thread_entries (case_id, direction, message_id, sender, "
            "subject, at) SELECT id, 'in', :v, '', '', now() FROM c", v=noise(6000).decode()),
        "a row that breaks a constraint (on a second run)": refusal(
            database, "INSERT INTO thread_entries (case_id, direction, sender, subject, at) "
            "VALUES (NULL, 'in', '', '', now())"),
    }
    for name, error in refused.items():
        assert refuses_the_data(error), name
    # A lock held elsewhere, or a server that does not answer: a retry may pass.
    with database.transaction() as holder:
        holder.exec_driver_sql("LOCK TABLE cases IN ACCESS EXCLUSIVE MODE")
        waited = refusal(database, "SET LOCAL lock_timeout = '50ms'; SELECT count(*) FROM cases")
    assert not refuses_the_data(waited)
    gone = Database("postgresql+psycopg://postgres@127.0.0.1:9/test")
    with pytest.raises(DBAPIError) as unreachable, gone.reading() as connection:
        connection.exec_driver_sql("SELECT 1")
    gone.dispose()
    assert not refuses_the_data(unreachable.value)


def test_a_quarantined_mail_is_listed_and_once_released_handled_like_any_other(
    pg_runtime, tmp_path, monkeypatch
):
    # Given a mail quarantined because its subject did not fit a narrowed column
    with pg_runtime.database.transaction() as connection:
        connection.exec_driver_sql("ALTER TABLE cases ALTER COLUMN subject TYPE varchar(20)")
    inbound_id = accept(pg_runtime.database, mail("[P1] Database down since the backup at 02:00"),
                        source="smtp", sender="alice@customer.example",
                        recipients=["support@example.com"], now=utcnow())
    assert process_inbound(pg_runtime.pipeline, inbound_id, utcnow()).status == "quarantined"
    helpdesk = helpdesk_on(pg_runtime, monkeypatch, tmp_path)

    # When a person lists the quarantine, it is there with the database's reason
    listed = helpdesk("quarantine", "list")
    assert listed.exit_code == 0, listed.output
    [line] = listed.output.splitlines()
    assert line.startswith(f"{inbound_id}\t") and "StringDataRightTruncation" in line
    # And when the column is mended and the mail released (an unknown id is named)
    with pg_runtime.database.transaction() as connection:
        connection.exec_driver_sql("ALTER TABLE cases ALTER COLUMN subject TYPE text")
    released = helpdesk("quarantine", "release", str(inbound_id), "999999")
    assert released.exit_code == 1
    assert f"{inbound_id} released" in released.output
    assert "not quarantined (or no such message): 999999" in released.output
    # Then the recovery sweep hands it out, and it opens its case
    handed: list[int] = []
    dispatch = SimpleNamespace(process=handed.append, send=None, waiting=lambda: 0)
    sweep(pg_runtime.database, dispatch, utcnow(), timedelta(0))
    assert handed == [inbound_id]
    assert process_inbound(pg_runtime.pipeline, inbound_id, utcnow()).status == "processed"
    assert helpdesk("quarantine", "list").output == "nothing is quarantined\n"


def test_a_pool_with_no_free_connection_is_waited_out_not_quarantined(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
):
    # Given a stored mail, and a pool whose connections are all busy at the moment the
    # pipeline asks for one (and free again a moment later)
    inbound_id = accept(runtime.database, mail("[P1] Pool busy"), source="smtp",
                        sender="alice@customer.example", recipients=["support@example.com"],
                        now=utcnow())
    database = runtime.database
    busy = [True]

    def at_first_busy(real: Callable[[], Any]) -> Callable[[], Any]:
        def connect() -> Any:
            if busy and busy.pop():
                raise PoolTimeout("QueuePool limit of size 10 overflow 10 reached, "
                                  "connection timed out, timeout 30.00")
            return real()
        return connect

    for name in ("reading", "transaction"):
        monkeypatch.setattr(database, name, at_first_busy(getattr(database, name)))
    # When it is processed, it fails as the database being away for now: the broker
    # retries it (and the sweep hands it out again)
    with pytest.raises(PoolTimeout):
        process_inbound(runtime.pipeline, inbound_id, utcnow())
    monkeypatch.undo()
    # Then it is still waiting, not quarantined, and on the retry it becomes its case
    with runtime.database.reading() as connection:
        status = connection.scalar(select(INBOUND.c.status).where(INBOUND.c.id == inbound_id))
    assert status == InboundStatus.RECEIVED
    assert process_inbound(runtime.pipeline, inbound_id, utcnow()).status == (
        InboundStatus.PROCESSED)
