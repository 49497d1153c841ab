"""The ``helpdesk`` command.

Every command reads the same settings (``--config``, ``HELPDESK_*``); any
configuration error is one line on stderr and exit status 2, never a
traceback.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from gateway.cli_support import ConfigProblem, command_settings
from gateway.errors import ConfigError, HelpdeskError, first_line
from gateway.policy.commands import policy
from gateway.policy.table import plural
from gateway.settings import CONFIG_ENV, ENV_PREFIX

if TYPE_CHECKING:
    from gateway.database import Database
    from gateway.settings import Settings


def _guarded(action: Any, *args: Any) -> None:
    try:
        action(*args)
    except ConfigError as error:
        raise ConfigProblem(str(error)) from None


QUIET_LOGGERS = (
    # aiosmtpd logs every SMTP command line of every session at INFO (with the
    # senders' addresses): noise that drowned the gateway's own lines and cost the
    # SMTP edge a sixth of its CPU.
    "mail.log",
    # Alembic announces each of its autogenerate plugins at INFO whenever it is
    # loaded: seven lines at every start, before the gateway has said anything.
    "alembic.runtime.plugins",
)


@click.group()
@click.option(
    "--config", "config", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Settings file (default: $HELPDESK_CONFIG, else ./helpdesk.toml if present).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log debugging detail.")
@click.pass_context
def main(ctx: click.Context, config: Path | None, verbose: bool) -> None:
    """Email helpdesk gateway: mail in, numbered cases, a support policy kept."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Their warnings and errors still show; -v shows all.
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.WARNING)
    ctx.ensure_object(dict)
    ctx.obj["config"] = config


@main.command()
@click.pass_context
def serve(ctx: click.Context) -> None:
    """Run the whole gateway in this process (SMTP, workers, recovery)."""
    from gateway.service import Embedded, wait_for_signal

    settings = command_settings(ctx)
    try:
        gateway = Embedded(settings)
        gateway.start()
    except HelpdeskError as error:  # a setting, or another gateway on the database
        raise ConfigProblem(str(error)) from None
    mode = "in-process workers" if settings.embedded else f"broker {settings.broker.url}"
    sink = settings.relay.host or f"files in {settings.outbox_dir}"
    click.echo(f"helpdesk gateway running ({mode}); outgoing mail: {sink}. Ctrl-C stops it.")
    try:
        wait_for_signal()
    finally:
        gateway.stop()


def _production_settings(ctx: click.Context, part: str) -> Settings:
    """The settings for one part of the gateway run apart, which needs a broker
    to reach the others: without one, what it queued would stay in its own
    process, where nothing reads it (stored mail held back from the workers,
    and the sweep's work with it)."""
    settings = command_settings(ctx)
    if settings.embedded:
        raise ConfigProblem(
            f"broker.url is empty: `helpdesk serve` runs {part} inside itself; "
            f"set HELPDESK_BROKER_URL to run {part} apart"
        )
    return settings


_PASSING_OUTAGE = (
    "connection refused", "no such file or directory", "timeout expired", "timed out",
    "could not translate host name", "failed to resolve host", "name resolution",
    "no route to host", "network is unreachable", "connection reset",
    "closed the connection unexpectedly", "starting up", "shutting down",
    "not yet accepting connections", "in recovery mode", "too many clients",
    "too many connections for", "remaining connection slots", "query_wait_timeout",
    "cannot connect to server", "database is locked",
)
"""What the database (libpq, psycopg, PgBouncer, the network, SQLite) says of an
outage that passes: it is not there yet (a socket not made, a name not yet
resolved), restarting, or full. libpq gives no SQLSTATE for a refused
connection, only these words; anything else it says when it refuses one (a
login refused, a database or a privilege not there, SSL not offered) waiting
will not cure."""


