"""Database connections over a real PostgreSQL: a pooled connection cut while idle
is replaced before use, reads outside a transaction see committed rows, and a
commit that must follow a step at once does, or fails loudly."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from gateway.database import (
    _PingWhenIdle,
    commit_right_after,
    make_engine,
    make_sessionmaker,
    reading,
    transaction,
)
from tests.proxy import TcpProxy


@pytest.fixture
def proxied(pg_url: str) -> Iterator[tuple[Engine, TcpProxy]]:
    url = make_url(pg_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    engine = make_engine(url.set(port=proxy.port).render_as_string(hide_password=False))
    try:
        yield engine, proxy
    finally:
        engine.dispose()
        proxy.close()


@pytest.fixture
def pg_sessions(pg_url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on a fresh PostgreSQL database, one pooled connection (reused each time)."""
    engine = make_engine(pg_url, pool_size=1)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def sqlite_sessions(tmp_path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(f"sqlite:///{tmp_path}/t.sqlite3")
    yield make_sessionmaker(engine)
    engine.dispose()


def pid(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(text("select pg_backend_pid()")))


def test_connection_cut_while_idle_is_replaced_before_use(proxied, monkeypatch):
    engine, proxy = proxied
    first = pid(engine)
    # Given the pooled connection's link is cut while it lies idle
    proxy.cut()
    proxy.restore()
    # When it is next checked out after the idle time
    monkeypatch.setattr(_PingWhenIdle, "IDLE_SECONDS", 0.0)
    # Then it is found dead and replaced: the caller sees no error
    assert pid(engine) != first


def test_connection_used_moments_ago_is_not_pinged(proxied):
    engine, proxy = proxied
    pid(engine)
    # A cut just after use is not looked for (no round trip per checkout):
    # that one use fails, and the pool starts afresh for the next.
    proxy.cut()
    proxy.restore()
    with pytest.raises(OperationalError):
        pid(engine)
    assert pid(engine) > 0


def test_reading_sees_committed_rows_and_leaves_no_transaction_open(pg_sessions):
    with transaction(pg_sessions) as session:
        session.execute(text("create table t (n int)"))
        session.execute(text("insert into t values (1)"))
    with reading(pg_sessions) as connection:
        assert connection.scalar(text("select n from t")) == 1
        # autocommit: no BEGIN was sent, no transaction stays open after the read
        status = connection.connection.dbapi_connection.info.transaction_status
        assert status == psycopg.pq.TransactionStatus.IDLE


def test_sqlite_read_does_not_wait_for_the_writer(sqlite_sessions):
    with transaction(sqlite_sessions) as session:
        session.execute(text("create table t (n int)"))
        session.execute(text("insert into t values (1)"))
    seen: list[list[int]] = []

    def read() -> None:
        with reading(sqlite_sessions) as connection:
            seen.append(list(connection.scalars(text("select n from t"))))

    # While a writer holds the lock with an uncommitted change,
    with transaction(sqlite_sessions) as writer:
        writer.execute(text("insert into t values (2)"))
        # a reader does not wait for it: it sees what is committed.
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout=10)
        assert seen == [[1]]


def test_a_transaction_after_a_read_is_still_all_or_nothing(pg_sessions):
    # The autocommit of a read must not stay on the pooled connection it used.
    with transaction(pg_sessions) as session:
        session.execute(text("create table t (n int)"))
    with reading(pg_sessions) as connection:
        first = connection.connection.dbapi_connection
        connection.scalar(text("select count(*) from t"))
    with pytest.raises(RuntimeError), transaction(pg_sessions) as session:
        assert session.connection().connection.dbapi_connection is first
        session.execute(text("insert into t values (1)"))
        raise RuntimeError("fails after the first write")
    with reading(pg_sessions) as connection:
        assert connection.scalar(text("select count(*) from t")) == 0


def test_sqlite_writer_after_a_read_still_queues(sqlite_sessions):
    # The reader's pass around the writer queue must not stay with its connection.
    with reading(sqlite_sessions) as connection:
        connection.scalar(text("select 1"))
    with transaction(sqlite_sessions) as session:
        assert session.connection().info.get("holds_writer_lock") is True


# --- a commit right after a step ----------------------------------------------------------


def make_table(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        session.execute(text("create table t (n int)"))


def committed(sessions: sessionmaker[Session]) -> list[int]:
    with reading(sessions) as connection:
        return list(connection.scalars(text("select n from t order by n")))


@pytest.mark.parametrize("database", ["pg_sessions", "sqlite_sessions"])
def test_commit_right_after_runs_the_step_then_commits(database, request):
    sessions = request.getfixturevalue(database)
    make_table(sessions)
    seen_by_the_step: list[list[int]] = []
    with sessions() as session:
        session.execute(text("insert into t values (1)"))
        commit_right_after(session, lambda: seen_by_the_step.append(committed(sessions)))
    # The step ran while the change was not yet committed; then it was.
    assert seen_by_the_step == [[]]
    assert committed(sessions) == [1]
    # And the pooled connection carries on with ordinary transactions.
    with transaction(sessions) as session:
        session.execute(text("insert into t values (2)"))
    assert committed(sessions) == [1, 2]


@pytest.mark.parametrize("database", ["pg_sessions", "sqlite_sessions"])
def test_nothing_is_committed_when_the_step_fails(database, request):
    sessions = request.getfixturevalue(database)
    make_table(sessions)

    def step() -> None:
        raise OSError("the relay went away")

    with pytest.raises(OSError), sessions() as session:
        session.execute(text("insert into t values (1)"))
        commit_right_after(session, step)
    assert committed(sessions) == []


def test_a_commit_lost_after_the_step_is_an_error_and_the_pool_recovers(proxied):
    engine, proxy = proxied
    sessions = make_sessionmaker(engine)
    make_table(sessions)
    # Given the database's link is cut just as the step is done
    with pytest.raises(OperationalError) as raised, sessions() as session:
        session.execute(text("insert into t values (1)"))
        commit_right_after(session, proxy.cut)
    # Then the caller hears the commit failed; the server never got it
    assert raised.value.statement == "COMMIT"
    proxy.restore()
    assert committed(sessions) == []
    # And the pool serves sound connections again
    with transaction(sessions) as session:
        session.execute(text("insert into t values (2)"))
    assert committed(sessions) == [2]
