"""The Dramatiq broker: Redis in production, in-process when none is configured."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

from gateway.settings import Settings


def make_broker(settings: Settings) -> dramatiq.Broker:
    """A broker for ``settings``, made the global one (Dramatiq's CLI looks there)."""
    broker: dramatiq.Broker
    if settings.broker.url:
        broker = RedisBroker(url=settings.broker.url)
    else:
        broker = StubBroker()
        broker.emit_after("process_boot")
    dramatiq.set_broker(broker)
    return broker
