"""Fixtures for tests that run the gateway's core against each database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.database import upgrade
from gateway.runtime import Runtime, build_runtime
from tests.conftest import make_settings


@pytest.fixture(params=["sqlite", "postgresql"])
def runtime(request, tmp_path) -> Iterator[Runtime]:
    """A runtime (no servers started) on an empty, migrated database of each kind."""
    env = {}
    if request.param == "postgresql":
        env["HELPDESK_DATABASE_URL"] = request.getfixturevalue("pg_url")
    runtime = build_runtime(make_settings(tmp_path, **env))
    upgrade(runtime.engine)
    yield runtime
    runtime.close()
