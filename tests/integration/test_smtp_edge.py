"""The inbound SMTP edge over real SMTP: what it refuses, and with which code."""

from __future__ import annotations

import contextlib
import smtplib
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from gateway import database as database_module
from gateway.database import upgrade
from gateway.errors import ConfigError
from gateway.models import InboundMessage
from gateway.runtime import Runtime, build_runtime
from gateway.service import Embedded, start_smtp
from gateway.smtp_server import STORE_THREADS
from tests.conftest import Sink, connect_until_taken, mail, make_settings
from tests.proxy import TcpProxy
from workers.actors import declare
from workers.broker import make_broker


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
    return stored_count(gateway.runtime)


def stored_count(runtime: Runtime) -> int:
    with runtime.database.session() as session:
        return session.scalar(select(func.count()).select_from(InboundMessage)) or 0


def test_foreign_recipient_gets_550_no_relay(gateway):
    with client(gateway) as smtp:
        smtp.ehlo()
        smtp.mail("alice@customer.example")
        code, text = smtp.rcpt("someone@elsewhere.example")
    assert code == 550
    assert b"no relay" in text


@pytest.mark.parametrize("path", [
    b'" x"@', b'<" x"@>', b'"', b"0@[", b"<a\x00b@customer.example>", b"<caf\xe9@customer.example>",
])
def test_a_path_that_cannot_parse_gets_553_not_a_retry(gateway, path):
    """The standard library's parser raises IndexError or AttributeError on the
    first four; the database cannot store the last two (a NUL; a raw Latin-1
    byte, which aiosmtpd reads as a lone surrogate). A 451 would have the sender
    retry, for days, a path that can never be taken."""
    def command(line: bytes) -> int:
        smtp.send(line + b"\r\n")  # as bytes: smtplib would not send the Latin-1 one
        return smtp.getreply()[0]

    with client(gateway) as smtp:
        smtp.ehlo()
        assert command(b"MAIL FROM:" + path) == 553
        assert command(b"MAIL FROM:<alice@customer.example>") == 250
        assert command(b"RCPT TO:" + path) == 553
        assert command(b"RCPT TO:<support@example.com>") == 250


def raw_session(gateway: Embedded, data: bytes) -> list[bytes]:
    """One SMTP transaction whose DATA is sent byte for byte as given (smtplib
    would leave bare LFs alone too, but this shows exactly what went out)."""
    smtp = gateway.runtime.settings.smtp
    with socket.create_connection((smtp.host, smtp.port)) as sock:
        reader = sock.makefile("rb")
        replies = [reader.readline()]
        for command in (b"EHLO client.example", b"MAIL FROM:<alice@customer.example>",
                        b"RCPT TO:<support@example.com>", b"DATA"):
            sock.sendall(command + b"\r\n")
            reply = reader.readline()
            while reply[3:4] == b"-":
                reply = reader.readline()
            replies.append(reply)
        sock.sendall(data + b"\r\n.\r\n")
        replies.append(reader.readline())
        sock.sendall(b"QUIT\r\n")
    return replies


def stored_raw(gateway: Embedded) -> list[bytes]:
    with gateway.runtime.database.session() as session:
        return list(session.scalars(select(InboundMessage.raw).order_by(InboundMessage.id)))


def test_lines_longer_than_rfc_5321s_are_taken_as_real_clients_send_them(gateway):
    """Outlook's HTML and unwrapped base64 run past 1,000 octets a line; a relay
    passes them on, and a 500 would bounce an ordinary customer mail."""
    html = b"<p>" + b"Our database stopped answering at 09:12. " * 150 + b"</p>"
    raw = (b"From: Alice <alice@customer.example>\r\nTo: support@example.com\r\n"
           b"Subject: [P1] Database down\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: text/html; charset=utf-8\r\n\r\n" + html)
    assert len(html) > 6000
    replies = raw_session(gateway, raw)
    assert replies[-1].startswith(b"250 "), replies
    assert stored_raw(gateway) == [raw + b"\r\n"]


