"""One embedded gateway per database.

An embedded gateway (``helpdesk serve`` with in-process workers) takes every
unfinished row of its database for its own when it starts: its queue lives
in its memory, so whatever was claimed before it started belongs to a
process that is gone (``service.Sweeper``). A second one started on the same
database (the same command run twice, a service manager restarting a gateway
that is still stopping) would take the first one's mail as it is being sent:
sent twice, or left for a person. So the first holds the database, and a
second refuses to start, saying which.

SQLite: an exclusive ``flock`` on a file beside the database (its real path,
links followed), which the system lets go of when the process ends however
it ends. PostgreSQL: a session advisory lock, held by a connection kept for
the purpose, which the server lets go of when that connection ends; a
connection lost meanwhile (a server restart) loses the lock with it, so the
recovery sweep checks it each round and takes it again.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from gateway.database import make_engine, sqlite_path, unreadable
from gateway.errors import HelpdeskError

try:
    import fcntl
except ImportError:  # not on every platform: there, nothing is held
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

ADVISORY_KEY = 0x68656C70  # "help": the gateway's advisory lock in a shared PostgreSQL
"""Distinct from the numbers other programs sharing the database would choose;
the lock's second number is the schema's (``hashtext(current_schema())``; a
search_path that names no schema there yet is one of its own, and the
migration then says what is wrong)."""


class AlreadyRunning(HelpdeskError):
    """Another embedded gateway holds the database."""


class Hold:
    """This process's hold on its database; ``check`` now and then, ``let_go`` at the end."""

    def check(self) -> None:
        """Make sure the hold is still this process's, taking it again if it was lost."""

    def let_go(self) -> None:
        """Nothing is held from here on."""


def hold(database_url: str) -> Hold:
    """Hold ``database_url`` for this process's embedded gateway. Raises
    ``AlreadyRunning`` if another holds it, and ``HelpdeskError`` in one line
    if it cannot be asked (the lock file cannot be opened, PostgreSQL cannot
    be reached)."""
    path = sqlite_path(database_url)
    if path is not None:
        return _FileHold(path.resolve())
    if make_url(database_url).get_backend_name() == "postgresql":
        return _AdvisoryHold(database_url)
    return Hold()  # SQLite in memory: this process's alone


class _FileHold(Hold):
    def __init__(self, database: Path) -> None:
        self._descriptor: int | None = None
        if fcntl is None:
            return
        lock = database.with_name(database.name + ".lock")
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise HelpdeskError(f"{lock}: cannot open the file that keeps a second gateway "
                                f"off this database: {error.strerror or error}") from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(descriptor, 32).decode("ascii", "replace").strip()
            os.close(descriptor)
            raise AlreadyRunning(
                f"{database}: another embedded gateway runs on this database (process "
                f"{holder or 'unknown'}); stop it first, or give this one a data folder "
                "of its own"
            ) from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, str(os.getpid()).encode())
        self._descriptor = descriptor

    def let_go(self) -> None:
        if self._descriptor is not None:
            with contextlib.suppress(OSError):
                os.close(self._descriptor)
            self._descriptor = None


class _AdvisoryHold(Hold):
    def __init__(self, database_url: str) -> None:
        self._name = make_url(database_url).render_as_string(hide_password=True)
        self._engine: Engine | None = make_engine(database_url, pool_size=1)
        self._connection: Connection | None = None
        try:
            taken = self._take()
        except BaseException:
            self.let_go()
            raise
        if not taken:
            self.let_go()
            raise AlreadyRunning(
                f"{self._name}: another embedded gateway runs on this database; stop it "
                "first, or run the parts apart with a broker (helpdesk smtp, worker, sweeper)"
            )

    def _take(self) -> bool:
        """Whether this process holds the lock, asked over a new connection; raises
        ``HelpdeskError`` in one line when the database cannot be asked."""
        assert self._engine is not None
        self._drop_connection()
        try:
            connection = self._engine.connect()
            # Per schema: gateways kept apart by their search_path share no data.
            taken = bool(connection.scalar(text(
                "SELECT pg_try_advisory_lock(:key, hashtext(coalesce(current_schema(), '')))"),
                {"key": ADVISORY_KEY}))
            connection.commit()
        except DBAPIError as error:
            raise HelpdeskError(f"{self._name}: {unreadable(error)}") from None
        if taken:
            self._connection = connection
        else:
            connection.close()
        return taken

    def check(self) -> None:
        if self._engine is None:
            return
        if self._connection is not None:
            try:
                self._connection.scalar(text("SELECT 1"))
                self._connection.commit()
                return
            except DBAPIError:
                log.warning("%s: the connection that kept a second embedded gateway off "
                            "this database was lost; taking the database again", self._name)
        try:
            taken = self._take()
        except HelpdeskError as error:
            log.warning("%s; the database is taken again once it answers", error)
            return
        if not taken:
            log.error("%s: another embedded gateway took this database while this one had "
                      "lost its hold (a database restart); stop one of them: both handing "
                      "out the same mail may send it twice", self._name)

    def _drop_connection(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()
            self._connection = None

    def let_go(self) -> None:
        self._drop_connection()
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
