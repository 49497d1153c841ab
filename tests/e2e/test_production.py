"""End to end in the production deployment: PostgreSQL, Redis, and separate
SMTP, worker and sweeper processes — including killing them mid-burst."""

from __future__ import annotations

import contextlib
import smtplib
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from gateway.database import Database
from gateway.models import Case, InboundMessage, ThreadEntry
from tests.conftest import Sink, free_port, mail
from tests.deployment import Deployment
from tests.proxy import TcpProxy

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
def deployment(tmp_path, sink: Sink, pg_url: str, redis_url: str) -> Iterator[Deployment]:
    running = Deployment(
        tmp_path, database_url=pg_url, broker_url=redis_url, relay_host=sink.host,
        relay_port=sink.port, smtp_port=free_port(),
    )
    running.pg_url = pg_url  # type: ignore[attr-defined]
    try:
        yield running
    finally:
        running.stop()


def test_p1_and_unmarked_mail_are_acknowledged_by_a_separate_worker(deployment, sink):
    deployment.start()
    with deployment.client() as smtp:
        smtp.sendmail("alice@customer.example", ["support@example.com"],
                      mail("[P1] Database down", message_id="p1"))
        smtp.sendmail("bob@customer.example", ["support@example.com"],
                      mail("How do I load a grammar?", sender="bob@customer.example",
                           message_id="plain"))

    acks = {a.message["In-Reply-To"]: a for a in sink.wait_for(2, timeout=60)}

    p1 = acks["<p1@customer.example>"].message.get_body(("plain",)).get_content()
    plain = acks["<plain@customer.example>"].message.get_body(("plain",)).get_content()
    assert "Severity: 1 - Critical" in p1
    assert "Severity: 3 - Minor" in plain  # LumenVox default level, see lumenvox.yaml


