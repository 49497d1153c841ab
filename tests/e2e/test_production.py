"""End to end in the production deployment: PostgreSQL, Redis, and separate
SMTP, worker and sweeper processes — including killing them mid-burst."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.conftest import Sink, free_port, mail
from tests.deployment import Burst, Deployment, assert_exactly_once
from tests.proxy import TcpProxy

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
def deployment(tmp_path, sink: Sink, pg_url: str, redis_url: str) -> Iterator[Deployment]:
    running = Deployment(
        tmp_path, database_url=pg_url, broker_url=redis_url, relay_host=sink.host,
        relay_port=sink.port, smtp_port=free_port(),
    )
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


@pytest.mark.slow
def test_worker_killed_mid_burst_loses_nothing_and_doubles_nothing(deployment, sink, pg_url):
    deployment.start()
    burst = Burst(deployment, 300)
    burst.start()
    burst.wait_until_sent(100)
    deployment.kill("worker")
    burst.wait_until_sent(200)
    deployment.start_worker()
    burst.join()

    assert_exactly_once(deployment, sink, burst, pg_url)


@pytest.mark.slow
def test_smtp_process_killed_mid_burst_loses_nothing_that_got_250(deployment, sink, pg_url):
    deployment.start()
    burst = Burst(deployment, 300)
    burst.start()
    burst.wait_until_sent(120)
    deployment.kill("smtp")
    time.sleep(0.5)
    deployment.start_smtp()
    burst.join()

    assert burst.refused_attempts > 0, "the kill interrupted the burst"
    assert_exactly_once(deployment, sink, burst, pg_url)


@pytest.mark.slow
@pytest.mark.parametrize("emptied", [False, True], ids=["back-as-it-was", "back-empty"])
def test_broker_lost_mid_burst_loses_nothing_and_doubles_nothing(
    tmp_path, sink, pg_url, redis_url, emptied
):
    """Redis goes away mid-burst. The edge keeps answering 250 (the database is
    the guarantee, not the broker), and every mail gets its one case and one
    acknowledgement once the broker is back: handed over by the edge, which
    kept what it stored meanwhile, or, when Redis comes back empty (restarted
    without persistence, what it held for the workers gone), by the sweep.

    Back as it was, the sweep still has a part: a fetch that Redis carried
    out as the connection broke leaves its messages in the worker's
    unacknowledged set, which Dramatiq gives back only once that worker is
    gone (seen: three mails in one run of eight). Its ``stale_after`` (20 s)
    is twice the edge's pause, so that what the edge kept is its to hand over."""
    import redis
    from sqlalchemy.engine import make_url

    target = make_url(redis_url)
    proxy = TcpProxy(target.host or "127.0.0.1", target.port or 6379)
    running = Deployment(
        tmp_path, database_url=pg_url,
        broker_url=f"redis://127.0.0.1:{proxy.port}/{target.database or 0}",
        relay_host=sink.host, relay_port=sink.port, smtp_port=free_port(),
        stale_after=3.0 if emptied else 20.0,
    )
    try:
        running.start()
        burst = Burst(running, 300)
        burst.start()
        burst.wait_until_sent(100)
        proxy.cut()
        at_cut = burst.sent
        burst.wait_until_sent(at_cut + 60)
        assert burst.sent >= at_cut + 60, "mail was taken while the broker was away"
        if emptied:
            client = redis.Redis.from_url(redis_url)
            client.flushdb()
            client.close()
        proxy.restore()
        burst.join()

        assert burst.refused_attempts == 0, "no mail was refused for the broker's sake"
        assert_exactly_once(running, sink, burst, pg_url)
        if not emptied:
            assert "stored meanwhile handed over" in running.log("smtp")
        # the edge and the sweep said the broker was away in a line each, not a traceback
        edge_and_sweep = running.log("smtp") + running.log("sweeper")
        assert "the broker is unavailable (" in edge_and_sweep
        assert "Traceback" not in edge_and_sweep
    finally:
        running.stop()
        proxy.close()


@pytest.mark.slow
def test_database_lost_mid_burst_loses_nothing_and_doubles_nothing(
    tmp_path, sink, pg_url, redis_url
):
    """Every process's connections to PostgreSQL are cut mid-burst for a few
    seconds, in the middle of transactions and of sending: the edge answers
    451 meanwhile, the senders retry, and every mail that got its 250 gets one
    case and one acknowledgement once the database is back."""
    from sqlalchemy.engine import make_url

    target = make_url(pg_url)
    proxy = TcpProxy(target.host or "127.0.0.1", target.port or 5432)
    proxied = target.set(host="127.0.0.1", port=proxy.port)
    # As with the default (60 s), a claim goes stale only well after an outage
    # this short: a sender whose commit of "sent" was cut off just after the
    # mail went records it once the database is back, and sends nothing twice.
    running = Deployment(
        tmp_path, database_url=proxied.render_as_string(hide_password=False),
        broker_url=redis_url, relay_host=sink.host, relay_port=sink.port,
        smtp_port=free_port(), stale_after=10.0,
    )
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
        assert_exactly_once(running, sink, burst, pg_url)
        # the workers and the sweep said what failed in a line each, without a traceback
        assert "Traceback" not in running.log("worker") + running.log("sweeper")
    finally:
        running.stop()
        proxy.close()
