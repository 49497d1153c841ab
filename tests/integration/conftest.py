"""Fixtures for tests that run the gateway's core against each database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gateway.cli import main
from gateway.database import upgrade
from gateway.runtime import Runtime, build_runtime
from tests.conftest import make_settings


def runtime_for(request: pytest.FixtureRequest, tmp_path: Path, **env: str) -> Runtime:
    """A runtime (no servers started) on an empty, migrated database of the kind
    ``request.param`` names, with more settings from ``env``."""
    if request.param == "postgresql":
        env["HELPDESK_DATABASE_URL"] = request.getfixturevalue("pg_url")
    runtime = build_runtime(make_settings(tmp_path, **env))
    upgrade(runtime.engine)
    return runtime


@pytest.fixture(params=["sqlite", "postgresql"])
def runtime(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    """A runtime on each database in turn."""
    running = runtime_for(request, tmp_path)
    yield running
    running.close()


@pytest.fixture(params=["postgresql"])
def pg_runtime(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    """A runtime on PostgreSQL only: for what SQLite never does (refuse data, lock)."""
    running = runtime_for(request, tmp_path)
    yield running
    running.close()


Command = Callable[..., Result]


def helpdesk_on(runtime: Runtime, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Command:
    """The ``helpdesk`` command, run in this process on ``runtime``'s database alone
    (no settings file: it runs in ``tmp_path``, where there is none)."""
    monkeypatch.chdir(tmp_path)
    env = {"HELPDESK_CONFIG": None, "HELPDESK_DATABASE_URL": runtime.settings.database_url}

    def helpdesk(*args: str) -> Result:
        return CliRunner().invoke(main, list(args), env=env)

    return helpdesk
