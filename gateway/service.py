"""The gateway's long-running processes, assembled from a ``Runtime``.

``serve`` is the embedded deployment (SMTP, in-process workers and the
recovery sweep in one process); ``smtp`` and ``sweeper`` are the separate
processes of a production deployment, next to ``dramatiq workers.main``.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import ssl
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import dramatiq
from sqlalchemy.exc import DBAPIError

from gateway.clock import utcnow
from gateway.database import SCHEMA_ADVICE, schema_state, sqlite_path, unreadable, upgrade
from gateway.errors import ConfigError, HelpdeskError
from gateway.exclusive import Hold, hold
from gateway.handoff import Handoff
from gateway.inbound import accept
from gateway.outages import log_failure
from gateway.outbox import abandoned_waits
from gateway.recovery import Dispatcher, sweep
from gateway.runtime import Runtime, build_runtime
from gateway.settings import Settings
from gateway.smtp_server import STORE_THREADS, InboundHandler, make_controller, tls_context
from workers.actors import declare
from workers.broker import make_broker

log = logging.getLogger(__name__)


def wait_for_signal() -> None:
    """Block until SIGINT or SIGTERM."""
    stop = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: stop.set())
    stop.wait()


class Sweeper:
    """Runs the recovery sweep now and then every ``interval`` seconds, in a thread."""

    def __init__(self, runtime: Runtime, dispatch: Dispatcher, *, startup: bool) -> None:
        self.runtime = runtime
        self.dispatch = dispatch
        self.startup = startup
        self.started = utcnow()
        self.hold: Hold | None = None
        """The embedded gateway's hold on its database, checked each round."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="recovery-sweep", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def once(self, stale_after: timedelta, *, first: bool = False) -> None:
        """One sweep; and rows awaiting the relay's answer whose sender gave up
        waiting ``stale_after`` ago are made unconfirmed, for a person (on the
        first round of a process whose senders are all its own, every wait from
        before it started)."""
        now = utcnow()
        if self.hold is not None:
            try:
                self.hold.check()
            except Exception as error:
                log_failure(log, error, "recovery sweep could not check the database's hold")
        try:
            sweep(self.runtime.database, self.dispatch, now, stale_after)
        except Exception as error:  # the database may be away; the next round tries again
            log_failure(log, error, "recovery sweep failed")
        try:  # needs no broker
            abandoned_waits(self.runtime.database, now,
                            timedelta(seconds=self.runtime.settings.recovery.stale_after),
                            began_before=self.started if first and self.startup else None)
        except Exception as error:
            log_failure(log, error, "recovery sweep failed to look for abandoned waits")

    def first_stale_after(self) -> timedelta:
        """How old unfinished work must be for the first sweep to hand it out.

        A process whose queue lives in its own memory (``startup``) starts with
        nothing queued: everything left unfinished before it started is its to
        hand out, at once. What it took on since is in its queue already, and
        an acknowledgement it is sending holds a claim that must not be
        released under it.
        """
        if self.startup:
            return utcnow() - self.started
        return timedelta(seconds=self.runtime.settings.recovery.stale_after)

    def _run(self) -> None:
        recovery = self.runtime.settings.recovery
        self.once(self.first_stale_after(), first=True)
        while not self._stop.wait(recovery.interval):
            self.once(timedelta(seconds=recovery.stale_after))


def smtp_handler(runtime: Runtime, enqueue: Callable[[int], None]) -> InboundHandler:
    """The SMTP edge's handler: store in ``runtime``'s database, then ``enqueue``
    the id (which must return at once: the edge's event loop calls it)."""
    def store(raw: bytes, sender: str, recipients: list[str]) -> int:
        return accept(runtime.database, raw, source="smtp", sender=sender,
                      recipients=recipients, now=utcnow())

    return InboundHandler(store, enqueue, runtime.settings.support.addresses, utcnow)


def start_smtp(
    runtime: Runtime, dispatch: Dispatcher, tls: ssl.SSLContext | None
) -> Callable[[], None]:
    """Start the SMTP listener, handing stored mail to ``dispatch`` through a
    ``Handoff`` and offering STARTTLS with ``tls`` (``server_tls``); returns its
    stop function."""
    smtp = runtime.settings.smtp
    handoff = Handoff(dispatch.process)
    controller = make_controller(
        smtp_handler(runtime, handoff), host=smtp.host, port=smtp.port,
        max_message_size=smtp.max_message_size, max_connections=smtp.max_connections,
        max_connections_per_client=smtp.max_connections_per_client,
        idle_timeout=smtp.idle_timeout, hostname=smtp.hostname,
        tls=tls,
    )
    handoff.start()
    try:
        controller.start()
    except BaseException as error:
        handoff.stop()
        if isinstance(error, OSError):  # the address is taken, or not this machine's
            raise _cannot_listen(runtime.settings, error) from None
        raise
    log.info("SMTP listening on %s:%s for %s", smtp.host or "every interface", controller.port,
             ", ".join(runtime.settings.support.addresses))

    def stop() -> None:
        controller.stop()
        handoff.stop()

    return stop


