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

from gateway.database import Database, _PingWhenIdle, commit_right_after
from tests.proxy import TcpProxy


@pytest.fixture
def proxied(pg_url: str) -> Iterator[tuple[Database, TcpProxy]]:
    url = make_url(pg_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    database = Database(url.set(port=proxy.port).render_as_string(hide_password=False))
    try:
        yield database, proxy
    finally:
        database.dispose()
        proxy.close()


@pytest.fixture
def pg_database(pg_url: str) -> Iterator[Database]:
    """A fresh PostgreSQL database, one pooled connection per pool (reused each time)."""
    database = Database(pg_url, pool_size=1)
    yield database
    database.dispose()


@pytest.fixture
def sqlite_database(tmp_path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path}/t.sqlite3")
    yield database
    database.dispose()


def pid(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(text("select pg_backend_pid()")))


def test_connection_cut_while_idle_is_replaced_before_use(proxied, monkeypatch):
    database, proxy = proxied
    engine = database.engine
    first = pid(engine)
    # Given the pooled connection's link is cut while it lies idle
    proxy.cut()
    proxy.restore()
    # When it is next checked out after the idle time
    monkeypatch.setattr(_PingWhenIdle, "IDLE_SECONDS", 0.0)
    # Then it is found dead and replaced: the caller sees no error
    assert pid(engine) != first


def test_connection_used_moments_ago_is_not_pinged(proxied):
    database, proxy = proxied
    engine = database.engine
    pid(engine)
    # A cut just after use is not looked for (no round trip per checkout):
    # that one use fails, and the pool starts afresh for the next.
    proxy.cut()
    proxy.restore()
    with pytest.raises(OperationalError):
        pid(engine)
    assert pid(engine) > 0


def test_reading_sees_committed_rows_and_leaves_no_transaction_open(pg_database):
    with pg_database.transaction() as connection:
        connection.execute(text("create table t (n int)"))
        connection.execute(text("insert into t values (1)"))
    with pg_database.reading() as connection:
        assert connection.scalar(text("select n from t")) == 1
        # autocommit: no BEGIN was sent, no transaction stays open after the read
        status = connection.connection.dbapi_connection.info.transaction_status
        assert status == psycopg.pq.TransactionStatus.IDLE


def test_sqlite_read_does_not_wait_for_the_writer(sqlite_database):
    with sqlite_database.transaction() as connection:
        connection.execute(text("create table t (n int)"))
        connection.execute(text("insert into t values (1)"))
    seen: list[list[int]] = []

    def read() -> None:
        with sqlite_database.reading() as connection:
            seen.append(list(connection.scalars(text("select n from t"))))

    # While a writer holds the lock with an uncommitted change,
    with sqlite_database.transaction() as writer:
        writer.execute(text("insert into t values (2)"))
        # a reader does not wait for it: it sees what is committed.
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout=10)
        assert seen == [[1]]


def test_a_transaction_after_a_read_is_still_all_or_nothing(pg_database):
    # Reads run in autocommit; a transaction never gets one of their connections.
    with pg_database.transaction() as connection:
        connection.execute(text("create table t (n int)"))
    with pg_database.reading() as connection:
        read_by = connection.connection.dbapi_connection
        connection.scalar(text("select count(*) from t"))
    with pytest.raises(RuntimeError), pg_database.transaction() as connection:
        written_by = connection.connection.dbapi_connection
        assert written_by is not read_by and not written_by.autocommit
        connection.execute(text("insert into t values (1)"))
        raise RuntimeError("fails after the first write")
    with pg_database.reading() as connection:
        assert connection.scalar(text("select count(*) from t")) == 0


def test_sqlite_writer_after_a_read_still_queues(sqlite_database):
    # The reader's pass around the writer queue must not stay with its connection.
    with sqlite_database.reading() as connection:
        connection.scalar(text("select 1"))
    with sqlite_database.transaction() as connection:
        assert connection.info.get("holds_writer_lock") is True


# --- a commit right after a step ----------------------------------------------------------


def make_table(database: Database) -> None:
    with database.transaction() as connection:
        connection.execute(text("create table t (n int)"))


def committed(database: Database) -> list[int]:
    with database.reading() as connection:
        return list(connection.scalars(text("select n from t order by n")))


@pytest.mark.parametrize("which", ["pg_database", "sqlite_database"])
def test_commit_right_after_runs_the_step_then_commits(which, request):
    database = request.getfixturevalue(which)
    make_table(database)
    seen_by_the_step: list[list[int]] = []
    with database.connect() as connection:
        connection.execute(text("insert into t values (1)"))
        commit_right_after(connection, lambda: seen_by_the_step.append(committed(database)))
    # The step ran while the change was not yet committed; then it was.
    assert seen_by_the_step == [[]]
    assert committed(database) == [1]
    # And the pooled connection carries on with ordinary transactions.
    with database.transaction() as connection:
        connection.execute(text("insert into t values (2)"))
    assert committed(database) == [1, 2]


@pytest.mark.parametrize("which", ["pg_database", "sqlite_database"])
def test_nothing_is_committed_when_the_step_fails(which, request):
    database = request.getfixturevalue(which)
    make_table(database)

    def step() -> None:
        raise OSError("the relay went away")

    with pytest.raises(OSError), database.connect() as connection:
        connection.execute(text("insert into t values (1)"))
        commit_right_after(connection, step)
    assert committed(database) == []


def test_a_commit_lost_after_the_step_is_an_error_and_the_pool_recovers(proxied):
    database, proxy = proxied
    make_table(database)
    # Given the database's link is cut just as the step is done
    with pytest.raises(OperationalError) as raised, database.connect() as connection:
        connection.execute(text("insert into t values (1)"))
        commit_right_after(connection, proxy.cut)
    # Then the caller hears the commit failed; the server never got it
    assert raised.value.statement == "COMMIT"
    proxy.restore()
    assert committed(database) == []
    # And the pool serves sound connections again
    with database.transaction() as connection:
        connection.execute(text("insert into t values (2)"))
    assert committed(database) == [2]


@pytest.mark.postgres
def test_what_the_url_and_pgoptions_ask_of_postgresql_is_kept(pg_url, monkeypatch):
    """The gateway's own timeouts go under what the URL or libpq's environment says."""
    from gateway.database import make_engine

    monkeypatch.setenv("PGOPTIONS", "-c application_name=from-pgoptions")
    for autocommit in (False, True):
        engine = make_engine(pg_url, pool_size=1, autocommit=autocommit)
        with engine.connect() as connection:
            assert connection.scalar(text("SHOW application_name")) == "from-pgoptions"
            lock = connection.scalar(text("SHOW lock_timeout"))
            assert lock == ("30s" if autocommit else "0"), lock
        engine.dispose()
    monkeypatch.delenv("PGOPTIONS")
    url = f"{pg_url}?options=-c%20lock_timeout%3D5s&connect_timeout=33"
    engine = make_engine(url, pool_size=1, autocommit=True)
    with engine.connect() as connection:
        assert connection.scalar(text("SHOW lock_timeout")) == "5s"
        parameters = connection.connection.driver_connection.info.get_parameters()
        assert parameters["connect_timeout"] == "33"
        assert (parameters["keepalives"], parameters["keepalives_idle"],
                parameters["tcp_user_timeout"]) == ("1", "30", "60000")
    engine.dispose()
