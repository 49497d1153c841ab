"""A production-shaped gateway for tests: separate SMTP, worker and sweeper processes
on PostgreSQL and Redis, each one a real OS process that a test may kill."""

from __future__ import annotations

import contextlib
import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path

from gateway.database import make_engine, upgrade

ROOT = Path(__file__).resolve().parents[1]


class Deployment:
    def __init__(self, tmp_path: Path, *, database_url: str, broker_url: str,
                 relay_host: str, relay_port: int, smtp_port: int,
                 worker_processes: int = 1, worker_threads: int = 8) -> None:
        self.tmp_path = tmp_path
        self.smtp_port = smtp_port
        self.config = tmp_path / "gateway.toml"
        self.config.write_text(
            f'data_dir = "{tmp_path / "data"}"\n'
            'policy = "lumenvox"\n'
            f'[database]\nurl = "{database_url}"\n'
            f'[broker]\nurl = "{broker_url}"\n'
            f'[smtp]\nhost = "127.0.0.1"\nport = {smtp_port}\n'
            '[support]\naddresses = ["support@example.com"]\n'
            f'[relay]\nhost = "{relay_host}"\nport = {relay_port}\n'
            '[recovery]\ninterval = 1.0\nstale_after = 3.0\n'
        )
        self.worker_processes = worker_processes
        self.worker_threads = worker_threads
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        engine = make_engine(database_url)
        upgrade(engine)
        engine.dispose()

    def _spawn(self, name: str, *args: str) -> None:
        env = {**os.environ, "HELPDESK_CONFIG": str(self.config), "PYTHONPATH": str(ROOT)}
        log = (self.tmp_path / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            [sys.executable, *args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

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

    def wait_for_smtp(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.smtp_port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"SMTP did not start; see {self.tmp_path / 'smtp.log'}")

    def log(self, name: str) -> str:
        return (self.tmp_path / f"{name}.log").read_text(errors="replace")

    def client(self) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=30)
