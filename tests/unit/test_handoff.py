"""The handoff to the broker: a failure pauses it, and what comes meanwhile is left
to the recovery sweep (a fake clock; the broker is a list that can be made to fail)."""

from __future__ import annotations

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


def test_a_failure_pauses_the_handoff_and_it_resumes_after_the_pause(caplog):
    broker, clock = Broker(), Clock()
    handoff = Handoff(broker.enqueue, pause=10.0, clock=clock)
    assert handoff.hand_over(1)
    # The broker goes away: one attempt fails, the next mails are not tried
    broker.away = True
    assert not handoff.hand_over(2)
    broker.away = False
    clock.now += 9.9
    assert not handoff.hand_over(3)
    # After the pause it tries again, and says how many it left to the sweep
    clock.now += 0.1
    assert handoff.hand_over(4)
    assert broker.queued == [1, 4]
    assert "2 stored meanwhile are left to the recovery sweep" in caplog.text


def test_a_broker_still_away_after_the_pause_pauses_it_again():
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
    assert broker.queued == [4]


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
