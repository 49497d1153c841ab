"""Fixtures for tests that run the gateway's core against each database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

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
