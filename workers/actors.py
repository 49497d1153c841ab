"""The actors: thin. Each takes an id, calls the gateway, and hands on what follows.

They are declared on a given broker with a given runtime (not at import
time), so that one process can build them for its own settings and tests
can build them for theirs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

import dramatiq

from gateway.clock import utcnow
from gateway.outbox import send_one
from gateway.pipeline import process_inbound
from gateway.runtime import Runtime

log = logging.getLogger(__name__)

INBOUND_QUEUE = "inbound"
OUTBOX_QUEUE = "outbox"


@dataclass(frozen=True)
class Actors:
    process_inbound: dramatiq.Actor  # type: ignore[type-arg]
    send_outbox: dramatiq.Actor  # type: ignore[type-arg]


class DramatiqDispatcher:
    """``gateway.recovery.Dispatcher`` over the actors' queues."""

    def __init__(self, actors: Actors) -> None:
        self.actors = actors

    def process(self, inbound_id: int) -> None:
        self.actors.process_inbound.send(inbound_id)

    def send(self, outbox_id: int, delay: timedelta | None = None) -> None:
        if delay:
            milliseconds = int(delay.total_seconds() * 1000)
            self.actors.send_outbox.send_with_options(args=(outbox_id,), delay=milliseconds)
        else:
            self.actors.send_outbox.send(outbox_id)


def declare(broker: dramatiq.Broker, runtime: Runtime) -> DramatiqDispatcher:
    """Declare the actors on ``broker`` for ``runtime``; returns their dispatcher."""
    dispatcher: DramatiqDispatcher

    def process(inbound_id: int) -> None:
        outcome = process_inbound(runtime.pipeline, inbound_id, utcnow())
        for outbox_id in outcome.outbox_ids:
            dispatcher.send(outbox_id)

    def send(outbox_id: int) -> None:
        _, delay = send_one(
            runtime.sessions, runtime.transport, outbox_id, utcnow(),
            max_attempts=runtime.settings.relay.max_attempts,
        )
        if delay is not None:
            dispatcher.send(outbox_id, delay)

    actors = Actors(
        process_inbound=dramatiq.actor(
            process, broker=broker, actor_name="process_inbound", queue_name=INBOUND_QUEUE,
            max_retries=8, min_backoff=500, max_backoff=30_000,
        ),
        send_outbox=dramatiq.actor(
            send, broker=broker, actor_name="send_outbox", queue_name=OUTBOX_QUEUE,
            max_retries=8, min_backoff=500, max_backoff=30_000,
        ),
    )
    dispatcher = DramatiqDispatcher(actors)
    return dispatcher
