"""TLS on both edges, over real sockets: STARTTLS offered by the inbound SMTP edge
when a certificate is configured, and each of the relay's TLS modes against an
aiosmtpd relay (certificates from a test CA made by ``trustme``)."""

from __future__ import annotations

import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import pytest
import trustme
from aiosmtpd.controller import Controller
from sqlalchemy import func, select

from gateway.errors import ConfigError
from gateway.models import InboundMessage
from gateway.relay import Delivery, SmtpRelay
from gateway.service import Embedded
from tests.conftest import (
    Sink,
    SinkHandler,
    connect_until_taken,
    free_port,
    mail,
    make_settings,
)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_files(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    folder = tmp_path_factory.mktemp("tls")
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(cert_file), append=True)
    cert.private_key_pem.write_to_path(str(key_file))
    return str(cert_file), str(key_file)


def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture
def trusting(ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The system's trust store, as the relay's default context reads it, is the test CA."""
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))


def commit(release: Callable[[], None]) -> bool:
    """A commit point with nothing to record: the mail goes."""
    release()
    return True


@pytest.fixture
def tls_gateway(tmp_path, sink: Sink, server_files: tuple[str, str]) -> Iterator[Embedded]:
    cert, key = server_files
    running = Embedded(make_settings(
        tmp_path, HELPDESK_RELAY_HOST=sink.host, HELPDESK_RELAY_PORT=str(sink.port),
        HELPDESK_SMTP_TLS_CERT=cert, HELPDESK_SMTP_TLS_KEY=key,
    ))
    running.start()
    yield running
    running.stop()


def test_the_edge_offers_starttls_with_a_certificate_and_takes_mail_over_it(
    tls_gateway: Embedded, ca: trustme.CA, sink: Sink
):
    smtp = tls_gateway.runtime.settings.smtp
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with smtplib.SMTP(smtp.host, smtp.port) as client:
        client.ehlo()
        assert client.has_extn("starttls")
        client.starttls(context=client_context)
        client.ehlo()
        assert not client.has_extn("auth")  # no accounts here, so no login offered
        assert client.docmd("AUTH", "PLAIN AGFsaWNlAHNlY3JldA==")[0] == 504
        client.sendmail("alice@customer.example", ["support@example.com"],
                        mail("[P2] Over TLS"))
    [ack] = sink.wait_for(1)
    assert "[P2] Over TLS" in ack.message["Subject"]
    with tls_gateway.runtime.database.session() as session:
        assert session.scalar(select(func.count()).select_from(InboundMessage)) == 1


def test_a_session_that_turns_to_tls_counts_once_against_its_client(
    tmp_path, sink: Sink, ca: trustme.CA, server_files: tuple[str, str]
):
    # Given a gateway taking one session at a time from an address
    cert, key = server_files
    running = Embedded(make_settings(
        tmp_path, HELPDESK_RELAY_HOST=sink.host, HELPDESK_RELAY_PORT=str(sink.port),
        HELPDESK_SMTP_TLS_CERT=cert, HELPDESK_SMTP_TLS_KEY=key,
        HELPDESK_SMTP_MAX_CONNECTIONS_PER_CLIENT="1",
    ))
    running.start()
    try:
        smtp = running.runtime.settings.smtp
        client_context = ssl.create_default_context()
        ca.configure_trust(client_context)
        # When its one session turns to TLS (the server's protocol is told of a
        # new connection), it goes on, and a second session is still refused
        with smtplib.SMTP(smtp.host, smtp.port) as client:
            client.starttls(context=client_context)
            client.sendmail("alice@customer.example", ["support@example.com"],
                            mail("[P2] Over TLS, one session"))
            with pytest.raises(smtplib.SMTPConnectError) as refused:
                smtplib.SMTP(smtp.host, smtp.port)
            assert refused.value.smtp_code == 421
        # Then, once it has ended, the address may open one again
        connect_until_taken(lambda: smtplib.SMTP(smtp.host, smtp.port)).quit()
        sink.wait_for(1)
    finally:
        running.stop()


def test_the_edge_offers_no_starttls_without_a_certificate(tmp_path, sink: Sink):
    running = Embedded(make_settings(tmp_path))
    running.start()
    try:
        smtp = running.runtime.settings.smtp
        with smtplib.SMTP(smtp.host, smtp.port) as client:
            client.ehlo()
            assert not client.has_extn("starttls")
    finally:
        running.stop()


def relayed(ca: trustme.CA, tls: Literal["starttls", "tls"]) -> tuple[Delivery, SinkHandler]:
    """One mail through ``SmtpRelay`` in mode ``tls`` to an aiosmtpd relay whose
    certificate the test CA issued: what came of it, and what the relay got."""
    handler = SinkHandler()
    on_connect = {"ssl_context": server_context(ca)} if tls == "tls" else {
        "tls_context": server_context(ca), "require_starttls": True,
    }
    relay_server = Controller(handler, hostname="127.0.0.1", port=free_port(), **on_connect)
    relay_server.start()
    relay = SmtpRelay("127.0.0.1", relay_server.port, tls=tls, timeout=5)
    try:
        return relay.deliver("support@example.com", ["alice@customer.example"],
                             mail("[HD-000001] Your request"), commit), handler
    finally:
        relay.close()
        relay_server.stop()


@pytest.mark.parametrize("tls", ["starttls", "tls"])
def test_the_relay_sends_over_each_tls_mode(ca: trustme.CA, trusting: None, tls):
    delivery, handler = relayed(ca, tls)
    assert delivery.outcome == "sent"
    assert len(handler.messages) == 1


def test_a_relay_whose_certificate_is_not_trusted_gets_nothing_and_a_retry(ca: trustme.CA):
    """Without the test CA in the trust store, the relay's certificate fails to verify:
    nothing is sent, and the failure is temporary (a fixed trust store or
    certificate lets the retries through) with the reason."""
    delivery, handler = relayed(ca, "starttls")
    assert delivery.outcome == "temporary"
    assert "CERTIFICATE_VERIFY_FAILED" in delivery.detail
    assert handler.messages == []


@pytest.mark.parametrize(("content", "reason"), [
    (None, "'{cert}': no such file"),
    (b"not a certificate\n", "are no PEM certificate chain and its private key"),
])
def test_a_certificate_that_cannot_be_loaded_stops_start_up_naming_its_key(
    tmp_path, server_files: tuple[str, str], content: bytes | None, reason: str
):
    cert = tmp_path / "cert.pem"
    if content is not None:
        cert.write_bytes(content)
    settings = make_settings(
        tmp_path, HELPDESK_SMTP_TLS_CERT=str(cert), HELPDESK_SMTP_TLS_KEY=server_files[1],
    )
    with pytest.raises(ConfigError) as raised:
        Embedded(settings)
    assert str(raised.value).startswith("HELPDESK_SMTP_TLS_CERT: smtp.tls_cert: ")
    assert reason.format(cert=cert) in str(raised.value)
    # before anything was made: no database, no worker, no data folder
    assert not Path(settings.data_dir).exists()


class SplitRecordRelay:
    """A TLS relay (implicit TLS) that sends its answer to the end of a mail as one
    TLS record in two pieces, ``pause`` seconds apart, as a lost segment's
    retransmission would: readable at once, whole only later."""

    def __init__(self, ca: trustme.CA, pause: float) -> None:
        self.context, self.pause = server_context(ca), pause
        self.whole_at = float("inf")
        """When the rest of the split record went."""
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        connection, _ = self.listener.accept()
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = self.context.wrap_bio(incoming, outgoing, server_side=True)
        received = b""

        def flush() -> None:
            if data := outgoing.read():
                connection.sendall(data)

        def until(end: bytes) -> bytes:
            nonlocal received
            while end not in received:
                try:
                    received += tls.read(65536)
                except ssl.SSLWantReadError:
                    flush()
                    incoming.write(connection.recv(65536))
            line, received = received.split(end, 1)
            return line

        def answer(text: bytes, split: bool = False) -> None:
            tls.write(text)
            record = outgoing.read()
            if split:
                connection.sendall(record[:2])
                time.sleep(self.pause)
                record = record[2:]
                self.whole_at = time.monotonic()
            connection.sendall(record)

        with connection:
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    flush()
                    incoming.write(connection.recv(65536))
            flush()
            answer(b"220 relay ESMTP\r\n")
            while (command := until(b"\r\n").upper()) != b"QUIT":
                if command == b"DATA":
                    answer(b"354 go on\r\n")
                    until(b"\r\n.\r\n")
                    answer(b"250 2.0.0 queued\r\n", split=True)
                else:
                    answer(b"250 OK\r\n")
            answer(b"221 bye\r\n")


def test_an_answer_whose_tls_record_is_slow_to_come_whole_is_awaited_in_the_open(
    ca: trustme.CA, trusting: None
):
    # Given a relay over TLS whose answer to the end of a mail starts at once and is
    # whole only three seconds later
    relay_server = SplitRecordRelay(ca, pause=3.0)
    relay = SmtpRelay("127.0.0.1", relay_server.port, tls="tls", timeout=10,
                      end_of_data_timeout=20)
    told: list[float] = []
    went: list[float] = []

    def commit_at_the_dot(release: Callable[[], None]) -> bool:
        release()
        went.append(time.monotonic())
        return True

    # When a mail goes through it
    delivery = relay.deliver("support@example.com", ["alice@customer.example"],
                             mail("[HD-000001] Your request"), commit_at_the_dot,
                             lambda: told.append(time.monotonic()))
    relay.close()
    # Then its sender is told the answer is slow while it waits, before the answer is
    # whole, and then it is sent
    assert delivery.outcome == "sent", delivery
    assert len(told) == 1
    assert went[0] < told[0] < relay_server.whole_at


def test_a_session_silent_in_its_tls_handshake_lets_go_of_its_place_at_the_idle_timeout(
    tmp_path, sink: Sink, server_files: tuple[str, str]
):
    # Given a gateway with a short idle timeout, one session at a time from an address
    cert, key = server_files
    running = Embedded(make_settings(
        tmp_path, HELPDESK_RELAY_HOST=sink.host, HELPDESK_RELAY_PORT=str(sink.port),
        HELPDESK_SMTP_TLS_CERT=cert, HELPDESK_SMTP_TLS_KEY=key,
        HELPDESK_SMTP_MAX_CONNECTIONS_PER_CLIENT="1", HELPDESK_SMTP_IDLE_TIMEOUT="0.5",
    ))
    running.start()
    try:
        smtp = running.runtime.settings.smtp
        # When a client asks for TLS and then says nothing, past the idle timeout
        with socket.create_connection((smtp.host, smtp.port)) as silent:
            reader = silent.makefile("rb")
            reader.readline()
            silent.sendall(b"EHLO silent.example\r\nSTARTTLS\r\n")
            while not reader.readline().startswith(b"220 "):
                pass
            silent.settimeout(30)
            assert silent.recv(1) == b""  # closed by the server at its idle timeout
        # Then its place is free again: the address may open a session
        connect_until_taken(lambda: smtplib.SMTP(smtp.host, smtp.port)).quit()
    finally:
        running.stop()
