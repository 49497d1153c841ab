"""Where an SQLite database URL keeps its file (``gateway.database.sqlite_path``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.database import sqlite_path


@pytest.mark.parametrize(("url", "path"), [
    ("sqlite:///data/helpdesk.sqlite3", Path("data/helpdesk.sqlite3")),
    ("sqlite:////var/lib/helpdesk/helpdesk.sqlite3", Path("/var/lib/helpdesk/helpdesk.sqlite3")),
    ("sqlite:///file:/var/lib/h%20d/x.db?mode=ro&uri=true", Path("/var/lib/h d/x.db")),
    ("sqlite:///file:x.db?uri=true", Path("x.db")),
    ("sqlite:///file:x.db?uri=false", Path("file:x.db")),  # a file named so, as SQLite reads it
    ("sqlite:///file:mem?mode=memory&uri=true", None),
    ("sqlite://", None),
    ("sqlite:///:memory:", None),
    ("postgresql+psycopg://postgres@127.0.0.1/test", None),
])
def test_the_file_of_an_sqlite_url(url, path):
    assert sqlite_path(url) == path
