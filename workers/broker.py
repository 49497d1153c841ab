"""The Dramatiq broker: Redis in production, in-process when none is configured."""

from __future__ import annotations

import dramatiq
from dramatiq.broker import Consumer
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

from gateway.settings import Settings
from workers.actors import INBOUND_QUEUE

IDLE_POLL_MS = 50
"""Longest pause of the idle inbound consumer between polls of Redis."""


class PromptRedisBroker(RedisBroker):
    """Redis, with an idle inbound consumer that looks for new mail every ``IDLE_POLL_MS``.

    An idle Dramatiq consumer backs off up to its worker's timeout (a second
    by default, and the ``dramatiq`` command sets no other) before polling
    again. At a moderate rate each mail could wait that second before it is
    processed: the latency would be the backoff, not the work. The other
    queues (the sending actor's, and the delay queues that hold retries)
    carry work that waits seconds or more by design, and keep the second:
    every worker process polls four queues, and at 50 ms each an idle
    gateway spent 8% of a core and 220 Redis scripts a second on polling.
    """

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Consumer:
        if queue_name == INBOUND_QUEUE:
            timeout = min(timeout, IDLE_POLL_MS)
        return super().consume(queue_name, prefetch, timeout)


def make_broker(settings: Settings) -> dramatiq.Broker:
    """A broker for ``settings``, made the global one (Dramatiq's CLI looks there)."""
    broker: dramatiq.Broker
    if settings.broker.url:
        broker = PromptRedisBroker(url=settings.broker.url)
    else:
        broker = StubBroker()
        broker.emit_after("process_boot")
    dramatiq.set_broker(broker)
    return broker