def _on_this_releases_schema(ctx: click.Context) -> None:
    """Stop a part run apart, in one line and exit status 1, when its database
    cannot be read or holds no schema of this release (none yet, older, or a
    later release's), as ``helpdesk status`` does.

    Only ``helpdesk serve`` migrates by itself; a part run apart leaves that to
    ``helpdesk db upgrade``, once per release, and would otherwise start and
    fail at everything it does: the SMTP edge answering 451 to every mail,
    for good, and the sweep logging the database's errors each round.

    A database that is only away now (restarting, unreachable) is no reason
    not to start: the edge answers 451 meanwhile and the others try again,
    as they do when it goes away later; the check is then left undone.
    """
    from gateway.database import unavailable

    try:
        with _database(ctx):
            pass
    except click.ClickException as refusal:
        cause = refusal.__context__  # what ``_database`` said in one line
        away = unavailable(cause) if cause is not None else None
        # Only an outage that passes lets the part start: refused for good (a login,
        # a database not there), it would answer 451 to every mail, for good. In
        # doubt it stops, and a service manager's restart tries again.
        if away is None or not any(words in away.lower() for words in _PASSING_OUTAGE):
            raise
        logging.getLogger(__name__).warning(
            "the database is away (%s): starting all the same, without checking its "
            "schema", away)


@main.command()
@click.pass_context
def smtp(ctx: click.Context) -> None:
    """Run only the inbound SMTP server (production; needs a broker)."""
    from gateway.service import run_smtp

    settings = _production_settings(ctx, "the SMTP server")
    _on_this_releases_schema(ctx)
    _guarded(run_smtp, settings)


@main.command()
@click.pass_context
def sweeper(ctx: click.Context) -> None:
    """Run only the recovery sweep (production; needs a broker)."""
    from gateway.service import run_sweeper

    settings = _production_settings(ctx, "the recovery sweep")
    _on_this_releases_schema(ctx)
    _guarded(run_sweeper, settings)


