"""A service the gateway needs being away for now: said in one line, not a traceback.

During an outage of the database or the broker every message in flight,
every handoff pause and every sweep fails the same way; a traceback for
each buries the log that a person reads to find out what happened and
when it ended. Anything else (a defect, bad data) keeps its traceback.
"""

from __future__ import annotations

import logging

import redis.exceptions
from dramatiq.errors import ConnectionClosed, ConnectionFailed

from gateway.database import unavailable
from gateway.errors import first_line

_BROKER_AWAY = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                redis.exceptions.ReadOnlyError, redis.exceptions.OutOfMemoryError,
                redis.exceptions.TryAgainError, redis.exceptions.ClusterDownError,
                ConnectionClosed, ConnectionFailed)
"""Redis unreachable, restarting, loading, failing over (a replica is read-only
until it is promoted), out of memory; and Dramatiq's own words for those."""
_BROKER_REFUSES = (redis.exceptions.AuthenticationError, redis.exceptions.AuthorizationError)
"""A login refused: the settings are wrong, and nothing mends it by waiting."""
_BROKER_AWAY_REPLIES = ("MISCONF", "MASTERDOWN", "LOADING")
"""Redis's error replies that mean "not now" (MISCONF: it cannot save, and takes no
writes until it can) without a class of their own in redis-py."""


def away(error: BaseException) -> str | None:
    """Which service is away and why, in one line; ``None`` if ``error`` is not that."""
    reason = unavailable(error)
    if reason is not None:
        return f"the database is unavailable ({reason})"
    if isinstance(error, _BROKER_REFUSES):
        return None
    if isinstance(error, _BROKER_AWAY) or (
        isinstance(error, redis.exceptions.ResponseError)
        and str(error).startswith(_BROKER_AWAY_REPLIES)
    ):
        return f"the broker is unavailable ({first_line(error)})"
    return None


def log_failure(logger: logging.Logger, error: BaseException, message: str, *args: object) -> None:
    """Log ``message`` with ``error``'s traceback, or, when ``error`` is a service
    being away, with only which and why, as a warning."""
    reason = away(error)
    if reason is None:
        logger.error(message, *args, exc_info=error)
    else:
        logger.warning(message + ": %s", *args, reason)
