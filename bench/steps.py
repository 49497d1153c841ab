"""CPU per mail of the gateway's own Python work, step by step, in one thread.

    python bench/steps.py                       # SQLite in a temporary folder
    python bench/steps.py --database-url postgresql+psycopg://postgres@127.0.0.1/test
    python bench/steps.py --smtp                # the store over SMTP, through the edge

``bench/ingest.py`` measures the whole gateway under load, and its mails/s
swing by a third between two runs of the same code on a shared machine.
This measures what one change to the code changes: the thread CPU time
(``time.thread_time``) that storing a mail and running its processing actor
(case transaction, acknowledgement, sending it to a relay) take, with
nothing else competing for the interpreter. The relay is an aiosmtpd sink in
another thread, whose CPU is not counted; nor is the database server's.

With ``--smtp`` each mail is stored through the gateway's own SMTP edge (its
aiosmtpd server, handler and store, in their own thread, as ``helpdesk
serve`` runs them), sent over one kept loopback connection; that step is
then timed in process CPU, which also counts the sending client.

The gateway's tables in the database it is given are dropped first, and
made again: never point it at a database whose cases matter. It prints
numbers; it never asserts them.
"""

from __future__ import annotations

import argparse
import smtplib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from aiosmtpd.controller import Controller
from dramatiq.brokers.stub import StubBroker

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ingest import drop_gateway_tables, free_port, make_mail  # noqa: E402  (bench/ingest.py)

from gateway.clock import utcnow  # noqa: E402
from gateway.database import upgrade  # noqa: E402
from gateway.inbound import accept  # noqa: E402
from gateway.runtime import Runtime, build_runtime  # noqa: E402
from gateway.service import smtp_handler  # noqa: E402
from gateway.settings import load_settings  # noqa: E402
from gateway.smtp_server import make_controller  # noqa: E402
from workers.actors import declare  # noqa: E402

T = TypeVar("T")


class Sink:
    async def handle_DATA(self, server, session, envelope) -> str:
        return "250 OK"


def timed(step: Callable[..., T], *args: Any, clock: Callable[[], float] = time.thread_time,
          **kwargs: Any) -> tuple[float, T]:
    """The CPU milliseconds ``step`` took (by ``clock``), and what it returned."""
    started = clock()
    result = step(*args, **kwargs)
    return (clock() - started) * 1000, result


class SmtpEdge:
    """The gateway's SMTP edge on loopback, and one client connection kept to it."""

    def __init__(self, runtime: Runtime) -> None:
        self.stored: list[int] = []  # the ids the edge hands on, here only kept
        self.controller = make_controller(
            smtp_handler(runtime, self.stored.append), host="127.0.0.1", port=free_port(),
            max_message_size=runtime.settings.smtp.max_message_size,
            hostname="gateway.example",
        )
        self.controller.start()
        self.client = smtplib.SMTP("127.0.0.1", self.controller.port)
        self.client.ehlo("bench.example")

    def store(self, raw: bytes, sender: str) -> int:
        self.client.sendmail(sender, ["support@example.com"], raw)
        return self.stored.pop()

    def close(self) -> None:
        self.client.quit()
        self.controller.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--number", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--smtp", action="store_true",
                        help="store each mail through the gateway's SMTP edge")
    args = parser.parse_args()

    sink = Controller(Sink(), hostname="127.0.0.1", port=free_port())
    sink.start()
    with tempfile.TemporaryDirectory(prefix="helpdesk-steps-") as folder:
        config = Path(folder) / "gateway.toml"
        config.write_text("")
        environ = {
            "HELPDESK_CONFIG": str(config), "HELPDESK_DATA_DIR": str(Path(folder) / "data"),
            "HELPDESK_POLICY": "lumenvox", "HELPDESK_SUPPORT_ADDRESSES": "support@example.com",
            "HELPDESK_RELAY_HOST": "127.0.0.1", "HELPDESK_RELAY_PORT": str(sink.port),
        }
        if args.database_url:
            environ["HELPDESK_DATABASE_URL"] = args.database_url
        settings = load_settings(None, environ=environ)
        if args.database_url:
            drop_gateway_tables(args.database_url)
        runtime = build_runtime(settings)
        upgrade(runtime.engine)
        broker = StubBroker()
        broker.emit_after("process_boot")
        process = declare(broker, runtime).actors.process_inbound
        edge = SmtpEdge(runtime) if args.smtp else None
        stored: list[float] = []
        processed: list[float] = []
        for number in range(args.warmup + args.number):
            local = f"steps{number}x{time.time_ns()}"
            raw, sender = make_mail(f"{local}@bench.example"), f"{local}@customer.example"
            if edge is not None:
                store, inbound_id = timed(edge.store, raw, sender, clock=time.process_time)
            else:
                store, inbound_id = timed(
                    accept, runtime.database, raw, source="smtp", sender=sender,
                    recipients=["support@example.com"], now=utcnow(),
                )
            work, _ = timed(process.fn, inbound_id)
            if number >= args.warmup:
                stored.append(store)
                processed.append(work)
        if edge is not None:
            edge.close()
        runtime.close()
        broker.close()
    sink.stop()
    backend = runtime.engine.dialect.name
    print(f"{args.number} mails, {backend}, one thread (thread CPU, median / mean):")
    edge_step = "store over SMTP (process CPU)" if args.smtp else "store at the edge"
    for name, values in ((edge_step, stored), ("process and send", processed)):
        print(f"  {name:<30} {statistics.median(values):6.2f} / {statistics.fmean(values):6.2f} ms")
    total = [a + b for a, b in zip(stored, processed, strict=True)]
    print(f"  {'per mail':<30} {statistics.median(total):6.2f} / {statistics.fmean(total):6.2f} ms")


if __name__ == "__main__":
    main()
