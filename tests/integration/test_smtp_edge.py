"""The inbound SMTP edge over real SMTP: what it refuses, and with which code."""

from __future__ import annotations

import smtplib
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from gateway.models import InboundMessage
from gateway.service import Embedded
from tests.conftest import Sink, mail, make_settings
from tests.proxy import TcpProxy


def start(settings) -> Embedded:
    running = Embedded(settings)
    running.start()
    return running


@pytest.fixture
def gateway(tmp_path, sink: Sink) -> Iterator[Embedded]:
    running = start(make_settings(
        tmp_path, HELPDESK_RELAY_HOST=sink.host, HELPDESK_RELAY_PORT=str(sink.port),
        HELPDESK_SMTP_MAX_MESSAGE_SIZE="20000",
    ))
    yield running
    running.stop()


def client(gateway: Embedded) -> smtplib.SMTP:
    smtp = gateway.runtime.settings.smtp
    return smtplib.SMTP(smtp.host, smtp.port)


def stored(gateway: Embedded) -> int:
    with gateway.runtime.database.session() as session:
        return session.scalar(select(func.count()).select_from(InboundMessage)) or 0


def test_foreign_recipient_gets_550_no_relay(gateway):
    with client(gateway) as smtp:
        smtp.ehlo()
        smtp.mail("alice@customer.example")
        code, text = smtp.rcpt("someone@elsewhere.example")
    assert code == 550
    assert b"no relay" in text


@pytest.mark.parametrize("path", ['" x"@', '<" x"@>', '"'])
def test_a_path_that_cannot_parse_gets_553_not_a_retry(gateway, path):
    """The standard library's parser raises IndexError on these paths; a 451
    would have the sender retry, for days, a path that can never parse."""
    with client(gateway) as smtp:
        smtp.ehlo()
        assert smtp.docmd("MAIL", f"FROM:{path}")[0] == 553
        assert smtp.docmd("MAIL", "FROM:<alice@customer.example>")[0] == 250
        assert smtp.docmd("RCPT", f"TO:{path}")[0] == 553
        assert smtp.docmd("RCPT", "TO:<support@example.com>")[0] == 250


def test_support_address_is_accepted_in_any_case(gateway, sink):
    with client(gateway) as smtp:
        smtp.sendmail("alice@customer.example", ["Support@Example.COM"], mail("[P4] docs typo"))
    sink.wait_for(1)


def test_message_over_the_size_limit_gets_552_and_is_not_stored(gateway):
    big = mail("[P3] huge log", body="x" * 30000)
    with client(gateway) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("size")
        with pytest.raises(smtplib.SMTPResponseException) as refused:
            smtp.sendmail("alice@customer.example", ["support@example.com"], big)
    assert refused.value.smtp_code == 552
    assert stored(gateway) == 0


def test_size_declared_in_mail_from_is_refused_early(gateway):
    with client(gateway) as smtp:
        smtp.ehlo()
        code, _ = smtp.mail("alice@customer.example", ["SIZE=900000"])
    assert code == 552


@pytest.mark.postgres
def test_451_while_the_database_is_unreachable_then_taken_once_back(tmp_path, sink, pg_url):
    url = make_url(pg_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    through_proxy = url.set(port=proxy.port).render_as_string(hide_password=False)
    running = start(make_settings(
        tmp_path, HELPDESK_DATABASE_URL=through_proxy,
        HELPDESK_RELAY_HOST=sink.host, HELPDESK_RELAY_PORT=str(sink.port),
    ))
    raw = mail("[P1] Database down", message_id="retried")
    try:
        proxy.cut()
        with client(running) as smtp, pytest.raises(smtplib.SMTPDataError) as refused:
            smtp.sendmail("alice@customer.example", ["support@example.com"], raw)
        assert refused.value.smtp_code == 451

        proxy.restore()
        time.sleep(0.2)
        with client(running) as smtp:  # the sending server retries, as 451 asked
            smtp.sendmail("alice@customer.example", ["support@example.com"], raw)
        (ack,) = sink.wait_for(1)
        assert "[P1] Database down" in ack.message["Subject"]
        assert stored(running) == 1
    finally:
        running.stop()
        proxy.close()
