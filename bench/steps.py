"""CPU per mail of the gateway's own Python work, step by step, in one thread.

    python bench/steps.py                       # SQLite in a temporary folder
    python bench/steps.py --database-url postgresql+psycopg://postgres@127.0.0.1/test

``bench/ingest.py`` measures the whole gateway under load, and its mails/s
swing by a third between two runs of the same code on a shared machine.
This measures what one change to the code changes: the thread CPU time
(``time.thread_time``) that storing a mail and running its processing actor
(case transaction, acknowledgement, sending it to a relay) take, with
nothing else competing for the interpreter. The relay is an aiosmtpd sink in
another thread, whose CPU is not counted; nor is the database server's.

The gateway's tables in the database it is given are dropped first, and
made again: never point it at a database whose cases matter. It prints
numbers; it never asserts them.
"""

from __future__ import annotations

import argparse
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
from gateway.runtime import build_runtime  # noqa: E402
from gateway.settings import load_settings  # noqa: E402
from workers.actors import declare  # noqa: E402

T = TypeVar("T")


class Sink:
    async def handle_DATA(self, server, session, envelope) -> str:
        return "250 OK"


def timed(step: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[float, T]:
    """The thread CPU milliseconds ``step`` took, and what it returned."""
    started = time.thread_time()
    result = step(*args, **kwargs)
    return (time.thread_time() - started) * 1000, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--number", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--database-url", default="")
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
        stored: list[float] = []
        processed: list[float] = []
        for number in range(args.warmup + args.number):
            local = f"steps{number}x{time.time_ns()}"
            store, inbound_id = timed(
                accept, runtime.database, make_mail(f"{local}@bench.example"), source="smtp",
                sender=f"{local}@customer.example", recipients=["support@example.com"],
                now=utcnow(),
            )
            work, _ = timed(process.fn, inbound_id)
            if number >= args.warmup:
                stored.append(store)
                processed.append(work)
        runtime.close()
        broker.close()
    sink.stop()
    backend = runtime.engine.dialect.name
    print(f"{args.number} mails, {backend}, one thread (thread CPU, median / mean):")
    for name, values in (("store at the edge", stored), ("process and send", processed)):
        print(f"  {name:<18} {statistics.median(values):6.2f} / {statistics.fmean(values):6.2f} ms")
    total = [a + b for a, b in zip(stored, processed, strict=True)]
    print(f"  {'per mail':<18} {statistics.median(total):6.2f} / {statistics.fmean(total):6.2f} ms")


if __name__ == "__main__":
    main()
