"""Which failures are a service being away (one line) and which are not (a traceback)."""

from __future__ import annotations

import sqlite3

import pytest
import redis.exceptions
from dramatiq.errors import ConnectionClosed
from sqlalchemy import create_engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

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
    (PoolTimeout("QueuePool limit of size 5 overflow 10 reached, connection timed out"),
     "the database is unavailable (no connection free in the pool (QueuePool limit of size 5 "
     "overflow 10 reached, connection timed out))"),
    (redis.exceptions.ReadOnlyError("You can't write against a read only replica."),
     "the broker is unavailable (You can't write against a read only replica.)"),
    (redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),
     "the broker is unavailable (command not allowed when used memory > 'maxmemory'.)"),
    (redis.exceptions.ResponseError("MISCONF Redis is configured to save RDB snapshots"),
     "the broker is unavailable (MISCONF Redis is configured to save RDB snapshots)"),
])
def test_a_service_away_is_said_in_one_line(error, said):
    assert away(error) == said


@pytest.mark.parametrize("error", [
    IntegrityError("INSERT", None, Exception("duplicate key")),
    redis.exceptions.ResponseError("WRONGTYPE Operation against a key"),
    redis.exceptions.AuthenticationError("WRONGPASS invalid username-password pair"),
    ValueError("a defect"),
])
def test_anything_else_is_not_an_outage(error):
    assert away(error) is None


def sqlite_error(path, statement: str) -> OperationalError:
    """The error SQLAlchemy raises for ``statement`` on a new database at ``path``
    that another connection holds in a write transaction."""
    holder = sqlite3.connect(path)
    holder.execute("CREATE TABLE t (x)")
    holder.commit()
    holder.execute("BEGIN IMMEDIATE")
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0})
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(statement)
    except OperationalError as error:
        return error
    finally:
        engine.dispose()
        holder.close()
    raise AssertionError(f"{statement} did not fail")


def test_sqlite_says_its_defects_and_its_outages_apart(tmp_path):
    assert away(sqlite_error(tmp_path / "a.sqlite3", "INSERT INTO t VALUES (1)")) == (
        "the database is unavailable (database is locked)")
    assert away(sqlite_error(tmp_path / "b.sqlite3", "SELECT * FROM no_such_table")) is None
