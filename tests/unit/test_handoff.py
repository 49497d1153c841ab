"""The handoff to the broker: a failure pauses it, and what comes meanwhile is kept
and handed over once the broker is back (a fake clock; the broker is a list that
can be made to fail)."""

from __future__ import annotations

import time

import pytest

from gateway.handoff import Handoff


class Broker:
    def __init__(self) -> None:
        self.queued: list[int] = []
        self.away = False

    def enqueue(self, inbound_id: int) -> None:
        if self.away:
            raise ConnectionError("broker unreachable")
        self.queued.append(inbound_id)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_failure_pauses_the_handoff_and_what_came_meanwhile_follows_in_order(caplog):
    broker, clock = Broker(), Clock()
    handoff = Handoff(broker.enqueue, pause=10.0, clock=clock)
    assert handoff.hand_over(1)
    # The broker goes away: one attempt fails, the next mails are kept, not tried
    broker.away = True
    assert not handoff.hand_over(2)
    broker.away = False
    clock.now += 9.9
    assert not handoff.hand_over(3)
    assert broker.queued == [1]
    assert handoff.kept == 2
    # After the pause, the kept ones go first, then the new one
    clock.now += 0.1
    assert handoff.hand_over(4)
    assert broker.queued == [1, 2, 3, 4]
    assert handoff.kept == 0
    assert "enqueueing again: 2 stored meanwhile handed over" in caplog.text


def test_a_broker_still_away_after_the_pause_pauses_it_again_and_keeps_everything():
    broker, clock = Broker(), Clock()
    handoff = Handoff(broker.enqueue, pause=10.0, clock=clock)
    broker.away = True
    assert not handoff.hand_over(1)
    clock.now += 10
    assert not handoff.hand_over(2)  # tried, failed: paused anew
    broker.away = False
    clock.now += 5
    assert not handoff.hand_over(3)
    clock.now += 5
    assert handoff.hand_over(4)
    assert broker.queued == [1, 2, 3, 4]


def test_the_broker_failing_halfway_through_the_kept_ones_keeps_the_rest():
    class Flaky(Broker):
        """Goes away again just as it is asked for 3, the first time."""

        def enqueue(self, inbound_id: int) -> None:
            if inbound_id == 3 and not self.failed_once:
                self.failed_once = self.away = True
            super().enqueue(inbound_id)

        failed_once = False

    broker, clock = Flaky(), Clock()
    handoff = Handoff(broker.enqueue, pause=10.0, clock=clock)
    broker.away = True
    handoff.hand_over(1)
    handoff.hand_over(2)
    handoff.hand_over(3)
    broker.away = False
    clock.now += 10
    assert not handoff.hand_over(4)  # 1 and 2 go; 3 fails and pauses it again
    assert broker.queued == [1, 2]
    assert handoff.kept == 2
    broker.away = False
    clock.now += 10
    assert handoff.hand_over()
    assert broker.queued == [1, 2, 3, 4]


def test_the_pause_ending_without_new_mail_counts_every_kept_one(caplog):
    broker, clock = Broker(), Clock()
    handoff = Handoff(broker.enqueue, pause=10.0, clock=clock)
    broker.away = True
    handoff.hand_over(1)
    handoff.hand_over(2)
    broker.away = False
    clock.now += 10
    assert handoff.hand_over()
    assert "enqueueing again: 2 stored meanwhile handed over" in caplog.text


def test_beyond_what_it_keeps_the_oldest_are_left_to_the_sweep(caplog):
    broker, clock = Broker(), Clock()
    handoff = Handoff(broker.enqueue, pause=10.0, keep=3, clock=clock)
    broker.away = True
    for inbound_id in range(1, 6):
        handoff.hand_over(inbound_id)
    broker.away = False
    clock.now += 10
    assert handoff.hand_over()
    assert broker.queued == [3, 4, 5]
    assert "2 more left to the recovery sweep" in caplog.text


def test_the_thread_hands_over_the_kept_ones_when_the_pause_ends_without_new_mail():
    broker = Broker()
    handoff = Handoff(broker.enqueue, pause=0.2)
    broker.away = True
    handoff.start()
    handoff(1)
    handoff(2)
    deadline = time.monotonic() + 10
    while handoff.kept < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    broker.away = False  # back during the pause; nothing more arrives
    while broker.queued != [1, 2] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert broker.queued == [1, 2]  # before stop(), which would hand them over anyway
    handoff.stop()


def test_the_thread_hands_over_in_order_and_stop_drains_the_queue():
    broker = Broker()
    handoff = Handoff(broker.enqueue)
    handoff.start()
    for inbound_id in range(50):
        handoff(inbound_id)
    handoff.stop()
    assert broker.queued == list(range(50))


@pytest.mark.parametrize("error", [ConnectionError("refused"), TimeoutError("no answer")])
def test_any_failure_of_the_broker_is_only_logged(error):
    def enqueue(inbound_id: int) -> None:
        raise error

    assert Handoff(enqueue).hand_over(7) is False


def test_a_broker_away_is_one_line_and_anything_else_keeps_its_traceback(caplog):
    import redis.exceptions

    def enqueue_to(error: Exception):
        def enqueue(inbound_id: int) -> None:
            raise error
        return enqueue

    caplog.set_level("WARNING")
    away = redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379. "
                                            "Connection refused.")
    Handoff(enqueue_to(away)).hand_over(7)
    Handoff(enqueue_to(ValueError("a defect"))).hand_over(8)
    first, second = caplog.records
    assert (first.levelname, first.exc_info) == ("WARNING", None)
    assert first.getMessage().startswith("inbound 7 stored but not enqueued; ")
    assert first.getMessage().endswith(": the broker is unavailable (Error 111 connecting to "
                                       "127.0.0.1:6379. Connection refused.)")
    assert second.levelname == "ERROR" and second.exc_info is not None
