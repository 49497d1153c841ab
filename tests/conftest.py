"""Shared fixtures: real servers on loopback, never mocks of the thing under test.

Tests that need PostgreSQL or Redis skip with the reason when the server is
not reachable; with ``HELPDESK_TEST_REQUIRE_SERVICES=1`` (set by ``.ci/run``)
such a skip becomes a failure, so CI always runs them.
"""

from __future__ import annotations

import os
import smtplib
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from hypothesis import settings as hypothesis_settings

from gateway.settings import Settings, load_settings

REQUIRE_SERVICES = os.environ.get("HELPDESK_TEST_REQUIRE_SERVICES") == "1"

# Property tests draw new examples on every run here, to find what no one
# thought of; CI (``HELPDESK_TEST_PROFILE=ci``) draws the same ones each time, so
# that main is red only for a change, not for a new draw.
hypothesis_settings.register_profile("ci", derandomize=True, database=None)
hypothesis_settings.load_profile(os.environ.get("HELPDESK_TEST_PROFILE", "default"))
PG_ADMIN_URL = os.environ.get("HELPDESK_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("HELPDESK_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"


def pytest_sessionstart(session: pytest.Session) -> None:
    """Gateway processes left running by a run that was killed are stopped before
    this one uses the shared Redis database (``tests.deployment.reap_orphans``)."""
    from tests.deployment import reap_orphans  # it imports this module

    reaped = reap_orphans()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reaped and reporter is not None:
        reporter.write_line(f"stopped {len(reaped)} gateway processes left by an earlier "
                            f"test run: {sorted(reaped)}")


def need(service: str, problem: str | None) -> None:
    """Skip (or, in CI, fail) when ``service`` is unavailable for ``problem``."""
    if problem is None:
        return
    message = f"{service} unavailable: {problem}"
    if REQUIRE_SERVICES:
        pytest.fail(message + " (HELPDESK_TEST_REQUIRE_SERVICES=1)")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def connect_until_taken(connect: Callable[[], smtplib.SMTP]) -> smtplib.SMTP:
    """``connect()`` once the server has seen a session before it close (it may
    answer 421 for the session's slot until then)."""
    deadline = time.monotonic() + 20
    while True:
        try:
            return connect()
        except smtplib.SMTPConnectError:
            assert time.monotonic() < deadline, "the closed session was never freed"
            time.sleep(0.05)


@dataclass
class Received:
    sender: str
    recipients: list[str]
    raw: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class SinkHandler:
    """An outbound relay that keeps what it receives; can be told to refuse."""

    messages: list[Received] = field(default_factory=list)
    reply: str = "250 OK"
    refuse: dict[str, str] = field(default_factory=dict)
    """Recipients refused at RCPT, with the reply each gets."""
    condition: threading.Condition = field(default_factory=threading.Condition)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if not self.reply.startswith("250"):
            return self.reply
        with self.condition:
            self.messages.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
            )
            self.condition.notify_all()
        return self.reply


@dataclass
class Sink:
    handler: SinkHandler
    host: str
    port: int

    @property
    def messages(self) -> list[Received]:
        with self.handler.condition:
            return list(self.handler.messages)

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        """Block until ``count`` mails have arrived (or fail after ``timeout``)."""
        deadline = time.monotonic() + timeout
        with self.handler.condition:
            while len(self.handler.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"sink got {len(self.handler.messages)} mails, expected {count}")
                self.handler.condition.wait(left)
            return list(self.handler.messages)

    def settle(self, quiet: float = 1.0) -> list[Received]:
        """What arrived once nothing more has come for ``quiet`` seconds."""
        count = -1
        while count != len(self.messages):
            count = len(self.messages)
            time.sleep(quiet)
        return self.messages


@pytest.fixture
def sink() -> Iterator[Sink]:
    handler = SinkHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield Sink(handler, "127.0.0.1", controller.port)
    finally:
        controller.stop()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"helpdesk_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as error:
        admin.dispose()
        need("PostgreSQL", f"{PG_ADMIN_URL}: {str(error).splitlines()[0]}")
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def redis_url() -> str:
    """The test Redis database, emptied."""
    import redis

    try:
        client = redis.Redis.from_url(REDIS_URL)
        client.flushdb()
        client.close()
    except Exception as error:
        need("Redis", f"{REDIS_URL}: {error}")
    return REDIS_URL


def make_settings(tmp_path: Path, **env: str) -> Settings:
    """Settings for a test: data in ``tmp_path``, overrides as HELPDESK_* values."""
    environ = {
        "HELPDESK_DATA_DIR": str(tmp_path / "data"),
        "HELPDESK_SMTP_HOST": "127.0.0.1",
        "HELPDESK_SMTP_PORT": str(free_port()),
        "HELPDESK_SUPPORT_ADDRESSES": "support@example.com,help@example.com",
        "HELPDESK_RECOVERY_INTERVAL": "0.5",
        **env,
    }
    config = tmp_path / "helpdesk.toml"
    config.touch()
    environ["HELPDESK_CONFIG"] = str(config)
    return load_settings(None, environ=environ)


def mail(
    subject: str = "[P1] Database down",
    *,
    sender: str = "alice@customer.example",
    to: str = "support@example.com",
    message_id: str | None = None,
    body: str = "Our production database stopped answering at 09:12.\n",
    headers: dict[str, str] | None = None,
) -> bytes:
    """A plain customer mail as raw bytes."""
    message = EmailMessage()
    message["From"] = f"Alice Example <{sender}>"
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = f"<{message_id or uuid.uuid4().hex}@customer.example>"
    message["Date"] = "Mon, 23 Nov 2026 09:15:00 +0000"
    for name, value in (headers or {}).items():
        message[name] = value
    message.set_content(body)
    return message.as_bytes()
