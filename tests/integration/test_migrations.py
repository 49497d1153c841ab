"""The migrations build exactly the schema the models describe, on either database,
and carry rows already there across."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, text

from gateway.database import _alembic_config, make_engine, upgrade
from gateway.models import Base


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/m.sqlite3"
    else:
        url = request.getfixturevalue("pg_url")
    made = make_engine(url)
    yield made
    made.dispose()


def test_upgraded_schema_is_the_models_schema(engine):
    upgrade(engine)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_outbox_rows_from_before_get_their_recipient_key(engine):
    # Given a database at the first revision with an acknowledgement queued today
    command.upgrade(_alembic_config(engine), "0001")
    now = datetime.now(UTC).replace(tzinfo=None)
    with engine.begin() as connection:
        connection.execute(text(
            "insert into outbox (key, kind, sender, recipients, message_id, raw, status, "
            "attempts, created_at, next_attempt_at) values ('ack:1', 'acknowledgement', "
            "'support@example.com', '[\"Alice@Customer.example\"]', 'm@x', :raw, 'sent', 1, "
            ":now, :now)"
        ), {"raw": b"x", "now": now})
    # When it is brought up to date
    upgrade(engine)
    # Then the row counts for its recipient's automatic mail
    with engine.connect() as connection:
        key = connection.scalar(text("select recipient_key from outbox"))
    assert key == "alice@customer.example"


def test_serve_on_a_later_releases_schema_or_no_database_stops_in_one_line(tmp_path):
    from gateway.errors import HelpdeskError
    from gateway.service import Embedded
    from tests.conftest import make_settings

    # Given a database a later release has migrated
    settings = make_settings(tmp_path)
    first = Embedded(settings)
    first.start()
    first.stop()
    with first.runtime.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    first.runtime.engine.dispose()
    # When the gateway starts on it, it touches nothing and says why
    with pytest.raises(HelpdeskError, match=r"^the database holds a schema from a later "
                                            r"release than this one: run that release$"):
        Embedded(settings).start()
    # And so on a file that is no database at all
    database = tmp_path / "data" / "helpdesk.sqlite3"
    database.write_bytes(b"not a database, but a file of notes\n" * 100)
    with pytest.raises(HelpdeskError, match=r"^the database cannot be read: file is not a "):
        Embedded(settings).start()
