"""The database: engines, connections and migrations, the same for SQLite and PostgreSQL."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    ColumnElement,
    Connection,
    CursorResult,
    Engine,
    Table,
    create_engine,
    event,
    func,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import sessionmaker

from gateway.errors import first_line
from gateway.poll import ready

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


CONNECT_TIMEOUT = 10
"""Seconds to reach PostgreSQL: a host that drops packets (a failover, a network
partition) is an outage after this, not after the system's two minutes."""

KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
              "keepalives_count": 3, "tcp_user_timeout": 60_000}
"""TCP keepalives, and a most for data sent and not acknowledged (milliseconds),
on PostgreSQL connections: a connection whose server vanished without a word
(a failover, a partition) fails within a minute, instead of holding a
statement (a store the SMTP client waits on, a sweep) for the system's
retransmissions (a quarter of an hour) or its keepalive (two hours)."""

LONE_LOCK_TIMEOUT_MS = 30_000
"""Milliseconds a statement that stands alone (autocommit) waits for a lock."""


def make_engine(url: str, *, pool_size: int = 10, autocommit: bool = False) -> Engine:
    """An engine tuned for the gateway's write pattern on either database
    (``autocommit``: on PostgreSQL, every connection of its pool in autocommit).

    SQLite: WAL with full sync (an accepted mail must survive a power cut),
    a busy timeout, and ``BEGIN IMMEDIATE`` so that concurrent writers queue
    for the lock instead of failing with "database is locked" on upgrade.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        # A file's pool holds a connection for each thread that may use one at once
        # (SQLAlchemy's default of 5 is fewer than the embedded gateway's threads).
        # One in memory is a single connection per thread, with no size to set.
        sizes = {"pool_size": pool_size, "max_overflow": pool_size} if path is not None else {}
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False},
                               **sizes)
        writers = _WriterQueue()
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", writers.begin)
        event.listen(engine, "commit", writers.end)
        event.listen(engine, "rollback", writers.end)
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in ("", "psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    options: dict[str, Any] = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
    # What the URL (or libpq's environment) says wins over the gateway's defaults:
    # SQLAlchemy's connect_args would replace the URL's values, and an ``options``
    # given here would hide PGOPTIONS from libpq.
    connect: dict[str, Any] = {}
    if "connect_timeout" not in parsed.query and "PGCONNECT_TIMEOUT" not in os.environ:
        connect["connect_timeout"] = CONNECT_TIMEOUT
    for name, value in KEEPALIVES.items():
        if name not in parsed.query:
            connect[name] = value
    if autocommit:
        # A lone statement (the SMTP edge's store) waits for a lock at most this
        # long; a table locked by a migration would otherwise hold the client's
        # answer until it ends. Put first, so that the URL's or PGOPTIONS' own
        # lock_timeout, if any, comes later and wins.
        given = str(parsed.query.get("options", os.environ.get("PGOPTIONS", "")))
        connect["options"] = f"-c lock_timeout={LONE_LOCK_TIMEOUT_MS} {given}".strip()
    engine = create_engine(parsed, pool_size=pool_size, max_overflow=pool_size,
                           connect_args=connect, **options)
    pinger = _PingWhenIdle(engine)
    event.listen(engine, "checkin", pinger.checkin)
    event.listen(engine, "checkout", pinger.checkout)
    return engine


def sqlite_path(url: str) -> Path | None:
    """The file of an SQLite database URL (a ``file:`` URI's too, with ``uri=true``);
    ``None`` for another database, or one in memory."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    name = parsed.database
    if str(parsed.query.get("uri", "")).lower() in ("true", "1", "yes", "on"):
        if not name.startswith("file:"):
            return Path(name)
        location = urlsplit(name)
        if parsed.query.get("mode") == "memory" or location.path in ("", ":memory:"):
            return None
        return Path(unquote(location.path))
    return None if name == ":memory:" else Path(name)


class _PingWhenIdle:
    """Check a pooled connection before use, but only one that has lain idle.

    ``pool_pre_ping`` pings at every checkout: a round trip more for each of
    the four times a mail takes a connection, all within milliseconds of the
    last use. A connection idle for a few seconds may have been cut (a database
    restart, a firewall) and is pinged; a dead one is replaced before anyone
    uses it. One cut while in use fails that transaction, which is retried
    (the SMTP edge answers 451, the broker redelivers), and the pool then
    drops all its connections.
    """

    IDLE_SECONDS = 2.0

    def __init__(self, engine: Engine) -> None:
        self.dialect = engine.dialect

    def checkin(self, dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    def checkout(self, dbapi_connection: Any, record: Any, proxy: Any) -> None:
        since = record.info.pop("idle_since", None)
        if since is None or time.monotonic() - since < self.IDLE_SECONDS:
            return
        try:
            self.dialect.do_ping(dbapi_connection)
        except Exception as error:  # the pool replaces the connection and tries again
            raise DisconnectionError(str(error)) from error


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


class _WriterQueue:
    """One SQLite writer at a time per process, queued on a lock rather than on SQLite.

    SQLite lets one transaction write at a time; a second ``BEGIN IMMEDIATE``
    waits in SQLite's busy handler, which polls with sleeps growing to 100 ms.
    With the SMTP edge and several worker threads in one process that polling,
    not the disk, set the pace. Queued on a lock, the next writer starts the
    moment the last one commits. The busy timeout still covers writers in other
    processes (``helpdesk db upgrade`` beside a running gateway).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def begin(self, connection: Connection) -> None:
        if connection.get_execution_options().get(_UNQUEUED):
            return
        self._lock.acquire()
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise
        connection.info["holds_writer_lock"] = True

    def end(self, connection: Any) -> None:
        if connection.info.pop("holds_writer_lock", False):
            self._lock.release()


_UNQUEUED = "helpdesk_unqueued"
"""Execution option: this SQLite connection only reads, and takes no writer's place."""


class Database:
    """The gateway's connections: transactions, reads, and statements that stand alone.

    Plain SQLAlchemy Core connections: the gateway writes with prepared Core
    statements, and an ORM session around each would cost more than the
    statements it runs. On PostgreSQL, reads and single statements take their
    connection from a second pool, kept in autocommit: switching a pooled
    connection into autocommit and back costs more than the read itself.
    Each thread holds at most one connection at a time, from either pool.
    """

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.engine = make_engine(url, pool_size=pool_size)
        self._autocommit = (
            make_engine(url, pool_size=pool_size, autocommit=True)
            if self.engine.dialect.name == "postgresql" else None
        )
        self.session = sessionmaker(self.engine, expire_on_commit=False)
        """ORM sessions, for tools and tests that read whole rows."""

    def dispose(self) -> None:
        self.engine.dispose()
        if self._autocommit is not None:
            self._autocommit.dispose()

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A connection for reads that need no transaction of their own.

        On PostgreSQL it is in autocommit, sparing a BEGIN and a ROLLBACK round
        trip; on SQLite it does not queue behind the writers (WAL lets readers
        read while one writes).
        """
        if self._autocommit is not None:
            with self._autocommit.connect() as connection:
                yield connection
            return
        with self.engine.connect().execution_options(**{_UNQUEUED: True}) as connection:
            yield connection

    @contextmanager
    def writing_once(self) -> Iterator[Connection]:
        """A connection for one statement that is a transaction by itself, committed
        when the block ends without error.

        On PostgreSQL the statement runs in autocommit: the server commits it
        before answering, durably, sparing a BEGIN and a COMMIT round trip. On
        SQLite it is an ordinary write transaction, queued behind the other
        writers. Only for a single statement: in autocommit two would commit apart.
        """
        if self._autocommit is not None:
            with self._autocommit.connect() as connection:
                yield connection
            return
        with self.engine.begin() as connection:
            yield connection

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A connection whose work is committed on success and rolled back on error."""
        with self.engine.begin() as connection:
            yield connection

    def connect(self) -> Connection:
        """A connection whose transaction its user commits (``commit_right_after``
        included); closing it uncommitted rolls back."""
        return self.engine.connect()


def new_id(result: CursorResult[Any]) -> int:
    """The primary key the database gave the row that ``result`` inserted."""
    key = result.inserted_primary_key
    if key is None:
        raise RuntimeError("the insert returned no primary key")
    return int(key[0])


def move_by_hand(
    database: Database, table: Table, ids: Sequence[int], statuses: Sequence[str],
    **values: object,
) -> list[int]:
    """Set ``values`` on the rows among ``ids`` whose status is one of ``statuses``,
    in one statement; returns the ids of those changed, in order. For what a
    person does from the command line: only rows in the expected state move,
    so that a mistyped or stale id changes nothing."""
    if not ids:
        return []
    with database.transaction() as connection:
        return sorted(connection.scalars(
            update(table)
            .where(table.c.id.in_(ids), table.c.status.in_(statuses))
            .values(**values)
            .returning(table.c.id)
        ))


def total_of(
    connection: Connection, shown: int, limit: int, table: Table, where: ColumnElement[bool]
) -> int:
    """How many rows of ``table`` match ``where`` in all, when ``shown`` of them
    were read with ``limit``: counted only when that page came back full."""
    if shown < limit:
        return shown
    return int(connection.scalar(select(func.count()).select_from(table).where(where)) or 0)


_SQLITE_NOT_NOW = frozenset({
    5, 6,  # SQLITE_BUSY, SQLITE_LOCKED: another writer holds it
    9,  # SQLITE_INTERRUPT
    8, 10, 13, 14, 15,  # READONLY, IOERR, FULL, CANTOPEN, PROTOCOL: the file or its disk
    17,  # SQLITE_SCHEMA: the schema changed under a prepared statement
})
"""SQLite's primary result codes that mean "not now" rather than a defect."""


def unavailable(error: BaseException) -> str | None:
    """The reason in one line when ``error`` says the database cannot do the work
    now (unreachable, restarting, out of connections, a lock timeout or a
    deadlock), else ``None`` (a fault in the statement or the data, or no
    database error at all).

    Work that meets it is retried as it is, and says so in a line: during an
    outage every message in flight fails, and a traceback for each buries the
    log an operator reads to find out what happened.
    """
    if isinstance(error, PoolTimeout):  # every connection of the pool busy for its timeout
        return f"no connection free in the pool ({first_line(error)})"
    if not isinstance(error, DBAPIError):
        return None
    if not (isinstance(error, OperationalError | InterfaceError) or error.connection_invalidated):
        return None
    code = getattr(error.orig, "sqlite_errorcode", None)
    if code is not None and code & 0xFF not in _SQLITE_NOT_NOW:
        return None  # SQLite says OperationalError of defects too: "no such table"
    return first_line(error)


def unreadable(error: BaseException) -> str:
    """What stops the database from being read, in one line: an outage
    (``unavailable``), or anything else it said."""
    reason = unavailable(error)
    if reason is not None:
        return f"the database is unavailable: {reason}"
    return f"the database cannot be read: {first_line(error)}"


def commit_right_after(
    connection: Connection, step: Callable[[], None], *, timeout: float = 30.0
) -> None:
    """Run ``step``, then commit the connection's transaction with as little time
    between the two as the database allows.

    For a commit that records something done outside the database (the
    relay's final dot), the time between the two is when a killed process
    leaves them disagreeing. On PostgreSQL the COMMIT goes out the moment
    ``step`` returns, before anything waits (a commit's round trip and the
    wake-up after it take milliseconds on a busy machine; this takes
    microseconds): once sent, the server commits it whatever becomes of this
    process. SQLite commits in this process, so its window is the commit's
    own sync.

    If ``step`` raises, nothing is committed. If the commit fails after
    ``step`` has run, ``OperationalError`` is raised and the connection is
    dropped from the pool.
    """
    if connection.dialect.name != "postgresql":
        step()
        connection.commit()
        return
    driver = connection.connection.driver_connection
    pgconn = driver.pgconn  # type: ignore[union-attr]
    # Other threads have their turn first. The interpreter hands its lock to a
    # thread that has waited for it a switch interval (5 ms), at the first chance
    # it gets, and that chance could fall between the step and the COMMIT: the
    # window would then be the other threads' turns, milliseconds, not
    # microseconds. Right after taking the lock back, no thread has waited that
    # long. (Under the bench's load, from the step's end to the return from
    # sending the COMMIT, which counts the wait for the lock after it has gone:
    # a p99 of 6.4 ms before, 4.5 ms with this.)
    time.sleep(0)
    step()
    try:
        pgconn.send_query(b"COMMIT")
        _await_commit(pgconn, time.monotonic() + timeout)
    except Exception as error:
        connection.invalidate(error)
        raise OperationalError("COMMIT", None, error) from error
    connection.commit()  # the driver finds no transaction open and sends nothing


def _await_commit(pgconn: Any, deadline: float) -> None:
    """Wait for the reply to a COMMIT sent with libpq's asynchronous API."""
    from psycopg import pq

    while pgconn.flush():
        _wait(pgconn.socket, deadline, write=True)
    while True:
        pgconn.consume_input()
        if not pgconn.is_busy():
            break
        _wait(pgconn.socket, deadline, write=False)
    results = []
    while (result := pgconn.get_result()) is not None:
        results.append(result)
    last = results[-1] if results else None
    if last is None or last.status != pq.ExecStatus.COMMAND_OK or last.command_status != b"COMMIT":
        reason = last.error_message.decode("utf-8", "replace") if last is not None else ""
        status = last.command_status if last is not None else None
        raise RuntimeError(f"COMMIT not confirmed ({status!r}): {reason}".rstrip(": "))


def _wait(fd: int, deadline: float, *, write: bool) -> None:
    if not ready(fd, deadline - time.monotonic(), write=write):
        raise TimeoutError("no reply to COMMIT from the database")


def _alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest migration."""
    command.upgrade(_alembic_config(engine), "head")


SCHEMA_ADVICE = {
    "empty": "holds no gateway yet: helpdesk db upgrade (or helpdesk serve) makes it",
    "older": "holds an older schema than this release's: helpdesk db upgrade",
    "newer": "holds a schema from a later release than this one: run that release",
}
"""What a person is told of a database whose schema is not this release's."""


def schema_state(connection: Connection) -> Literal["current", "empty", "older", "newer"]:
    """Where the schema on ``connection`` stands against this release's migrations:
    current, none at all yet, older (``helpdesk db upgrade`` brings it up), or newer
    (written by a later release, which this one does not know)."""
    script = ScriptDirectory.from_config(_alembic_config(connection.engine))
    revision = MigrationContext.configure(connection).get_current_revision()
    if revision == script.get_current_head():
        return "current"
    if revision is None:
        return "empty"
    known = {migration.revision for migration in script.walk_revisions()}
    return "older" if revision in known else "newer"
