"""The Dramatiq broker: Redis in production, in-process when none is configured."""

from __future__ import annotations

import dramatiq
from dramatiq.broker import Consumer
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

from gateway.settings import Settings

IDLE_POLL_MS = 50
"""Longest pause of an idle consumer between polls of Redis."""


class PromptRedisBroker(RedisBroker):
    """Redis, with idle consumers that look for new work at least every ``IDLE_POLL_MS``.

    An idle Dramatiq consumer backs off up to its worker's timeout (a second
    by default, and the ``dramatiq`` command sets no other) before polling
    again. At a moderate rate each mail could wait that second before it is
    processed (and a retried acknowledgement before it is sent): the
    latency would be the backoff, not the work. Polling an empty Redis list
    every 50 ms costs nothing worth saving.
    """

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Consumer:
        return super().consume(queue_name, prefetch, min(timeout, IDLE_POLL_MS))


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
