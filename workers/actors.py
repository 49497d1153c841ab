"""The actors: thin. Each takes an id, calls the gateway, and hands on what follows.

Processing a mail also sends the acknowledgement it queued, at once, in the
same call: the row is committed before, claimed by this call (which spares a
transaction to claim it), so a process that dies meanwhile leaves a stale
claim to the recovery sweep; handing it to the sending queue instead would
cost a broker round trip and a wait for every mail. The
sending actor is for retries, recovered rows, and the moments when the
relay has just failed (``RelayTrouble``).

They are declared on a given broker with a given runtime (not at import
time), so that one process can build them for its own settings and tests
can build them for theirs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name

from gateway.clock import utcnow
from gateway.database import unavailable
from gateway.outages import log_failure
from gateway.outbox import Claimed, longest_send, release, send_claimed, send_one
from gateway.pipeline import process_inbound
from gateway.runtime import Runtime
from gateway.settings import RelaySettings

log = logging.getLogger(__name__)

INBOUND_QUEUE = "inbound"
OUTBOX_QUEUE = "outbox"


@dataclass(frozen=True)
class Actors:
    process_inbound: dramatiq.Actor[[int], None]
    send_outbox: dramatiq.Actor[[int], None]


class DramatiqDispatcher:
    """``gateway.recovery.Dispatcher`` over the actors' queues."""

    def __init__(self, actors: Actors) -> None:
        self.actors = actors

    def process(self, inbound_id: int) -> None:
        self.actors.process_inbound.send(inbound_id)

    def waiting(self) -> int:
        """Processing and sending messages queued, delayed or being worked on."""
        broker = self.actors.process_inbound.broker
        queues = (INBOUND_QUEUE, OUTBOX_QUEUE)
        if isinstance(broker, RedisBroker):  # the broker's own count, as its join uses
            return sum(int(broker.do_qsize(queue)) for queue in queues)
        if isinstance(broker, StubBroker):
            return sum(broker.queues[name].unfinished_tasks
                       for queue in queues for name in (queue, dq_name(queue))
                       if name in broker.queues)
        raise TypeError(f"cannot count the messages of a {type(broker).__name__}")

    def send(self, outbox_id: int, delay: timedelta | None = None) -> None:
        if delay:
            milliseconds = int(delay.total_seconds() * 1000)
            self.actors.send_outbox.send_with_options(args=(outbox_id,), delay=milliseconds)
        else:
            self.actors.send_outbox.send(outbox_id)


class RelayTrouble:
    """Whether the relay failed a moment ago, so that processing should not wait on it.

    A relay that is down, or that swallows connections until the timeout,
    would hold every processing thread for as long as it takes to fail; for
    ``HOLD_SECONDS`` after a failure, processing queues acknowledgements for
    the sending actor instead, and goes on opening cases.
    """

    HOLD_SECONDS = 10.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._until = float("-inf")  # one float, replaced whole: no lock needed

    def now(self) -> bool:
        return self._clock() < self._until

    def seen(self) -> None:
        self._until = self._clock() + self.HOLD_SECONDS


def time_limit_ms(relay: RelaySettings) -> int:
    """How long an actor may run before Dramatiq stops it, in milliseconds.

    Dramatiq stops an actor past its time limit (ten minutes unless told) by
    raising in its thread, wherever it is. Between a mail's final dot and the
    record of what became of it, that would leave the row saying "sent" for
    a mail the relay may have refused: so the limit is the longest a send
    can take (``gateway.outbox.longest_send``).
    """
    return int(longest_send(relay).total_seconds() * 1000)


@contextmanager
def _retried_if_unavailable(kind: str, item_id: int) -> Iterator[None]:
    """An unavailable database (``gateway.database.unavailable``) fails the
    message with ``dramatiq.Retry``: retried with the same backoff as any
    failure, but in one line of log instead of Dramatiq's traceback."""
    try:
        yield
    except Exception as error:
        reason = unavailable(error)
        if reason is None:
            raise
        log.warning("%s %s: the database is unavailable (%s); retried", kind, item_id, reason)
        raise dramatiq.Retry(reason) from error


def declare(broker: dramatiq.Broker, runtime: Runtime) -> DramatiqDispatcher:
    """Declare the actors on ``broker`` for ``runtime``; returns their dispatcher."""
    dispatcher: DramatiqDispatcher
    trouble = RelayTrouble()

    max_attempts = runtime.settings.relay.max_attempts

    def deliver(outbox_id: int, claimed: Claimed | None = None) -> None:
        if claimed is None:
            delivery, delay = send_one(runtime.database, runtime.transport, outbox_id, utcnow(),
                                       max_attempts=max_attempts)
        else:
            delivery, delay = send_claimed(runtime.database, runtime.transport, claimed,
                                           utcnow(), max_attempts=max_attempts)
        if delivery is not None and delivery.outcome in ("temporary", "unconfirmed"):
            trouble.seen()
        if delay is not None:
            queue_send(outbox_id, delay)

    def queue_send(outbox_id: int, delay: timedelta | None = None) -> None:
        """Hand a pending row to the sending actor; with the broker away it stays
        pending, and the recovery sweep hands it out instead."""
        try:
            dispatcher.send(outbox_id, delay)
        except Exception as error:
            log_failure(log, error, "outbox %s: could not be queued; the recovery sweep will",
                        outbox_id)

    def process(inbound_id: int) -> None:
        at_once = not trouble.now()
        with _retried_if_unavailable("inbound", inbound_id):
            outcome = process_inbound(runtime.pipeline, inbound_id, utcnow(),
                                      claim_outbox=at_once)
        for claimed in outcome.claimed:
            try:
                deliver(claimed.id, claimed)
            except Exception as error:  # the case is committed: the sending actor's now
                log_failure(log, error, "outbox %s: sending with its case failed; queued",
                             claimed.id)
                _hand_over(claimed)
        for outbox_id in outcome.outbox_ids:
            queue_send(outbox_id)

    def _hand_over(claimed: Claimed) -> None:
        """Release a claimed row to the sending actor (nothing to do if it was
        settled or reclaimed meanwhile); if even that fails, the recovery sweep
        releases the stale claim."""
        try:
            released = release(runtime.database, claimed, utcnow())
        except Exception as error:
            log_failure(log, error, "outbox %s: could not be released; the recovery sweep will",
                         claimed.id)
            return
        if released:
            queue_send(claimed.id)

    def send(outbox_id: int) -> None:
        with _retried_if_unavailable("outbox", outbox_id):
            deliver(outbox_id)

    retries: dict[str, Any] = {
        "max_retries": 8, "min_backoff": 500, "max_backoff": 30_000,
        "time_limit": time_limit_ms(runtime.settings.relay),
    }
    actors = Actors(
        process_inbound=dramatiq.actor(
            broker=broker, actor_name="process_inbound", queue_name=INBOUND_QUEUE, **retries
        )(process),
        send_outbox=dramatiq.actor(
            broker=broker, actor_name="send_outbox", queue_name=OUTBOX_QUEUE, **retries
        )(send),
    )
    dispatcher = DramatiqDispatcher(actors)
    return dispatcher
