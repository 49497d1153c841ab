"""Reading the relay's answer to the end of a mail, against the clock."""

from __future__ import annotations

import socket

import pytest

from gateway import relay


class FakeClock:
    """Moves only when a test moves it: the waits below are all already over."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(relay.time, "monotonic", fake.monotonic)
    return fake


def test_an_answer_that_came_while_the_wait_was_recorded_past_the_deadline_is_read(clock):
    # Given a relay that answers while the sender records that it waits, and a record
    # so slow that the whole wait is over by the time it returns
    ours, theirs = socket.socketpair()
    with ours, theirs:
        def waiting() -> None:
            theirs.sendall(b"250 2.0.0 queued as 4F2A\r\n")
            clock.now += 30.0

        # When the answer is read
        answer = relay._answer(ours, 10.0, waiting, 0.0)
    # Then the answer that is there is taken, not counted as never come
    assert answer == (250, b"2.0.0 queued as 4F2A")


def test_no_answer_by_the_deadline_is_a_timeout_after_one_last_look(clock):
    ours, theirs = socket.socketpair()
    with ours, theirs:
        def waiting() -> None:
            theirs.sendall(b"250-half of an answer\r\n")
            clock.now += 30.0

        with pytest.raises(TimeoutError, match="no whole answer within 10 s"):
            relay._answer(ours, 10.0, waiting, 0.0)


def test_an_answer_awaited_no_longer_than_the_moment_it_is_slow_still_gets_its_last_look(
    clock, monkeypatch
):
    # Given waits that take their whole time on the fake clock
    def ready(fd: int, timeout: float) -> bool:
        clock.now += max(timeout, 0.0)
        return real_ready(fd, 0.0)

    real_ready = relay.ready
    monkeypatch.setattr(relay, "ready", ready)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        # When the relay answers just as it is found slow, which is also the deadline
        def waiting() -> None:
            theirs.sendall(b"250 OK\r\n")

        # Then the answer is read in the last look, after the wait is recorded
        assert relay._answer(ours, 1.0, waiting, 1.0) == (250, b"OK")