def test_a_bare_lf_message_is_one_message_and_never_ends_before_crlf_dot_crlf(gateway):
    """LF-only lines (scripts that send ``msg.as_bytes()``) are kept inside the
    message; a bare-LF dot line is content, so no second message can be
    smuggled in after it."""
    raw = (b"From: Monitor <monitor@customer.example>\nTo: support@example.com\n"
           b"Subject: [P2] Disk 91% full\n\n" + b"df output line\n" * 120)
    for end in (b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n"):
        raw += end + b"MAIL FROM:<ceo@example.com>\nRCPT TO:<support@example.com>\nDATA\n"
    raw += b"Subject: forged\n\nforged body"
    replies = raw_session(gateway, raw)
    assert replies[-1].startswith(b"250 "), replies
    [kept] = stored_raw(gateway)
    # Byte for byte, but for the one line that starts with a dot after a CRLF:
    # SMTP's transparency takes it off (a client would have doubled it).
    assert kept == raw.replace(b"\r\n.\n", b"\r\n\n") + b"\r\n"
    assert kept.count(b"MAIL FROM:<ceo@example.com>") == 4


def test_a_recipient_given_again_and_again_is_stored_once(gateway):
    """Without this, a session could grow its envelope, and the stored row,
    by one entry per RCPT command, for as long as it kept sending them."""
    smtp = gateway.runtime.settings.smtp
    with socket.create_connection((smtp.host, smtp.port)) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        sock.sendall(b"HELO client.example\r\nMAIL FROM:<alice@customer.example>\r\n")
        assert [reader.readline()[:3] for _ in range(2)] == [b"250", b"250"]
        for address in (b"support@example.com", b"SUPPORT@example.com") * 2500:
            sock.sendall(b"RCPT TO:<" + address + b">\r\n")
        assert {reader.readline()[:3] for _ in range(5000)} == {b"250"}
        sock.sendall(b"DATA\r\n")
        assert reader.readline()[:3] == b"354"
        sock.sendall(mail("[P3] Many recipients") + b"\r\n.\r\nQUIT\r\n")
        assert reader.readline()[:3] == b"250"
    with gateway.runtime.database.session() as session:
        [recipients] = session.scalars(select(InboundMessage.envelope_recipients))
    assert recipients == ["support@example.com"]


def test_a_message_coming_slowly_is_taken_and_a_silent_session_is_closed(tmp_path, sink):
    """The idle timeout counts silence: data that keeps coming keeps its session
    open past it (aiosmtpd alone cut DATA off at the timeout, however steadily
    it came), and a session that sends nothing is closed after it."""
    running = start(make_settings(
        tmp_path, HELPDESK_RELAY_HOST=sink.host, HELPDESK_RELAY_PORT=str(sink.port),
        HELPDESK_SMTP_IDLE_TIMEOUT="1",
    ))
    try:
        smtp = running.runtime.settings.smtp
        with socket.create_connection((smtp.host, smtp.port)) as sock:
            reader = sock.makefile("rb")
            reader.readline()
            for command in (b"HELO client.example", b"MAIL FROM:<alice@customer.example>",
                            b"RCPT TO:<support@example.com>", b"DATA"):
                sock.sendall(command + b"\r\n")
                reader.readline()
            lines = mail("[P3] Over a slow link").split(b"\n")
            started = time.monotonic()
            for line in lines:  # three times the timeout, a line every 0.3 s
                sock.sendall(line + b"\n")
                time.sleep(3.0 / len(lines))
            sock.sendall(b"\r\n.\r\n")
            assert time.monotonic() - started > 2
            assert reader.readline()[:3] == b"250"
        assert stored(running) == 1
        with socket.create_connection((smtp.host, smtp.port)) as sock:
            sock.settimeout(10)
            reader = sock.makefile("rb")
            reader.readline()
            sock.sendall(b"HELO client.example\r\n")
            reader.readline()
            assert reader.readline() == b""  # silent past the timeout: closed
    finally:
        running.stop()


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


def test_the_doubled_dots_of_smtp_do_not_count_against_the_size_limit(gateway):
    # Given a message just under the limit (20,000 bytes) whose lines mostly start
    # with ".", which SMTP doubles on the way: 25,000 bytes or so on the wire
    body = ".\n" * 5000 + ". a line of a log\n" * 200
    dotted = mail("[P3] dotted log", body=body).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    assert 19000 < len(dotted) <= 20000
    with client(gateway) as smtp:
        # When it is sent, it is taken whole (RFC 1870: the size is the message's)
        smtp.sendmail("alice@customer.example", ["support@example.com"], dotted)
    assert stored(gateway) == 1
    with gateway.runtime.database.session() as session:
        raw = session.scalar(select(InboundMessage.raw))
    assert raw == dotted
    # And one byte over the limit is still refused
    over = dotted + b"x" * (20001 - len(dotted))
    with client(gateway) as smtp, pytest.raises(smtplib.SMTPResponseException) as refused:
        smtp.sendmail("alice@customer.example", ["support@example.com"], over)
    assert refused.value.smtp_code == 552


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


@pytest.mark.postgres
def test_451_while_a_migration_holds_the_store_then_taken_once_it_is_done(
    tmp_path, sink, pg_url, monkeypatch
):
    # Given a gateway on PostgreSQL whose lone statements wait half a second for a lock
    monkeypatch.setattr(database_module, "LONE_LOCK_TIMEOUT_MS", 500)
    running = start(make_settings(
        tmp_path, HELPDESK_DATABASE_URL=pg_url,
        HELPDESK_RELAY_HOST=sink.host, HELPDESK_RELAY_PORT=str(sink.port),
    ))
    raw = mail("[P1] Sent during a migration", message_id="during-migration")
    migration = create_engine(pg_url).connect()
    try:
        # When a migration holds the inbound table, and a mail comes
        migration.execute(text("LOCK TABLE inbound_messages IN ACCESS EXCLUSIVE MODE"))
        with client(running) as smtp, pytest.raises(smtplib.SMTPDataError) as refused:
            smtp.sendmail("alice@customer.example", ["support@example.com"], raw)
        # Then the sender is told to try again, rather than held until it is done
        assert refused.value.smtp_code == 451
        migration.rollback()
        with client(running) as smtp:
            smtp.sendmail("alice@customer.example", ["support@example.com"], raw)
        sink.wait_for(1)
        assert stored(running) == 1
    finally:
        migration.close()
        running.stop()


class SilentServer:
    """A TCP server that takes connections and never answers: a broker behind a
    network partition. ``requests`` counts the connections that sent something."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._held: list[socket.socket] = []
        self.requests = threading.Semaphore(0)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            self._held.append(connection)
            threading.Thread(target=self._read, args=(connection,), daemon=True).start()

    def _read(self, connection: socket.socket) -> None:
        with contextlib.suppress(OSError):
            if connection.recv(65536):
                self.requests.release()

    def close(self) -> None:
        self._listener.close()
        for connection in self._held:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()


def test_a_broker_that_never_answers_delays_no_250(tmp_path):
    # Given an SMTP edge whose broker takes the connection and never answers
    # (and a client that would wait ten minutes for it)
    silent = SilentServer()
    settings = make_settings(
        tmp_path, HELPDESK_BROKER_URL=f"redis://127.0.0.1:{silent.port}/0?socket_timeout=600",
    )
    broker = make_broker(settings)
    runtime = build_runtime(settings)
    upgrade(runtime.engine)
    stop = start_smtp(runtime, declare(broker, runtime), tls=None)
    try:
        # When three mails are sent, one after the other
        with smtplib.SMTP(settings.smtp.host, settings.smtp.port, timeout=30) as smtp:
            for n in range(3):
                smtp.sendmail("alice@customer.example", ["support@example.com"],
                             mail(f"[P2] Slow recognition {n}"))
        # Then each got its 250 while the broker still held the first one unanswered
        assert silent.requests.acquire(timeout=30)
        assert stored_count(runtime) == 3
    finally:
        silent.close()  # the handoff's read fails now, and it can stop
        stop()
        runtime.close()


def test_one_session_over_the_most_gets_421_and_the_next_after_a_close_is_taken(tmp_path, sink):
    running = start(make_settings(
        tmp_path, HELPDESK_RELAY_HOST=sink.host, HELPDESK_RELAY_PORT=str(sink.port),
        HELPDESK_SMTP_MAX_CONNECTIONS="2",
    ))
    try:
        first, second = client(running), client(running)
        # A third is greeted with 421 and closed: its sender tries again later
        with pytest.raises(smtplib.SMTPConnectError) as refused:
            client(running)
        assert refused.value.smtp_code == 421
        # The two open sessions work as ever
        second.sendmail("alice@customer.example", ["support@example.com"], mail("[P2] two"))
        # Once one ends, a new session is taken
        first.quit()
        third = connect_until_taken(lambda: client(running))
        third.sendmail("alice@customer.example", ["support@example.com"], mail("[P2] three"))
        third.quit()
        second.quit()
        assert stored(running) == 2
    finally:
        running.stop()


def test_one_client_over_its_most_gets_421_and_other_clients_are_still_taken(tmp_path, sink):
    # Given a gateway taking ten sessions at once, two of them from any one address
    running = start(make_settings(
        tmp_path, HELPDESK_RELAY_HOST=sink.host, HELPDESK_RELAY_PORT=str(sink.port),
        HELPDESK_SMTP_MAX_CONNECTIONS="10", HELPDESK_SMTP_MAX_CONNECTIONS_PER_CLIENT="2",
    ))
    smtp = running.runtime.settings.smtp

    def from_address(source: str) -> smtplib.SMTP:
        return smtplib.SMTP(smtp.host, smtp.port, source_address=(source, 0), timeout=30)

    try:
        first, second = from_address("127.0.0.1"), from_address("127.0.0.1")
        # When the same address opens a third, it is greeted with 421 and closed
        with pytest.raises(smtplib.SMTPConnectError) as refused:
            from_address("127.0.0.1")
        assert refused.value.smtp_code == 421
        assert b"from your address" in refused.value.smtp_error
        # Then another address is still taken, and so are the open sessions' mails
        other = from_address("127.0.0.2")
        other.sendmail("bob@customer.example", ["support@example.com"], mail("[P2] other"))
        second.sendmail("alice@customer.example", ["support@example.com"], mail("[P2] two"))
        # And once one of the address's sessions ends, it may open one again
        first.quit()
        third = connect_until_taken(lambda: from_address("127.0.0.1"))
        third.sendmail("alice@customer.example", ["support@example.com"], mail("[P2] three"))
        for session in (third, second, other):
            session.quit()
        assert stored(running) == 3
    finally:
        running.stop()


def test_every_thread_of_the_embedded_gateway_gets_a_connection_at_once(tmp_path):
    """Workers, the edge's stores and the sweep may all be in the database together:
    none waits for the pool (whose wait, 30 s, would hold a mail or a 250)."""
    settings = make_settings(tmp_path, HELPDESK_BROKER_WORKER_THREADS="40")
    running = Embedded(settings)
    engine = running.runtime.database.engine
    threads = settings.broker.worker_threads + STORE_THREADS + 1
    try:
        with contextlib.ExitStack() as held:
            for _ in range(threads):
                held.enter_context(engine.connect())
    finally:
        running.runtime.close()
        running.broker.close()


def test_a_store_that_waits_for_the_database_is_answered_however_short_the_idle_timeout(
    tmp_path, sink
):
    # Given a gateway that cuts silent sessions after half a second, and its SQLite
    # database held by another writer for longer than that
    running = start(make_settings(
        tmp_path, HELPDESK_RELAY_HOST=sink.host, HELPDESK_RELAY_PORT=str(sink.port),
        HELPDESK_SMTP_IDLE_TIMEOUT="0.5",
    ))
    try:
        path = make_url(running.runtime.settings.database_url).database
        assert path is not None
        holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")
        threading.Timer(2.0, holder.commit).start()
        # When a mail is sent meanwhile
        with client(running) as smtp:
            smtp.sendmail("alice@customer.example", ["support@example.com"],
                          mail("[P1] Sent while the database is busy"))
        # Then the client is answered once the database takes it (250), not cut off
        # at the idle timeout while the gateway stored it
        assert stored(running) == 1
        holder.close()
    finally:
        running.stop()


@pytest.mark.parametrize(("variable", "folder", "key"), [
    ("HELPDESK_DATA_DIR", "/proc/helpdesk", "data_dir"),
    ("HELPDESK_RELAY_OUTBOX_DIR", "/proc/outbox", "relay.outbox_dir"),
])
def test_a_folder_the_embedded_gateway_cannot_make_is_one_line_naming_its_key(
    tmp_path, variable, folder, key
):
    with pytest.raises(ConfigError) as refused:
        Embedded(make_settings(tmp_path, **{variable: folder}))
    assert str(refused.value).startswith(f"{variable}: {key}: cannot make {folder}: ")


def test_a_port_in_use_is_one_line_naming_the_port(tmp_path):
    # Given the port taken by another program
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        running = Embedded(make_settings(tmp_path, HELPDESK_SMTP_PORT=str(port)))
        # When the gateway starts on it
        with pytest.raises(ConfigError) as refused:
            running.start()  # and stops what it had started
    # Then it says so in one line, blaming the port and what set it
    assert str(refused.value).startswith(
        f"HELPDESK_SMTP_PORT: smtp.port: cannot listen on 127.0.0.1:{port}: ")
