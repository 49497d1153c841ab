"""Automatic mail to one address is counted over sliding windows (a fake clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.decide import ReplyLimit, reply_limit_reached

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
LIMITS = (
    ReplyLimit(3, timedelta(minutes=10), "10 minutes"),
    ReplyLimit(5, timedelta(hours=10), "10 hours"),
)


def ago(*minutes: float) -> list[datetime]:
    return [NOW - timedelta(minutes=m) for m in minutes]


def test_below_both_windows_the_mail_goes():
    assert reply_limit_reached(ago(1, 2), NOW, LIMITS) is None


def test_the_short_window_full_withholds_with_its_reason():
    assert reply_limit_reached(ago(1, 2, 9.9), NOW, LIMITS) == (
        "rate limit: 3 automatic mails to this address in 10 minutes already"
    )


def test_mails_older_than_the_window_no_longer_count():
    assert reply_limit_reached(ago(1, 2, 10), NOW, LIMITS) is None


def test_the_long_window_catches_a_slow_loop():
    slow = ago(15, 75, 135, 195, 255)  # one an hour: never three in ten minutes
    assert reply_limit_reached(slow, NOW, LIMITS) == (
        "rate limit: 5 automatic mails to this address in 10 hours already"
    )
    assert reply_limit_reached(slow[:4], NOW, LIMITS) is None


def test_a_window_of_zero_is_off():
    off = (ReplyLimit(0, timedelta(minutes=10), "10 minutes"),)
    assert reply_limit_reached(ago(*range(100)), NOW, off) is None