def server_tls(settings: Settings) -> ssl.SSLContext | None:
    """The STARTTLS context of the settings' certificate and key, if set; a file that
    is missing or is no PEM certificate and matching key stops start-up with its key.

    Made first, before the database is migrated or a worker started: a
    mistyped path must stop a process that has done nothing yet."""
    smtp = settings.smtp
    for key, path in (("smtp.tls_cert", smtp.tls_cert), ("smtp.tls_key", smtp.tls_key)):
        if path and not Path(path).is_file():
            raise ConfigError(settings.origin(key), key, f"{path!r}: no such file")
    try:
        return tls_context(smtp.tls_cert, smtp.tls_key)
    except (OSError, ValueError) as error:  # ssl.SSLError is an OSError
        reason = getattr(error, "reason", None) or getattr(error, "strerror", None) or error
        raise ConfigError(
            settings.origin("smtp.tls_cert"), "smtp.tls_cert",
            f"{smtp.tls_cert!r} and {smtp.tls_key!r} are no PEM certificate chain and "
            f"its private key ({reason})",
        ) from None


def migrate_if_needed(runtime: Runtime) -> None:
    """Bring an empty or older schema up to date; ``HelpdeskError`` in one line for
    a database that cannot be read, or one a later release has migrated (which
    this release must not touch)."""
    try:
        with runtime.engine.connect() as connection:
            state = schema_state(connection)
    except DBAPIError as error:  # away, or no database at all (a file of another kind)
        raise HelpdeskError(unreadable(error)) from None
    if state == "newer":
        raise HelpdeskError(f"the database {SCHEMA_ADVICE['newer']}")
    if state != "current":
        log.info("bringing the database schema up to date")
        upgrade(runtime.engine)


def _cannot_listen(settings: Settings, error: OSError) -> ConfigError:
    """The one line for a listening address the system refused, blamed on the key
    that is most likely wrong."""
    smtp = settings.smtp
    key = "smtp.port" if error.errno in (errno.EADDRINUSE, errno.EACCES) else "smtp.host"
    reason = error.strerror or str(error)
    return ConfigError(settings.origin(key), key,
                       f"cannot listen on {smtp.host}:{smtp.port}: {reason}")


def _writable_folders(settings: Settings) -> None:
    """The embedded gateway's folders, made if need be; ``ConfigError`` naming the
    key if one cannot be made or written to. Found out later, it would be every
    mail's failure: the database's (nothing stored, 451 for all), or each
    acknowledgement's, retried for good."""
    folders = []
    database = sqlite_path(settings.database_url)
    if database is not None:
        folders.append(("database.url" if settings.database.url else "data_dir", database.parent))
    if not settings.relay.host:
        key = "relay.outbox_dir" if settings.relay.outbox_dir else "data_dir"
        folders.append((key, settings.outbox_dir))
    for key, folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(settings.origin(key), key,
                              f"cannot make {folder}: {error.strerror or error}") from None
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ConfigError(settings.origin(key), key, f"cannot write to {folder}")


class Embedded:
    """The whole gateway in one process: ``helpdesk serve``."""

    def __init__(self, settings: Settings) -> None:
        self.tls = server_tls(settings)
        _writable_folders(settings)  # after what is only read: a bad setting makes nothing
        self.broker = make_broker(settings)
        # Each thread that may hold a connection at once: the workers, the edge's
        # stores, the sweep.
        self.runtime = build_runtime(
            settings, pool_size=settings.broker.worker_threads + STORE_THREADS + 1
        )
        self.dispatch = declare(self.broker, self.runtime)
        self.worker = dramatiq.Worker(
            self.broker, worker_threads=settings.broker.worker_threads, worker_timeout=100
        )
        self.sweeper = Sweeper(self.runtime, self.dispatch, startup=settings.embedded)
        self._stops: list[Callable[[], None]] = []
        """What ``start`` has started, each stopped in turn, the last first."""
        self._closed = False

    def start(self) -> None:
        """Raises ``AlreadyRunning`` when another embedded gateway holds the database:
        its first sweep would take that one's mail as it is being sent. A start
        that fails stops what it had started."""
        try:
            if self.runtime.settings.embedded:
                held = hold(self.runtime.settings.database_url)
                self._stops.append(held.let_go)
                self.sweeper.hold = held
            migrate_if_needed(self.runtime)
            self.worker.start()
            self._stops.append(self.worker.stop)
            self.sweeper.start()
            self._stops.append(self.sweeper.stop)
            self._stops.append(start_smtp(self.runtime, self.dispatch, self.tls))
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop what runs, and close; once is enough, and more does nothing."""
        while self._stops:
            self._stops.pop()()
        if not self._closed:
            self._closed = True
            self.broker.close()
            self.runtime.close()


def run_smtp(settings: Settings) -> None:
    """The SMTP edge alone, enqueueing to the configured broker."""
    tls = server_tls(settings)
    broker = make_broker(settings)
    runtime = build_runtime(settings, pool_size=STORE_THREADS)
    stop = start_smtp(runtime, declare(broker, runtime), tls)
    try:
        wait_for_signal()
    finally:
        stop()
        runtime.close()


def run_sweeper(settings: Settings) -> None:
    """The recovery sweep alone (production: one per installation is enough)."""
    broker = make_broker(settings)
    runtime = build_runtime(settings, pool_size=1)
    sweeper = Sweeper(runtime, declare(broker, runtime), startup=False)
    sweeper.start()
    try:
        wait_for_signal()
    finally:
        sweeper.stop()
        runtime.close()

