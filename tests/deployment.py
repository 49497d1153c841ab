"""Gateways for tests as real OS processes that a test may kill: the production
deployment (separate SMTP, worker and sweeper processes on PostgreSQL and
Redis) and the embedded one (``helpdesk serve`` on SQLite); and a burst of
mail sent to them as a mail server would, checked for exactly once."""

from __future__ import annotations

import contextlib
import os
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from sqlalchemy import func, select

from gateway.database import Database, make_engine, upgrade
from gateway.models import Case, InboundMessage, ThreadEntry
from tests.conftest import Sink, mail

ROOT = Path(__file__).resolve().parents[1]

OWNER = "HELPDESK_TEST_RUN"
"""Set in a gateway process's environment: the pid of the test run that started it."""


def reap_orphans() -> list[int]:
    """SIGKILL the gateway processes of test runs that are gone; returns their pids.

    A run killed before its fixtures could stop its processes leaves them
    running (each is a session of its own, and Dramatiq's forked workers live
    on): they keep consuming the shared Redis test database, taking the next
    run's messages to a database that no longer exists. A process whose run is
    alive (another run on the machine) is left alone.
    """
    reaped = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            variables = environ.read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        owner = next((v.partition(b"=")[2] for v in variables
                      if v.startswith(OWNER.encode() + b"=")), None)
        if owner is None or not owner.isdigit() or _alive(int(owner)):
            continue
        pid = int(environ.parent.name)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            reaped.append(pid)
    return reaped


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's: alive
        return True
    return True


class GatewayProcesses:
    """The processes of one gateway, with one settings file; each can be killed."""

    def __init__(self, tmp_path: Path, settings: str, smtp_port: int,
                 stale_after: float = 3.0) -> None:
        self.tmp_path = tmp_path
        self.smtp_port = smtp_port
        self.stale_after = stale_after
        self.config = tmp_path / "gateway.toml"
        self.config.write_text(
            f'data_dir = "{tmp_path / "data"}"\n'
            'policy = "lumenvox"\n'
            f'{settings}'
            f'[smtp]\nhost = "127.0.0.1"\nport = {smtp_port}\n'
            '[support]\naddresses = ["support@example.com"]\n'
            f'[recovery]\ninterval = 1.0\nstale_after = {stale_after}\n'
        )
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def _spawn(self, name: str, *args: str) -> None:
        env = {**os.environ, "HELPDESK_CONFIG": str(self.config), "PYTHONPATH": str(ROOT),
               OWNER: str(os.getpid())}
        log = (self.tmp_path / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            [sys.executable, *args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self, name: str) -> None:
        """SIGKILL the process and everything it started (Dramatiq forks workers)."""
        process = self.processes.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def stop(self) -> None:
        for name in list(self.processes):
            process = self.processes[name]
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                self.kill(name)
            self.processes.pop(name, None)

    def wait_for_smtp(self, name: str = "smtp", timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.smtp_port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"SMTP did not start; see {self.tmp_path / f'{name}.log'}")

    def log(self, name: str) -> str:
        return (self.tmp_path / f"{name}.log").read_text(errors="replace")

    def client(self) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=30)


class Deployment(GatewayProcesses):
    """The production deployment: ``start_smtp``, ``start_worker``, ``start_sweeper``."""

    def __init__(self, tmp_path: Path, *, database_url: str, broker_url: str,
                 relay_host: str, relay_port: int, smtp_port: int,
                 worker_processes: int = 1, worker_threads: int = 8,
                 stale_after: float = 3.0) -> None:
        super().__init__(tmp_path, (
            f'[database]\nurl = "{database_url}"\n'
            f'[broker]\nurl = "{broker_url}"\n'
            f'[relay]\nhost = "{relay_host}"\nport = {relay_port}\n'
        ), smtp_port, stale_after)
        self.worker_processes = worker_processes
        self.worker_threads = worker_threads
        engine = make_engine(database_url)
        upgrade(engine)
        engine.dispose()

    def start_smtp(self) -> None:
        self._spawn("smtp", "-m", "gateway", "smtp")
        self.wait_for_smtp()

    def start_worker(self) -> None:
        self._spawn("worker", "-m", "dramatiq", "workers.main",
                    "--processes", str(self.worker_processes),
                    "--threads", str(self.worker_threads), "--queues", "inbound", "outbox")

    def start_sweeper(self) -> None:
        self._spawn("sweeper", "-m", "gateway", "sweeper")

    def start(self) -> None:
        self.start_worker()
        self.start_sweeper()
        self.start_smtp()


