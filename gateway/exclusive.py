"""One embedded gateway per database.

An embedded gateway (``helpdesk serve`` with in-process workers) takes every
unfinished row of its database for its own when it starts: its queue lives
in its memory, so whatever was claimed before it started belongs to a
process that is gone (``service.Sweeper``). A second one started on the same
database (the same command run twice, a service manager restarting a gateway
that is still stopping) would take the first one's mail as it is being sent:
sent twice, or left for a person. So the first holds the database, and a
second refuses to start, saying which.

SQLite: an exclusive ``flock`` on a file beside the database, which the
system lets go of when the process ends however it ends. PostgreSQL: a
session advisory lock, held by a connection kept for the purpose, and let
go of by the server when that connection ends.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

from gateway.database import make_engine, sqlite_path
from gateway.errors import HelpdeskError

try:
    import fcntl
except ImportError:  # not on every platform: there, nothing is held
    fcntl = None  # type: ignore[assignment]

ADVISORY_KEY = 0x68656C70  # "help": the gateway's advisory lock in a shared PostgreSQL
"""Distinct from the numbers other programs sharing the database would choose."""


class AlreadyRunning(HelpdeskError):
    """Another embedded gateway holds the database."""


def hold(database_url: str) -> Callable[[], None]:
    """Hold ``database_url`` for this process's embedded gateway; returns the call
    that lets go. Raises ``AlreadyRunning`` if another holds it."""
    path = sqlite_path(database_url)
    if path is not None:
        return _hold_file(path.with_name(path.name + ".lock"), path)
    if make_url(database_url).get_backend_name() == "postgresql":
        return _hold_advisory(database_url)
    return lambda: None  # SQLite in memory: this process's alone


def _hold_file(lock: Path, database: Path) -> Callable[[], None]:
    if fcntl is None:
        return lambda: None
    lock.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(descriptor, 32).decode("ascii", "replace").strip() or "another process"
        os.close(descriptor)
        raise AlreadyRunning(
            f"{database}: another embedded gateway runs on this database (process "
            f"{holder}); stop it first, or give this one a data folder of its own"
        ) from None
    os.ftruncate(descriptor, 0)
    os.write(descriptor, str(os.getpid()).encode())

    def let_go() -> None:
        with contextlib.suppress(OSError):
            os.close(descriptor)

    return let_go


def _hold_advisory(database_url: str) -> Callable[[], None]:
    engine = make_engine(database_url, pool_size=1)
    connection = engine.connect()
    held = connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_KEY})
    connection.commit()
    if not held:
        connection.close()
        engine.dispose()
        raise AlreadyRunning(
            f"{make_url(database_url).render_as_string(hide_password=True)}: another embedded "
            "gateway runs on this database; stop it first, or run the parts apart with a "
            "broker (helpdesk smtp, worker, sweeper)"
        )

    def let_go() -> None:
        with contextlib.suppress(Exception):
            connection.close()
        engine.dispose()

    return let_go
