"""The one place that reads the real time.

The pure core never calls this: it takes ``now`` as an argument. Only the
edges (SMTP handler, actors, sweeps) ask for the time, through ``utcnow``.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """The current instant, aware, in UTC."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """``value`` as aware UTC; a naive value is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
