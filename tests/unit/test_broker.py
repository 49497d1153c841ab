"""How long each idle Redis consumer waits between polls: the inbound queue is
polled promptly, the queues whose work waits by design at the worker's pace."""

from __future__ import annotations

import pytest
from dramatiq.brokers.redis import RedisBroker

from workers.actors import INBOUND_QUEUE, OUTBOX_QUEUE
from workers.broker import IDLE_POLL_MS, PromptRedisBroker


@pytest.fixture
def polls(monkeypatch) -> dict[str, int]:
    """The idle timeout each queue's consumer is made with, by queue name."""
    made: dict[str, int] = {}

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> None:
        made[queue_name] = timeout

    monkeypatch.setattr(RedisBroker, "consume", consume)
    broker = PromptRedisBroker(url="redis://127.0.0.1:1/0")  # never connected
    for queue in (INBOUND_QUEUE, f"{INBOUND_QUEUE}.DQ", OUTBOX_QUEUE, f"{OUTBOX_QUEUE}.DQ"):
        broker.consume(queue, prefetch=16, timeout=1000)
    return made


def test_the_inbound_queue_is_polled_promptly(polls):
    assert polls[INBOUND_QUEUE] == IDLE_POLL_MS < 1000


def test_the_sending_and_delay_queues_keep_the_workers_timeout(polls):
    waiting = (OUTBOX_QUEUE, f"{INBOUND_QUEUE}.DQ", f"{OUTBOX_QUEUE}.DQ")
    assert [polls[queue] for queue in waiting] == [1000, 1000, 1000]
