"""Ingest benchmark: mails in over SMTP, acknowledgements out to a sink, timed.

    python bench/ingest.py                      # embedded: SQLite, in-process workers
    python bench/ingest.py --mode production    # PostgreSQL + Redis, separate processes
    python bench/ingest.py --mode production --rate 50 -n 1000

It starts the gateway itself (as the README's deployments run it), a relay
sink that receives the acknowledgements, sends N mails over several SMTP
connections, and prints: accepted mails/s (250s per second), end-to-end
mails/s (until every acknowledgement reached the sink), and the p50/p99
latency from the 250 to the acknowledgement's arrival. ``--rate R`` offers a
steady R mails/s instead of as fast as possible.
Before measuring it sends ``--warmup`` mails (default 50) and waits for their
acknowledgements, so that the figures are those of a running gateway.

For scale it also runs a bare aiosmtpd server that only writes each mail to
a file and fsyncs, and prints the gateway's rate as a fraction of that, and
how long the disk takes to sync a small write (p50, p99, max).
It prints numbers; it never asserts them.
"""

from __future__ import annotations

import argparse
import contextlib
import email.policy
import os
import signal
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Collection
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class AckSink:
    """The outbound relay: notes when each acknowledgement arrives, by In-Reply-To."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.waiting: set[str] = set()

    def expect(self, ids: list[str]) -> None:
        """``done`` is set once an acknowledgement of each of ``ids`` has arrived."""
        with self.lock:
            self.waiting = set(ids) - self.arrived.keys()
            self.done.clear()
            if not self.waiting:
                self.done.set()

    async def handle_DATA(self, server, session, envelope) -> str:
        now = time.monotonic()
        raw: bytes = envelope.original_content
        start = raw.find(b"\nIn-Reply-To: <")
        if start >= 0:
            end = raw.find(b">", start)
            key = raw[start + 15 : end].decode("ascii", "replace")
            with self.lock:
                self.arrived.setdefault(key, now)
                self.waiting.discard(key)
                if not self.waiting:
                    self.done.set()
        return "250 OK"


class FileSink:
    """The baseline: store each mail in a file and fsync it, nothing else."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0

    async def handle_DATA(self, server, session, envelope) -> str:
        self.count += 1
        path = self.folder / f"{self.count}.eml"
        with path.open("wb") as handle:
            handle.write(envelope.original_content)
            handle.flush()
            os.fsync(handle.fileno())
        return "250 OK"


def make_mail(message_id: str) -> bytes:
    message = EmailMessage()
    # One customer per mail: a burst from one address would meet the limit on
    # automatic replies.
    local = message_id.split("@")[0]
    message["From"] = f"Bench Customer <{local}@customer.example>"
    message["To"] = "support@example.com"
    message["Subject"] = f"[P2] Recognition slow on node {local[-4:]}"
    message["Message-ID"] = f"<{message_id}>"
    message.set_content("Our recognizer has been slow since this morning.\n" * 20)
    # SMTP lines end in CRLF, as relays send them.
    return message.as_bytes(policy=email.policy.SMTP)


class Sender:
    """Sends mails over ``connections`` SMTP connections; records each 250's time."""

    def __init__(self, port: int, total: int, connections: int, rate: float | None) -> None:
        self.port = port
        self.ids = [f"{uuid.uuid4().hex}@bench.example" for _ in range(total)]
        self.mails = {mid: make_mail(mid) for mid in self.ids}
        self.accepted: dict[str, float] = {}
        self.connections = connections
        self.rate = rate
        self.lock = threading.Lock()
        self.errors = 0

    def run(self) -> tuple[float, float]:
        started = time.monotonic()
        shares = [self.ids[i :: self.connections] for i in range(self.connections)]
        threads = [
            threading.Thread(target=self._send, args=(share, i, started))
            for i, share in enumerate(shares)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return started, time.monotonic()

    def _send(self, ids: list[str], offset: int, started: float) -> None:
        client = smtplib.SMTP("127.0.0.1", self.port, timeout=60)
        for n, message_id in enumerate(ids):
            if self.rate:
                # Mail k of the whole run is due at k / rate; this thread sends every
                # connections-th mail, starting at its offset.
                due = started + (n * self.connections + offset) / self.rate
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
            try:
                client.sendmail("bench@customer.example", ["support@example.com"],
                                self.mails[message_id])
            except (OSError, smtplib.SMTPException):
                with self.lock:
                    self.errors += 1
                client = smtplib.SMTP("127.0.0.1", self.port, timeout=60)
                continue
            with self.lock:
                self.accepted[message_id] = time.monotonic()
        client.quit()


def wait_for_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on port {port}; see the gateway logs")


def start_gateway(args: argparse.Namespace, workdir: Path, smtp_port: int,
                  sink_port: int) -> dict[str, subprocess.Popen[bytes]]:
    """The gateway's processes, by name."""
    config = workdir / "gateway.toml"
    lines = [
        f'data_dir = "{workdir / "data"}"', 'policy = "lumenvox"',
        f"[smtp]\nhost = \"127.0.0.1\"\nport = {smtp_port}",
        '[support]\naddresses = ["support@example.com"]',
        f'[relay]\nhost = "127.0.0.1"\nport = {sink_port}',
    ]
    if args.mode == "production":
        lines += [f'[database]\nurl = "{args.database_url}"',
                  f'[broker]\nurl = "{args.broker_url}"']
    elif args.threads:
        lines += [f"[broker]\nworker_threads = {args.threads}"]
    config.write_text("\n".join(lines) + "\n")
    env = {**os.environ, "HELPDESK_CONFIG": str(config), "PYTHONPATH": str(ROOT)}
    log = (workdir / "gateway.log").open("ab")

    def spawn(*command: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, *command], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)

    if args.mode == "embedded":
        return {"gateway": spawn("-m", "gateway", "serve")}
    if args.reset_database:
        reset_database(args)
    subprocess.run([sys.executable, "-m", "gateway", "db", "upgrade"], cwd=ROOT, env=env,
                   check=True, stdout=subprocess.DEVNULL)
    # As the README runs them: `helpdesk worker`, with its defaults unless told.
    sizing = [*(["--processes", str(args.processes)] if args.processes else []),
              *(["--threads", str(args.threads)] if args.threads else [])]
    return {"workers": spawn("-m", "gateway", "worker", *sizing),
            "smtp": spawn("-m", "gateway", "smtp"), "sweeper": spawn("-m", "gateway", "sweeper")}