class EmbeddedGateway(GatewayProcesses):
    """The embedded deployment as its README command runs it: ``helpdesk serve``, one
    process (SMTP, in-process workers, sweep) on SQLite in its data folder."""

    def __init__(self, tmp_path: Path, *, relay_host: str, relay_port: int,
                 smtp_port: int) -> None:
        super().__init__(
            tmp_path, f'[relay]\nhost = "{relay_host}"\nport = {relay_port}\n', smtp_port
        )
        self.database_url = f"sqlite:///{tmp_path / 'data' / 'helpdesk.sqlite3'}"

    def start(self) -> None:
        self._spawn("serve", "-m", "gateway", "serve")
        self.wait_for_smtp("serve")


class Burst:
    """Sends ``total`` mails over ``connections`` SMTP connections, retrying each mail
    until it gets a 250, as a sending mail server would."""

    def __init__(self, deployment: GatewayProcesses, total: int, connections: int = 4) -> None:
        self.deployment = deployment
        self.ids = [f"burst-{n}-{uuid.uuid4().hex[:8]}" for n in range(total)]
        self.accepted: set[str] = set()
        self.refused_attempts = 0
        self.lock = threading.Lock()
        self.sent = 0
        shares = [self.ids[i::connections] for i in range(connections)]
        self.threads = [threading.Thread(target=self._run, args=(s,)) for s in shares]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self, timeout: float = 180) -> None:
        for thread in self.threads:
            thread.join(timeout)

    def _run(self, ids: list[str]) -> None:
        smtp: smtplib.SMTP | None = None
        for message_id in ids:
            # One customer each: a burst from one address would meet the reply limit.
            customer = f"{message_id}@customer.example"
            raw = mail(f"[P2] burst {message_id}", message_id=message_id, sender=customer)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    if smtp is None:
                        smtp = self.deployment.client()
                    smtp.sendmail(customer, ["support@example.com"], raw)
                    with self.lock:
                        self.accepted.add(message_id)
                        self.sent += 1
                    break
                except (OSError, smtplib.SMTPException):
                    with self.lock:
                        self.refused_attempts += 1
                    smtp = None
                    time.sleep(0.2)
        if smtp is not None:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                smtp.quit()

    def wait_until_sent(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.sent < count and time.monotonic() < deadline:
            time.sleep(0.01)


def assert_exactly_once(
    deployment: GatewayProcesses, sink: Sink, burst: Burst, database_url: str
) -> None:
    """Every mail of ``burst`` got its 250, and has one case and one acknowledgement."""
    assert burst.accepted == set(burst.ids), "every mail got its 250 in the end"
    sink.wait_for(len(burst.ids), timeout=120)
    # longer than the sweep's stale_after and its interval (1 s), so that a double
    # the sweep would send (a claim it wrongly took for a dead sender's) shows
    acks = sink.settle(quiet=deployment.stale_after + 2.0)
    replied = [a.message["In-Reply-To"].strip("<>").split("@")[0] for a in acks]
    doubles = {m for m in replied if replied.count(m) > 1}
    assert not doubles, f"acknowledged twice: {sorted(doubles)[:5]}"
    assert set(replied) == set(burst.ids)
    database = Database(database_url)
    with database.session() as session:
        cases = session.scalar(select(func.count()).select_from(Case))
        entries = session.execute(
            select(ThreadEntry.message_id, func.count())
            .where(ThreadEntry.direction == "in").group_by(ThreadEntry.message_id)
        ).all()
        unprocessed = session.scalar(
            select(func.count()).select_from(InboundMessage)
            .where(InboundMessage.status == "received")
        )
    database.dispose()
    assert cases == len(burst.ids)
    assert all(n == 1 for _, n in entries)
    assert unprocessed == 0
