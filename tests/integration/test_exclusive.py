"""One embedded gateway per database: a second refuses to start, and takes nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from gateway.errors import HelpdeskError
from gateway.exclusive import ADVISORY_KEY, AlreadyRunning, hold
from gateway.service import Embedded
from tests.conftest import free_port, make_settings
from tests.deployment import ROOT


def assert_kept_off(held_url: str, second_url: str) -> None:
    """While ``held_url`` is held, a hold on ``second_url`` is refused."""
    held = hold(held_url)
    try:
        with pytest.raises(AlreadyRunning):
            hold(second_url)
    finally:
        held.let_go()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_env(request, tmp_path) -> dict[str, str]:
    if request.param == "sqlite":
        return {}
    return {"HELPDESK_DATABASE_URL": request.getfixturevalue("pg_url")}


def test_a_second_embedded_gateway_on_the_same_database_refuses_to_start(tmp_path, database_env):
    # Given an embedded gateway running
    first = Embedded(make_settings(tmp_path, **database_env))
    first.start()
    try:
        # When a second starts on its database (another port, the same data)
        second = Embedded(make_settings(tmp_path, **database_env))
        with pytest.raises(AlreadyRunning, match="another embedded gateway runs on this"):
            second.start()
        # Then it started nothing: no sweep took the first one's work, no port was bound
        assert not second.sweeper._thread.is_alive()
        assert second._stops == []
        second.stop()  # and stopping it again does nothing
    finally:
        first.stop()
    # And once the first has stopped, another may start
    third = Embedded(make_settings(tmp_path, **database_env))
    third.start()
    third.stop()


def test_a_gateway_killed_outright_holds_nothing(tmp_path):
    # Given a process that held a database and was killed
    url = f"sqlite:///{tmp_path}/data/helpdesk.sqlite3"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom gateway.exclusive import hold\n"
         f"hold({url!r}); print('held', flush=True); time.sleep(60)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(AlreadyRunning, match=rf"\(process {holder.pid}\)"):
            hold(url)
    finally:
        holder.kill()
        holder.wait()
    # Then the next start holds it
    hold(url).let_go()


def test_a_link_to_a_held_database_is_the_same_database(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "data" / "helpdesk.sqlite3").touch()
    (tmp_path / "other" / "helpdesk.sqlite3").symlink_to(tmp_path / "data" / "helpdesk.sqlite3")
    assert_kept_off(f"sqlite:///{tmp_path}/data/helpdesk.sqlite3",
                    f"sqlite:///{tmp_path}/other/helpdesk.sqlite3")


def test_a_lock_file_that_cannot_be_opened_is_one_line(tmp_path):
    (tmp_path / "helpdesk.sqlite3.lock").mkdir()  # a folder where the file should be
    with pytest.raises(HelpdeskError, match=r"helpdesk\.sqlite3\.lock: cannot open the file "
                                            r"that keeps a second gateway off"):
        hold(f"sqlite:///{tmp_path}/helpdesk.sqlite3")


def test_a_postgresql_that_cannot_be_reached_is_one_line():
    with pytest.raises(HelpdeskError, match=r"the database is unavailable: "):
        hold(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test")


@pytest.mark.postgres
def test_a_hold_lost_with_its_connection_is_taken_again(pg_url, caplog):
    # Given a gateway's hold, whose connection the server ends (a restart, say)
    held = hold(pg_url)
    admin = create_engine(pg_url, poolclass=NullPool)
    try:
        with admin.connect() as connection:
            ended = connection.scalar(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_locks "
                "WHERE locktype = 'advisory' AND classid = :key AND objsubid = 2"),
                {"key": ADVISORY_KEY})
        assert ended == 1
        # When the sweep checks it
        held.check()
        # Then it is held again: a second gateway is still kept off
        with pytest.raises(AlreadyRunning):
            hold(pg_url)
        assert "was lost; taking the database again" in caplog.text
    finally:
        held.let_go()
        admin.dispose()


@pytest.mark.postgres
def test_gateways_in_schemas_of_their_own_do_not_keep_each_other_off(pg_url):
    admin = create_engine(pg_url, poolclass=NullPool)
    with admin.begin() as connection:
        connection.execute(text("CREATE SCHEMA helpdesk_a"))
        connection.execute(text("CREATE SCHEMA helpdesk_b"))
    admin.dispose()
    first = hold(f"{pg_url}?options=-csearch_path%3Dhelpdesk_a")
    second = hold(f"{pg_url}?options=-csearch_path%3Dhelpdesk_b")
    try:
        with pytest.raises(AlreadyRunning):
            hold(f"{pg_url}?options=-csearch_path%3Dhelpdesk_a")
    finally:
        first.let_go()
        second.let_go()


@pytest.mark.postgres
def test_a_search_path_naming_no_schema_is_held_all_the_same(pg_url):
    url = f"{pg_url}?options=-csearch_path%3Dhelpdesk_not_there"
    assert_kept_off(url, url)