def reset_database(args: argparse.Namespace) -> None:
    import redis

    drop_gateway_tables(args.database_url)
    redis.Redis.from_url(args.broker_url).flushdb()


def drop_gateway_tables(database_url: str) -> None:
    from sqlalchemy import text

    from gateway.database import make_engine

    engine = make_engine(database_url)
    with engine.begin() as connection:
        connection.execute(text(
            "DROP TABLE IF EXISTS thread_entries, case_events, outbox, inbound_messages, "
            "cases, alembic_version CASCADE"
        ))
    engine.dispose()


def stop(processes: Collection[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def machine_cpu() -> tuple[float, float] | None:
    """Seconds of CPU the whole machine has spent busy, and stolen by its host, so far.

    Busy CPU per mail, unlike mails per second, hardly moves when the
    machine's host is loaded by others: it is what to compare between two
    versions of the gateway. ``None`` where there is no ``/proc/stat``.
    """
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    ticks = [int(value) for value in fields]
    per_second = os.sysconf("SC_CLK_TCK")
    busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6]  # user nice system irq softirq
    steal = ticks[7] if len(ticks) > 7 else 0
    return busy / per_second, steal / per_second


def process_cpu(roots: dict[int, str]) -> dict[str, float]:
    """Seconds of CPU spent so far by each group of live processes: each of
    ``roots`` with its descendants, PostgreSQL, Redis, and the rest.

    Where the machine's CPU goes per mail, by process, is what says which
    part of the gateway to make cheaper. Empty where there is no ``/proc``.
    """
    parents: dict[int, int] = {}
    spent: dict[int, float] = {}
    names: dict[int, str] = {}
    per_second = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        command, _, rest = stat.partition(" (")[2].rpartition(") ")
        fields = rest.split()
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        spent[pid] = (int(fields[11]) + int(fields[12])) / per_second
        names[pid] = command
    totals: dict[str, float] = {}
    for pid, seconds in spent.items():
        group, ancestor = None, pid
        while ancestor > 1 and group is None:
            group = roots.get(ancestor)
            ancestor = parents.get(ancestor, 0)
        if group is None:
            command = names[pid]
            group = ("postgres" if command.startswith("postgres")
                     else "redis" if command.startswith("redis") else "other")
        totals[group] = totals.get(group, 0.0) + seconds
    return totals


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run_gateway(args: argparse.Namespace) -> float:
    sink = AckSink()
    sink_controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    sink_controller.start()
    smtp_port = free_port()
    with tempfile.TemporaryDirectory(prefix="helpdesk-bench-") as folder:
        workdir = Path(folder)
        processes = start_gateway(args, workdir, smtp_port, sink_controller.port)
        try:
            wait_for_port(smtp_port)
            if args.warmup:
                # Not measured: the first mails meet cold connection pools, statements
                # not yet prepared and templates not yet compiled.
                warmup = Sender(smtp_port, args.warmup, args.connections, None)
                sink.expect(warmup.ids)
                warmup.run()
                sink.done.wait(timeout=args.timeout)
            sender = Sender(smtp_port, args.number, args.connections, args.rate)
            sink.expect(sender.ids)
            roots = {os.getpid(): "bench", **{p.pid: name for name, p in processes.items()}}
            cpu_before, by_process_before = machine_cpu(), process_cpu(roots)
            started, sent = sender.run()
            finished = sink.done.wait(timeout=args.timeout)
            cpu_after, by_process_after = machine_cpu(), process_cpu(roots)
            arrived = {mid: sink.arrived[mid] for mid in sender.ids if mid in sink.arrived}
            ended = max(arrived.values(), default=sent)
        finally:
            stop(processes.values())
            sink_controller.stop()
            if args.keep_logs:
                print((workdir / "gateway.log").read_text(errors="replace")[-5000:])
    accepted = len(sender.accepted)
    latencies = [arrived[mid] - at for mid, at in sender.accepted.items() if mid in arrived]
    mode = f"{args.mode}" + (f", offered {args.rate:g} mails/s" if args.rate else "")
    print(f"gateway ({mode}): {args.number} mails over {args.connections} connections")
    print(f"  accepted:      {accepted / (sent - started):8.1f} mails/s "
          f"({accepted} accepted, {sender.errors} refused)")
    print(f"  end-to-end:    {len(arrived) / (ended - started):8.1f} mails/s "
          f"({len(arrived)} acknowledgements{'' if finished else ', TIMED OUT'})")
    if latencies:
        print(f"  250 -> ack:    p50 {1000 * statistics.median(latencies):7.1f} ms   "
              f"p99 {1000 * percentile(latencies, 0.99):7.1f} ms")
    if cpu_before and cpu_after and arrived:
        busy, steal = (1000 * (cpu_after[i] - cpu_before[i]) for i in (0, 1))
        print(f"  machine CPU:   {busy / len(arrived):8.1f} ms per mail, all processes "
              f"(bench included); {steal / len(arrived):.1f} ms stolen by the host")
        spent = {name: 1000 * (after - by_process_before.get(name, 0.0)) / len(arrived)
                 for name, after in by_process_after.items()}
        shares = ", ".join(f"{name} {ms:.1f}" for name, ms in
                           sorted(spent.items(), key=lambda item: -item[1]) if ms >= 0.05)
        print(f"  by process:    {shares} (ms per mail)")
    return len(arrived) / (ended - started)


def run_baseline(args: argparse.Namespace) -> float:
    with tempfile.TemporaryDirectory(prefix="helpdesk-bench-sink-") as folder:
        handler = FileSink(Path(folder))
        controller = Controller(handler, hostname="127.0.0.1", port=free_port())
        controller.start()
        try:
            sender = Sender(controller.port, args.number, args.connections, None)
            started, sent = sender.run()
        finally:
            controller.stop()
    rate = len(sender.accepted) / (sent - started)
    print(f"bare aiosmtpd + fsync sink: {rate:8.1f} mails/s")
    probe_fsync()
    return rate


def probe_fsync(count: int = 200, every: float = 0.02) -> None:
    """Print how long the disk takes to sync a small write, at 50 a second with the
    machine otherwise idle. Each mail is synced three times (stored, case
    opened, acknowledgement recorded as sent), its case's sync between its 250
    and its acknowledgement, and a slow sync holds up every commit in flight:
    the latency's tail cannot be shorter than the disk's."""
    took: list[float] = []
    with tempfile.TemporaryFile(prefix="helpdesk-bench-fsync-") as handle:
        for _ in range(count):
            started = time.perf_counter()
            handle.write(os.urandom(2048))
            handle.flush()
            os.fsync(handle.fileno())
            took.append(time.perf_counter() - started)
            time.sleep(every)
    print(f"disk, fsync of 2 KB {1 / every:g} times a second: p50 "
          f"{1000 * statistics.median(took):.1f} ms, p99 {1000 * percentile(took, 0.99):.1f} ms, "
          f"max {1000 * max(took):.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--number", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=50,
                        help="mails sent and acknowledged first, not measured")
    parser.add_argument("--rate", type=float, default=None, help="offer R mails/s steadily")
    parser.add_argument("--mode", choices=("embedded", "production"), default="embedded")
    parser.add_argument("--database-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--broker-url", default="redis://127.0.0.1:6379/8")
    parser.add_argument("--reset-database", action=argparse.BooleanOptionalAction,
                        default=True, help="empty the gateway's tables and Redis db first")
    parser.add_argument("--processes", type=int, default=None,
                        help="worker processes (default: as `helpdesk worker`)")
    parser.add_argument("--threads", type=int, default=None,
                        help="worker threads (default: the gateway's own)")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args()
    gateway_rate = run_gateway(args)
    if not args.no_baseline:
        baseline = run_baseline(args)
        if baseline > 0:
            print(f"gateway end-to-end rate = {gateway_rate / baseline:.2f} x the bare fsync sink")


if __name__ == "__main__":
    main()
