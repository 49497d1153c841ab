"""The parts of the gateway run apart start only on a database of this release's
schema; ``helpdesk serve`` alone migrates by itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from gateway.cli import main
from gateway.database import _alembic_config
from gateway.runtime import Runtime
from tests.conftest import PG_ADMIN_URL, REDIS_URL, free_port

SAID = {
    "empty": "holds no gateway yet: helpdesk db upgrade (or helpdesk serve) makes it",
    "older": "holds an older schema than this release's: helpdesk db upgrade",
    "newer": "holds a schema from a later release than this one: run that release",
}


def leave_schema(runtime: Runtime, state: str) -> None:
    """Put ``runtime``'s migrated database in ``state``."""
    if state == "empty":
        command.downgrade(_alembic_config(runtime.engine), "base")
        return
    with runtime.database.transaction() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = :v"),
                           {"v": "0002" if state == "older" else "0099"})


@pytest.mark.parametrize("state", ["empty", "older", "newer"])
def test_a_part_run_apart_refuses_a_database_of_another_schema_in_one_line(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, state: str
):
    # Given a database that holds no schema of this release
    leave_schema(runtime, state)
    runtime.database.dispose()
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("HELPDESK_")}
    env |= {"HELPDESK_DATABASE_URL": runtime.settings.database_url,
            "HELPDESK_BROKER_URL": REDIS_URL, "HELPDESK_SMTP_PORT": str(free_port())}
    for part in ("smtp", "sweeper"):
        # When the part is started (a process: one that started would run until stopped)
        done = subprocess.run([sys.executable, "-m", "gateway", part], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=30)
        # Then it stops at once, saying why in one line
        assert done.returncode == 1, (part, done.stderr)
        [line] = done.stderr.splitlines()
        assert line.startswith("Error: the database at ") and line.endswith(SAID[state]), line
    # And the workers are refused before Dramatiq is started
    monkeypatch.chdir(tmp_path)
    started: list[tuple[object, ...]] = []
    monkeypatch.setattr(os, "execv", lambda *args: started.append(args))
    result = CliRunner().invoke(main, ["worker"], env={"HELPDESK_CONFIG": None, **env})
    assert result.exit_code == 1, result.output
    assert result.output.rstrip().endswith(SAID[state])
    assert started == []


def start_workers(url: str, tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> tuple[Result, list[tuple[object, ...]]]:
    """``helpdesk worker`` on the database at ``url``, and what it would have started
    (Dramatiq's ``execv``, kept from happening)."""
    env = {"HELPDESK_CONFIG": None, "HELPDESK_DATABASE_URL": url, "HELPDESK_BROKER_URL": REDIS_URL}
    monkeypatch.chdir(tmp_path)
    started: list[tuple[object, ...]] = []
    monkeypatch.setattr(os, "execv", lambda *args: started.append(args))
    return CliRunner().invoke(main, ["worker"], env=env), started


@pytest.mark.parametrize("where", ["port", "socket", "name"])
def test_a_part_starts_while_its_database_is_away(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
):
    # Given a database that does not answer (restarting, say): nothing on its port, no
    # socket made yet, or a name that does not resolve (yet)
    url = {
        "port": f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test",
        "socket": f"postgresql+psycopg://postgres@/test?host={tmp_path}/no-server-yet",
        "name": "postgresql+psycopg://postgres@database.invalid/test",
    }[where]
    # When the workers are started
    result, started = start_workers(url, tmp_path, monkeypatch)
    # Then they start all the same, to take mail once it is back (the edge says 451 meanwhile)
    assert result.exit_code == 0, result.output
    assert len(started) == 1


@pytest.mark.postgres
def test_a_part_refuses_a_database_that_is_not_there(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    url = make_url(pg_url).set(database="helpdesk_no_such_database")
    result, started = start_workers(url.render_as_string(hide_password=False), tmp_path,
                                    monkeypatch)
    assert result.exit_code == 1, result.output
    assert 'database "helpdesk_no_such_database" does not exist' in result.output
    assert started == []


@pytest.mark.postgres
def test_a_part_refuses_a_login_the_database_will_never_take(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    role = f"helpdesk_nologin_{os.getpid()}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE ROLE "{role}" NOLOGIN'))
    try:
        url = make_url(pg_url).set(username=role)
        result, started = start_workers(url.render_as_string(hide_password=False), tmp_path,
                                        monkeypatch)
        assert result.exit_code == 1, result.output
        assert "is not permitted to log in" in result.output
        assert started == []
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP ROLE "{role}"'))
        admin.dispose()