@main.command()
@click.option("--processes", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--threads", type=click.IntRange(1, 64), default=8, show_default=True)
@click.pass_context
def worker(ctx: click.Context, processes: int, threads: int) -> None:
    """Run Dramatiq worker processes for the configured broker (production)."""
    from gateway.runtime import load_content

    # Each process Dramatiq starts loads them, and would stop with a traceback
    # (and Dramatiq with it); here it is one line, before any has started.
    _guarded(load_content, _production_settings(ctx, "the workers"))
    _on_this_releases_schema(ctx)
    if ctx.obj["config"] is not None:
        os.environ[CONFIG_ENV] = str(Path(ctx.obj["config"]).resolve())
    os.environ[f"{ENV_PREFIX}BROKER_WORKER_THREADS"] = str(threads)  # their pools' size
    argv = [sys.executable, "-m", "dramatiq", "workers.main", "--processes", str(processes),
            "--threads", str(threads), "--queues", "inbound", "outbox"]
    os.execv(sys.executable, argv)


@main.group()
def db() -> None:
    """Database schema."""


@db.command()
@click.pass_context
def upgrade(ctx: click.Context) -> None:
    """Migrate the database to the newest schema."""
    from alembic.util.exc import CommandError
    from sqlalchemy.exc import DBAPIError

    from gateway.database import SCHEMA_ADVICE, make_engine, unavailable, unreadable
    from gateway.database import upgrade as run_upgrade

    url = command_settings(ctx).database_url
    try:
        engine = make_engine(url)
    except OSError as error:  # the folder of an SQLite file
        raise click.ClickException(f"cannot make the database's folder: {error}") from None
    try:
        run_upgrade(engine)
    except CommandError as error:
        if "Can't locate revision" not in str(error):
            raise
        raise click.ClickException(
            f"the database {SCHEMA_ADVICE['newer']} ({error})") from None
    except DBAPIError as error:
        if unavailable(error) is not None:
            raise click.ClickException(unreadable(error)) from None
        raise click.ClickException(f"the database refused the migration: "
                                   f"{first_line(error)}") from None
    finally:
        engine.dispose()
    click.echo("database schema is up to date")


ROW_ID = click.IntRange(1, 2**31 - 1)
"""A row's id as the database can hold it (an integer column on PostgreSQL)."""


@contextmanager
def _database(ctx: click.Context) -> Iterator[Database]:
    """The configured database for one short command, with one connection.

    A database that cannot be reached, or that holds no gateway of this
    release (an SQLite file not there, a schema not migrated, or migrated by
    a later release), is one line and exit status 1, not a traceback:
    ``status`` runs under monitors, which show what it says. Nothing is
    created or locked for the asking.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DBAPIError

    from gateway.database import (
        SCHEMA_ADVICE,
        Database,
        schema_state,
        sqlite_path,
        unavailable,
        unreadable,
    )

    url = command_settings(ctx).database_url
    parsed = make_url(url)
    path = sqlite_path(url)
    if path is not None and not path.exists():
        raise click.ClickException(
            f"no database at {path}: helpdesk serve (or helpdesk db upgrade) makes it")
    if not logging.getLogger().isEnabledFor(logging.DEBUG):  # unless --verbose
        # Alembic says at INFO which dialect it found, each time it looks.
        logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
    database = Database(url, pool_size=1)
    try:
        try:
            with database.reading() as connection:
                state = schema_state(connection)
        except DBAPIError as error:  # unreachable, or no database (a file of another kind)
            raise click.ClickException(unreadable(error)) from None
        if state != "current":
            raise click.ClickException(
                f"the database at {parsed.render_as_string(hide_password=True)} "
                f"{SCHEMA_ADVICE[state]}")
        yield database
    except Exception as error:
        if unavailable(error) is None:
            raise
        raise click.ClickException(unreadable(error)) from None
    finally:
        database.dispose()


def _each_given_back(
    ctx: click.Context,
    ids: tuple[int, ...],
    give_back: Callable[[Database, Sequence[int], datetime], list[int]],
    done: str,
    missed: str,
) -> None:
    """Give ``ids`` back to the gateway with ``give_back`` (which returns those it
    took) and say so of each; those it did not take are named, and the command
    fails, so that a script sees a mistyped id."""
    from gateway.clock import utcnow

    with _database(ctx) as database:
        taken = give_back(database, ids, utcnow())
    for item_id in taken:
        click.echo(f"{item_id} {done}")
    left = sorted(set(ids) - set(taken))
    if left:
        raise click.ClickException(f"{missed}: " + ", ".join(map(str, left)))


def _listed(shown: int, total: int, none: str) -> None:
    """Close a listing: what was there to list, and what was left out."""
    if not total:
        click.echo(none)
    elif total > shown:
        click.echo(f"… and {total - shown} more (--limit)")


def _utc(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC"


@main.group()
def quarantine() -> None:
    """Mail set aside for a person (it could not be handled)."""


@quarantine.command("list")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@click.pass_context
def quarantine_list(ctx: click.Context, limit: int) -> None:
    """The quarantined messages, oldest first, each with its reason."""
    from gateway.quarantine import quarantined

    with _database(ctx) as database:
        found, total = quarantined(database, limit=limit)
    for item in found:
        click.echo(f"{item.id}\t{_utc(item.received_at)}\t"
                   f"{item.envelope_sender or '<>'}\t{item.message_id or '-'}\t{item.reason}")
    _listed(len(found), total, "nothing is quarantined")


@quarantine.command("release")
@click.argument("ids", nargs=-1, type=ROW_ID, required=True)
@click.pass_context
def quarantine_release(ctx: click.Context, ids: tuple[int, ...]) -> None:
    """Give messages back to the pipeline, once what stopped them is mended.

    The recovery sweep hands them out within recovery.stale_after and
    recovery.interval (90 seconds by default)."""
    from gateway.quarantine import release

    _each_given_back(ctx, ids, release, "released", "not quarantined (or no such message)")


@quarantine.command("dismiss")
@click.argument("ids", nargs=-1, type=ROW_ID, required=True)
@click.pass_context
def quarantine_dismiss(ctx: click.Context, ids: tuple[int, ...]) -> None:
    """Mark messages as dealt with by hand: kept, with their reason, and no
    longer counted by helpdesk status."""
    from gateway.quarantine import dismiss

    _each_given_back(ctx, ids, dismiss, "dismissed", "not quarantined (or no such message)")


@main.group()
def outbox() -> None:
    """Outgoing mail that needs a person: failed for good (refused by the relay,
    or out of attempts), or unconfirmed (handed to the relay whole, and its
    answer never came or was never recorded)."""


@outbox.command("failed")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@click.pass_context
def outbox_failed(ctx: click.Context, limit: int) -> None:
    """The mails that failed or are unconfirmed, oldest first, each with the
    relay's reason and its Message-ID (to look for in the relay's log)."""
    from gateway.failed_mail import failed_mail

    with _database(ctx) as database:
        found, total = failed_mail(database, limit=limit)
    for item in found:
        reason = " ".join(item.reason.split())  # a multi-line reply on one line
        if item.handed_over_at is not None:
            reason += f" (its sender began at {_utc(item.handed_over_at)})"
        click.echo(f"{item.id}\t{item.status}\t{_utc(item.created_at)}\t"
                   f"{item.case_number or '-'}\t{item.kind}\t{', '.join(item.recipients)}\t"
                   f"<{item.message_id}>\t{plural(item.attempts, 'attempt')}\t{reason}")
    _listed(len(found), total, "no outgoing mail has failed")


@outbox.command("retry")
@click.argument("ids", nargs=-1, type=ROW_ID, required=True)
@click.option("--unconfirmed", is_flag=True,
              help="Also send unconfirmed mails again: only once the relay's log shows "
                   "that it did not take them, or they may arrive twice.")
@click.pass_context
def outbox_retry(ctx: click.Context, ids: tuple[int, ...], unconfirmed: bool) -> None:
    """Send failed mails again, once what stopped them is mended (the relay's
    login, the relay itself).

    The recovery sweep hands them out within recovery.stale_after and
    recovery.interval (90 seconds by default), with relay.max_attempts
    attempts again."""
    from gateway.failed_mail import retry

    def again(database: Database, given: Sequence[int], now: datetime) -> list[int]:
        return retry(database, given, now, unconfirmed=unconfirmed)

    _each_given_back(ctx, ids, again, "queued again",
                     "not failed or unconfirmed (or no such mail)" if unconfirmed else
                     "not failed (or no such mail; an unconfirmed one needs --unconfirmed)")


@outbox.command("dismiss")
@click.argument("ids", nargs=-1, type=ROW_ID, required=True)
@click.pass_context
def outbox_dismiss(ctx: click.Context, ids: tuple[int, ...]) -> None:
    """Mark failed or unconfirmed mails as dealt with (the relay's log shows an
    unconfirmed one delivered, say): kept, with their reason, not sent, and no
    longer counted by helpdesk status."""
    from gateway.failed_mail import dismiss

    _each_given_back(ctx, ids, dismiss, "dismissed", "not failed or unconfirmed (or no such mail)")


class FiniteRange(click.FloatRange):
    """A ``FloatRange`` that also refuses NaN, which compares as inside any range."""

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if math.isnan(number):
            self.fail(f"{value} is not a number.", param, ctx)
        return number


MAX_WAIT = FiniteRange(0, 30 * 24 * 3600)
"""Seconds mail may wait before ``status`` calls for a person: at most 30 days,
longer than any monitor would wait and well inside what ``timedelta`` holds
(an infinite or huge value stopped the command with a traceback)."""


@main.command()
@click.option("--max-wait", type=MAX_WAIT, default=600.0, show_default=True,
              help="Seconds mail may wait (to be processed, or sent) before a person "
                   "should look.")
@click.pass_context
def status(ctx: click.Context, max_wait: float) -> None:
    """What waits, and what needs a person: exits 1 if anything does (or the
    database cannot be read), for a monitor or a health check."""
    from datetime import timedelta

    from gateway.clock import utcnow
    from gateway.status import backlog, needs_a_person, summary

    now = utcnow()
    with _database(ctx) as database:
        found = backlog(database, now)
    for line in summary(found, now):
        click.echo(line)
    problems = needs_a_person(found, now, timedelta(seconds=max_wait))
    if not problems:
        click.echo("nothing needs a person")
        return
    click.echo("needs a person:")
    for problem in problems:
        click.echo(f"  - {problem}")
    ctx.exit(1)


main.add_command(policy)
