"""One embedded gateway per database: a second refuses to start, and takes nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gateway.exclusive import AlreadyRunning, hold
from gateway.service import Embedded
from tests.conftest import make_settings
from tests.deployment import ROOT


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
        assert second._stop_smtp is None
        second.runtime.close()
        second.broker.close()
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
    hold(url)()