class Burst:
    """Sends ``total`` mails over ``connections`` SMTP connections, retrying each mail
    until it gets a 250, as a sending mail server would."""

    def __init__(self, deployment: Deployment, total: int, connections: int = 4) -> None:
        self.deployment = deployment
        self.ids = [f"burst-{n}-{uuid.uuid4().hex[:8]}" for n in range(total)]
        self.accepted: set[str] = set()
        self.refused_attempts = 0
        self.lock = threading.Lock()
        self.sent = 0
        shares = [self.ids[i::connections] for i in range(connections)]
        self.threads = [threading.Thread(target=self._run, args=(s,)) for s in shares]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self, timeout: float = 180) -> None:
        for thread in self.threads:
            thread.join(timeout)

    def _run(self, ids: list[str]) -> None:
        smtp: smtplib.SMTP | None = None
        for message_id in ids:
            # One customer each: a burst from one address would meet the reply limit.
            customer = f"{message_id}@customer.example"
            raw = mail(f"[P2] burst {message_id}", message_id=message_id, sender=customer)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    if smtp is None:
                        smtp = self.deployment.client()
                    smtp.sendmail(customer, ["support@example.com"], raw)
                    with self.lock:
                        self.accepted.add(message_id)
                        self.sent += 1
                    break
                except (OSError, smtplib.SMTPException):
                    with self.lock:
                        self.refused_attempts += 1
                    smtp = None
                    time.sleep(0.2)
        if smtp is not None:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                smtp.quit()

    def wait_until_sent(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.sent < count and time.monotonic() < deadline:
            time.sleep(0.01)


def assert_exactly_once(deployment: Deployment, sink: Sink, burst: Burst) -> None:
    assert burst.accepted == set(burst.ids), "every mail got its 250 in the end"
    sink.wait_for(len(burst.ids), timeout=120)
    acks = sink.settle(quiet=5.0)  # longer than the sweep's stale_after: late doubles show
    replied = [a.message["In-Reply-To"].strip("<>").split("@")[0] for a in acks]
    doubles = {m for m in replied if replied.count(m) > 1}
    assert not doubles, f"acknowledged twice: {sorted(doubles)[:5]}"
    assert set(replied) == set(burst.ids)
    database = Database(deployment.pg_url)  # type: ignore[attr-defined]
    with database.session() as session:
        cases = session.scalar(select(func.count()).select_from(Case))
        entries = session.execute(
            select(ThreadEntry.message_id, func.count())
            .where(ThreadEntry.direction == "in").group_by(ThreadEntry.message_id)
        ).all()
        unprocessed = session.scalar(
            select(func.count()).select_from(InboundMessage)
            .where(InboundMessage.status == "received")
        )
    database.dispose()
    assert cases == len(burst.ids)
    assert all(n == 1 for _, n in entries)
    assert unprocessed == 0


@pytest.mark.slow
def test_worker_killed_mid_burst_loses_nothing_and_doubles_nothing(deployment, sink):
    deployment.start()
    burst = Burst(deployment, 300)
    burst.start()
    burst.wait_until_sent(100)
    deployment.kill("worker")
    burst.wait_until_sent(200)
    deployment.start_worker()
    burst.join()

    assert_exactly_once(deployment, sink, burst)


@pytest.mark.slow
def test_smtp_process_killed_mid_burst_loses_nothing_that_got_250(deployment, sink):
    deployment.start()
    burst = Burst(deployment, 300)
    burst.start()
    burst.wait_until_sent(120)
    deployment.kill("smtp")
    time.sleep(0.5)
    deployment.start_smtp()
    burst.join()

    assert burst.refused_attempts > 0, "the kill interrupted the burst"
    assert_exactly_once(deployment, sink, burst)


@pytest.mark.slow
def test_broker_lost_mid_burst_loses_nothing_and_doubles_nothing(tmp_path, sink, pg_url, redis_url):
    """Redis goes away mid-burst and comes back empty, as one restarted without
    persistence does: what it held for the workers is gone. The edge keeps
    answering 250 (the database is the guarantee, not the broker), and every
    mail gets its one case and one acknowledgement once the broker is back."""
    import redis
    from sqlalchemy.engine import make_url

    target = make_url(redis_url)
    proxy = TcpProxy(target.host or "127.0.0.1", target.port or 6379)
    running = Deployment(
        tmp_path, database_url=pg_url,
        broker_url=f"redis://127.0.0.1:{proxy.port}/{target.database or 0}",
        relay_host=sink.host, relay_port=sink.port, smtp_port=free_port(),
    )
    running.pg_url = pg_url  # type: ignore[attr-defined]
    try:
        running.start()
        burst = Burst(running, 300)
        burst.start()
        burst.wait_until_sent(100)
        proxy.cut()
        at_cut = burst.sent
        burst.wait_until_sent(at_cut + 60)
        client = redis.Redis.from_url(redis_url)
        client.flushdb()
        client.close()
        proxy.restore()
        burst.join()

        assert burst.sent >= at_cut + 60, "mail was taken while the broker was away"
        assert burst.refused_attempts == 0, "no mail was refused for the broker's sake"
        assert_exactly_once(running, sink, burst)
    finally:
        running.stop()
        proxy.close()


@pytest.mark.slow
def test_database_lost_mid_burst_loses_nothing_and_doubles_nothing(tmp_path, sink, pg_url, redis_url):
    """Every process's connections to PostgreSQL are cut mid-burst for a few
    seconds, in the middle of transactions and of sending: the edge answers
    451 meanwhile, the senders retry, and every mail that got its 250 gets one
    case and one acknowledgement once the database is back."""
    from sqlalchemy.engine import make_url

    target = make_url(pg_url)
    proxy = TcpProxy(target.host or "127.0.0.1", target.port or 5432)
    proxied = target.set(host="127.0.0.1", port=proxy.port)
    running = Deployment(
        tmp_path, database_url=proxied.render_as_string(hide_password=False),
        broker_url=redis_url, relay_host=sink.host, relay_port=sink.port,
        smtp_port=free_port(),
    )
    running.pg_url = pg_url  # type: ignore[attr-defined]
    try:
        running.start()
        burst = Burst(running, 300)
        burst.start()
        burst.wait_until_sent(100)
        proxy.cut()
        time.sleep(3)
        refused_in_the_cut = burst.refused_attempts
        proxy.restore()
        burst.join()

        assert refused_in_the_cut > 0, "the edge said 451 while the database was away"
        assert_exactly_once(running, sink, burst)
    finally:
        running.stop()
        proxy.close()
