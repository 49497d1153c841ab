"""Which failures are a service being away (one line) and which are not (a traceback)."""

from __future__ import annotations

import pytest
import redis.exceptions
from dramatiq.errors import ConnectionClosed
from sqlalchemy.exc import IntegrityError, OperationalError

from gateway.outages import away


@pytest.mark.parametrize(("error", "said"), [
    (OperationalError("SELECT 1", None, Exception("server closed the connection\nmore")),
     "the database is unavailable (server closed the connection)"),
    (redis.exceptions.ConnectionError("Connection refused."),
     "the broker is unavailable (Connection refused.)"),
    (redis.exceptions.TimeoutError("Timeout reading from socket"),
     "the broker is unavailable (Timeout reading from socket)"),
    (ConnectionClosed(redis.exceptions.ConnectionError("Connection reset by peer")),
     "the broker is unavailable (Connection reset by peer)"),
])
def test_a_service_away_is_said_in_one_line(error, said):
    assert away(error) == said


@pytest.mark.parametrize("error", [
    IntegrityError("INSERT", None, Exception("duplicate key")),
    redis.exceptions.ResponseError("WRONGTYPE Operation against a key"),
    ValueError("a defect"),
])
def test_anything_else_is_not_an_outage(error):
    assert away(error) is None
